"""The real-data recipes (experiment=homedepot|crowdflower|esci): what they choose, and that each
runs end to end (on the ESCI layout sample, and on the real files when present)."""

from __future__ import annotations

import pytest

from data_modules.adapters.esci_sample import write_esci_sample
from experiments.workflows.train import train
from tests.conftest import SHARED

RECIPES = ("homedepot", "crowdflower", "esci")


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_choices(make_cfg, recipe) -> None:
    cfg = make_cfg(f"experiment={recipe}", tiny=False)
    assert cfg.data.source._target_.lower().endswith(f"{recipe}source")
    assert cfg.encoder.name == "minilm_l6" and cfg.encoder.pooling == "mean"
    assert cfg.encoder.freeze_word_embeddings is True
    assert list(cfg.tasks.order) == ["relevance"] and cfg.tasks.catalog.relevance.loss is None
    assert cfg.loss.name == "ranknet"
    assert list(cfg.model.prior.features) == ["minilm_cosine"]
    assert list(cfg.baselines) == ["random", "bm25", "minilm_zero_shot", "lambdamart"]
    assert cfg.data.engagement is None
    assert cfg.trainer.precision == "auto"


QUICK = [
    "trainer.max_epochs=1",
    "trainer.max_steps=2",
    "trainer.val_check_interval=1.0",
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
    "logger=none",
]


@pytest.mark.slow
def test_esci_recipe_runs_on_the_published_layout(make_cfg, tmp_path) -> None:
    folder = write_esci_sample(tmp_path / "esci")
    cfg = make_cfg(
        "experiment=esci",
        f"data.source.path={folder}",
        "data.source.max_queries=null",
        "data.splits={train: 0.6, val: 0.4, test: 0.0}",  # 6 train queries a locale
        *QUICK,
        tiny=False,
    )
    metrics, objects = train(cfg)
    assert objects["datamodule"].region_names == ["us"]
    assert set(metrics["baselines"]) == {"random", "bm25", "minilm_zero_shot", "lambdamart"}
    assert "test/relevance/us/ndcg@10" in metrics["test"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["homedepot", "crowdflower"])
def test_real_recipe_runs_on_a_sample_of_the_real_file(make_cfg, recipe) -> None:
    path = SHARED / "data" / recipe / "train.csv"
    if not path.is_file():
        pytest.skip(f"real data not on this machine: {path}")
    cfg = make_cfg(
        f"experiment={recipe}",
        f"paths.data_dir={SHARED / 'data'}",
        "data.source.max_queries=60",
        *QUICK,
        tiny=False,
    )
    metrics, _ = train(cfg)
    for name in ("model", "random", "bm25", "minilm_zero_shot", "lambdamart"):
        values = metrics["test"] if name == "model" else metrics["baselines"][name]
        assert 0.0 <= values[f"test/relevance/{recipe}/ndcg@10"] <= 1.0
