"""experiments.reproduce end to end on tiny data: every kind of job, the reports, and reuse."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from experiments.reproduce import CONFIG, main

pytestmark = pytest.mark.slow

TINY_DATA = [
    "data=synthetic",
    "data.generator.num_products=200",
    "data.generator.num_queries=60",
    "data.generator.list_size=10",
    "data.batch_size=4",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
]


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> tuple[Path, Path]:
    """conf/reproduce.yaml cut to two losses, distillation and pretraining on tiny data."""
    root = tmp_path_factory.mktemp("reproduce")
    cfg = OmegaConf.load(CONFIG)
    cfg.work_dir, cfg.results_dir = str(root / "runs"), str(root / "results")
    cfg.datasets = {"synthetic": {"title": "tiny synthetic", "overrides": TINY_DATA}}
    cfg.default_datasets = ["synthetic"]
    cfg.studies.losses.grid = {"loss": ["approx_ndcg", "listnet"]}
    cfg.studies.losses.claims = cfg.studies.losses.claims[:1]
    cfg.studies.distillation.latency = {"queries": 4, "candidates": 20, "onnx": False}
    cfg.studies.pretraining.pretrain_overrides = [
        "pretrain.epochs=1",
        "pretrain.max_steps=3",
        "trainer.enable_progress_bar=false",
    ]
    path = root / "reproduce.yaml"
    OmegaConf.save(cfg, path)
    return path, root


def test_reproduce_runs_every_kind_of_job_then_reuses_them(tiny_config, capsys) -> None:
    path, root = tiny_config
    studies = "losses,distillation,pretraining"
    assert main(["--config", str(path), "--studies", studies, "--quick"]) == 0
    first = capsys.readouterr().out
    # base, listnet, pretraining, the adapted encoder, a student and its latency.
    assert "6 jobs" in first and first.count(" done ") == 6
    assert "reproduce: wall time " in first and first.rstrip().endswith("jobs 6 done")
    results = root / "results"
    losses = (results / "losses.md").read_text()
    assert "| loss=approx_ndcg vs loss=listnet | relevance |" in losses and "+13.9%" in losses
    distill = (results / "distillation.md").read_text()
    assert "| student vs teacher |" in distill and "| 0 | " in distill  # the latency row
    pretraining = (results / "pretraining.md").read_text()
    assert "| domain-adapted vs generic |" in pretraining
    for png in ("losses_synthetic.png", "distillation_synthetic_claims.png"):
        assert (results / png).read_bytes()[:4] == b"\x89PNG"
    # Nothing changed: every run is reused, nothing is trained again.
    assert main(["--config", str(path), "--studies", studies, "--quick"]) == 0
    second = capsys.readouterr().out
    assert second.count(" reused ") == 6 and " done " not in second
    assert second.rstrip().endswith("jobs 6 reused")
