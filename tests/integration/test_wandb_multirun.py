"""W&B offline: a 2-job multirun gives 2 runs, each named after its job, grouped by sweep."""

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
        assert set(tables) == {"metrics", "rankings"}
        metrics = json.loads(tables["metrics"].read_text())
        assert metrics["columns"] == ["scorer", "task", "region", "metric", "value", "lists"]
        scorers = {row[0] for row in metrics["data"]}
        assert scorers == {"model", "random", "bm25"}
        rankings = json.loads(tables["rankings"].read_text())
        assert "product" in rankings["columns"] and rankings["data"]
