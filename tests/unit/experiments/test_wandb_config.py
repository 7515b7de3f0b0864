"""W&B logger settings (experiments/workflows/config.py): WANDB_MODE decides online/offline, a
resumed run continues its W&B run, distill and pretrain configs take the logger group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.workflows.config import WANDB_RUN_FILE, build_loggers, wandb_offline

pytest.importorskip("wandb")


def _wandb_logger(cfg, job_type: str = "train"):
    (logger,) = build_loggers(cfg, job_type)
    return logger


@pytest.mark.parametrize(
    ("env", "value", "offline"),
    [(None, None, True), ("online", None, False), ("offline", None, False), ("online", True, True)],
)
def test_wandb_mode_decides_unless_offline_is_set(monkeypatch, env, value, offline) -> None:
    if env is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env)
    assert wandb_offline(value) is offline


def test_wandb_mode_online_is_not_forced_offline_by_lightning(make_cfg, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    logger = _wandb_logger(make_cfg("logger=wandb"))
    # Lightning's WandbLogger(offline=True) would set WANDB_MODE=dryrun when the run starts.
    assert logger._offline is False
    monkeypatch.delenv("WANDB_MODE")
    assert _wandb_logger(make_cfg("logger=wandb"))._offline is True  # offline by default


def test_a_resumed_run_continues_its_wandb_run(make_cfg, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg("logger=wandb", "ckpt_path=last")
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True)
    (out / WANDB_RUN_FILE).write_text(json.dumps({"id": "abc123"}))
    assert _wandb_logger(cfg)._wandb_init["id"] == "abc123"
    assert _wandb_logger(cfg)._wandb_init["resume"] == "allow"
    # A new run in a directory without a recorded run, or without ckpt_path, starts its own.
    assert _wandb_logger(make_cfg("logger=wandb"))._wandb_init["id"] is None


@pytest.mark.parametrize(("config", "job_type"), [("distill", "distill"), ("pretrain", "pretrain")])
def test_distill_and_pretrain_take_the_wandb_logger(make_cfg, config, job_type) -> None:
    cfg = make_cfg("logger=wandb", "seed=3", config=config, tiny=False)
    logger = _wandb_logger(cfg, job_type)
    init = logger._wandb_init
    assert init["job_type"] == job_type and init["project"] == "shoprank"
    assert init["name"] == "seed=3"  # named by the job's overrides
