"""The acceptance claims of the default experiment (slow: minutes on 2 CPU cores)."""

from __future__ import annotations

import pytest

from experiments.workflows.train import train


@pytest.mark.slow
def test_default_experiment_beats_random_on_every_task_and_region(make_cfg) -> None:
    cfg = make_cfg("callbacks.progress_bar=null", "logger=none", tiny=False)
    metrics, objects = train(cfg)
    regions = objects["datamodule"].region_names
    assert len(regions) >= 3
    for task in objects["module"].task_names:
        for region in regions:
            key = f"test/{task}/{region}/ndcg@10"
            assert metrics["test"][key] > metrics["baselines"]["random"][key], key


@pytest.mark.slow
def test_minilm_trains_offline_for_a_few_steps(make_cfg, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # `python -m experiments.train encoder=minilm_l6 trainer.max_steps=5` on the default data,
    # with evaluation cut to two batches to keep the test short.
    cfg = make_cfg(
        "encoder=minilm_l6",
        "trainer.max_steps=5",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "logger=none",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
        tiny=False,
    )
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 5
    assert objects["module"].model.encoder.config.hidden_size == 384
    assert "test/purchase/ndcg@10" in metrics["test"]
