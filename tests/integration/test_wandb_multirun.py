"""W&B offline: a 2-job multirun gives 2 runs, each named after its job, grouped by sweep, with
its results; a resumed run continues its W&B run; distill and pretrain log like train."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY


@pytest.mark.slow
def test_two_job_multirun_logs_two_offline_runs_with_tables(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    tiny = [o for group in ("data", "encoder", "trainer") for o in TINY[group]]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "--multirun",
            f"hydra.sweep.dir={sweep}",
            f"paths.root_dir={tmp_path}",
            "logger=wandb",
            "callbacks.progress_bar=null",
            "tower=shared_bottom,seq",
            *tiny,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(sweep.glob("*/wandb/offline-run-*"))
    assert [r.parents[1].name for r in runs] == ["0", "1"]  # one run per job, in its own dir
    for run, tower in zip(runs, ("shared_bottom", "seq"), strict=True):
        debug = (run / "logs" / "debug.log").read_text()
        assert f"'group': 'train/{sweep.name}'" in debug  # the sweep groups its jobs
        assert f"'name': 'tower={tower}," in debug  # the job's overrides name it
        assert "'job_type': 'train'" in debug
        tables = {p.name.split("_")[0]: p for p in (run / "files/media/table/test").glob("*.json")}
        assert set(tables) == {"metrics", "rankings", "per"}  # per_query too
        metrics = json.loads(tables["metrics"].read_text())
        assert metrics["columns"] == ["scorer", "task", "region", "metric", "value", "lists"]
        scorers = {row[0] for row in metrics["data"]}
        assert scorers == {"model", "random", "bm25"}
        rankings = json.loads(tables["rankings"].read_text())
        assert "product" in rankings["columns"] and rankings["data"]
        # The per-query values, the best monitored value and the result files are in the run.
        per_query = json.loads(
            next((run / "files/media/table/test").glob("per_query_*.table.json")).read_text()
        )
        assert per_query["columns"] == ["scorer", "query_id", "region", "task", "metric", "value"]
        record = _records(run)
        assert b"best/val/ndcg@10" in record  # run.summary
        assert f"results-{run.name.rsplit('-', 1)[1]}".encode() in record  # the artifact


def _records(run: Path) -> bytes:
    """The raw records of an offline run (summary and artifacts are only stored there)."""
    return next(run.glob("run-*.wandb")).read_bytes()


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_resume_continues_the_wandb_run_and_distill_and_pretrain_log_like_train(tmp_path) -> None:
    tiny = [o for group in ("data", "encoder", "trainer") for o in TINY[group]]
    common = [*tiny, "logger=wandb", "callbacks.progress_bar=null", f"paths.root_dir={tmp_path}"]
    run_dir = tmp_path / "run"
    _cli("experiments.train", *common, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    first = json.loads((run_dir / "wandb_run.json").read_text())["id"]
    _cli(
        "experiments.train",
        *common,
        f"hydra.run.dir={run_dir}",
        "ckpt_path=last",
        "trainer.max_epochs=2",
        cwd=tmp_path,
    )
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    # Two attempts, one W&B run: the resumed attempt logs under the first one's id.
    assert len(runs) == 2 and {r.name.rsplit("-", 1)[1] for r in runs} == {first}

    teacher = run_dir / "checkpoints" / "last.ckpt"
    distill_dir = tmp_path / "distill"
    _cli(
        "experiments.distill",
        *common,
        f"teacher_ckpt={teacher}",
        "student.bi_encoder.dim=8",
        "teacher_scores.progress=false",
        f"hydra.run.dir={distill_dir}",
        "seed=5",
        cwd=tmp_path,
    )
    (run,) = (distill_dir / "wandb").glob("offline-run-*")
    debug = (run / "logs" / "debug.log").read_text()
    assert "'job_type': 'distill'" in debug and "seed=5'" in debug
    assert list((run / "files/media/table/test").glob("metrics_table_*.table.json"))
    assert b"best/val/ndcg@10" in _records(run)

    pretrain_dir = tmp_path / "pretrain"
    _cli(
        "experiments.pretrain",
        *TINY["encoder"],
        *TINY["data"][:3],
        "logger=wandb",
        "pretrain.epochs=1",
        "pretrain.max_steps=2",
        "trainer.enable_progress_bar=false",
        f"paths.root_dir={tmp_path}",
        f"hydra.run.dir={pretrain_dir}",
        cwd=tmp_path,
    )
    (run,) = (pretrain_dir / "wandb").glob("offline-run-*")
    assert "'job_type': 'pretrain'" in (run / "logs" / "debug.log").read_text()
    assert list((run / "files/media/images").glob("mlm_loss_*.png"))
    assert b"final/val/mlm_loss" in _records(run)
