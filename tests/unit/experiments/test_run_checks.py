"""Checks that run before any work: config value types, tasks, monitor, run directory, length."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from data_modules.errors import ConfigError
from experiments.workflows.config import check_config_values, task_list
from experiments.workflows.run_dir import guard_output_dir
from ranking.metrics.monitor import check_monitor, check_monitor_form
from ranking.nn.encoders import check_max_length


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=abc", "seed must be an integer, got 'abc'"),
        ("data.batch_size=1.5", "data.batch_size must be an integer, got 1.5"),
        ("trainer.max_steps=true", "trainer.max_steps must be an integer, got True"),
        ("trainer.limit_train_batches=all", "trainer.limit_train_batches must be a number"),
        ("test_after_fit=1", "test_after_fit must be true or false, got 1"),
    ],
)
def test_config_values_of_the_wrong_type(make_cfg, override, message) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        check_config_values(make_cfg(override))


def test_config_values_that_fit(make_cfg) -> None:
    check_config_values(make_cfg("trainer.max_epochs=null", "trainer.limit_val_batches=0.5"))
    check_config_values(make_cfg("ckpt_path=x", config="eval"))  # data.max_length filled later


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ("tasks.order=[click,click]", r"repeats task\(s\) \['click'\]"),
        ("tasks.order=click", r"must be a list of tasks, e.g. \[click\]"),
        ("tasks.order=[clicks]", r"unknown task\(s\) \['clicks'\]"),
    ],
)
def test_task_order_errors(make_cfg, order, message) -> None:
    with pytest.raises(ConfigError, match=message):
        task_list(make_cfg(order))


@pytest.mark.parametrize(
    ("monitor", "message"),
    [
        ("val/ndcg@11", "close valid names: val/ndcg@10"),
        ("val/purchse/ndcg@10", "close valid names: val/purchase/ndcg@10"),
        ("val/purchase/eu/ndcg@100", "close valid names: val/purchase/eu/ndcg@10"),
        ("test/ndcg@10", "monitor a validation metric such as val/ndcg@10"),
        ("ndcg@10", "is not a metric name"),
    ],
)
def test_monitor_form_is_checked_against_the_config(monitor, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        check_monitor_form(monitor, ["click", "purchase"], ["ndcg@10", "map"])


def test_monitor_forms_that_fit() -> None:
    for monitor in ("val/ndcg@10", "val/purchase/ndcg@10", "val/purchase/eu/map", "train/loss"):
        check_monitor_form(monitor, ["click", "purchase"], ["ndcg@10", "map"])


class _Lists:
    """Four validation lists of two items: two in region 'us' (id 0), two in 'eu' (id 1)."""

    def __init__(self) -> None:
        self.rows = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5]), np.array([6, 7])]
        self.regions = np.array([0, 0, 1, 1])

    def __len__(self) -> int:
        return len(self.rows)


def _data(purchase_in_eu: bool) -> SimpleNamespace:
    """Every list has a click; only the 'us' lists (and one 'eu' list if asked) a purchase."""
    labels = np.zeros((8, 2), dtype=np.float32)
    labels[[0, 2, 4, 6], 0] = 1  # click
    labels[[0, 2], 1] = 1  # purchase, us lists
    if purchase_in_eu:
        labels[4, 1] = 1
    return SimpleNamespace(
        lists={"val": _Lists()},
        labels=labels,
        label_columns=["click", "purchase"],
        region_names=["us", "eu"],
        splits={"train": 0.7, "val": 0.3},
    )


NAMES = ["train/loss", "val/loss", "val/ndcg@10", "val/purchase/ndcg@10", "val/purchase/eu/ndcg@10"]
TASKS = {"click": "click", "purchase": "purchase"}


def test_a_monitored_region_without_positives_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"no validation list of region 'eu' has a positive"):
        check_monitor("val/purchase/eu/ndcg@10", NAMES, _data(False), TASKS)
    check_monitor("val/purchase/eu/ndcg@10", NAMES, _data(True), TASKS)
    check_monitor("val/purchase/ndcg@10", NAMES, _data(False), TASKS)


def test_the_mean_warns_for_a_task_without_positives(caplog) -> None:
    data = _data(False)
    data.labels[:, 1] = 0
    with caplog.at_level(logging.WARNING):
        check_monitor("val/ndcg@10", NAMES, data, TASKS)
    assert "task 'purchase' is left out of val/ndcg@10" in caplog.text
    data.labels[:, 0] = 0
    with pytest.raises(ConfigError, match="none of the 4 validation lists has a positive"):
        check_monitor("val/ndcg@10", NAMES, data, TASKS)
    with pytest.raises(ConfigError, match="is not logged by this run; close valid names"):
        check_monitor("val/ndcg@1", NAMES, data, TASKS)


def test_a_val_monitor_needs_a_val_split() -> None:
    data = _data(True)
    data.lists = {}
    with pytest.raises(ConfigError, match="needs validation lists"):
        check_monitor("val/ndcg@10", NAMES, data, TASKS)


def test_run_dir_guard(tmp_path, monkeypatch) -> None:
    guard_output_dir(tmp_path / "new")  # absent: fine
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    guard_output_dir(tmp_path / "run")  # an empty checkpoints folder is no run
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"run \(checkpoints/\) and a run is never overwritten"):
        guard_output_dir(tmp_path / "run")
    guard_output_dir(tmp_path / "run", resume=True)
    monkeypatch.setenv("LOCAL_RANK", "1")  # DDP rank 1 follows rank 0 into its directory
    guard_output_dir(tmp_path / "run")


def test_max_length_within_the_encoders_positions() -> None:
    spec = {"name": "tiny", "source": "random", "architecture": {"max_position_embeddings": 128}}
    assert check_max_length(128, spec, "data.max_length") == 128
    with pytest.raises(ConfigError, match=r"^data.max_length=129 exceeds the 128 positions"):
        check_max_length(129, spec, "data.max_length")
    minilm = {"name": "minilm_l6", "source": "package"}
    with pytest.raises(ConfigError, match="exceeds the 512 positions of encoder 'minilm_l6'"):
        check_max_length(1024, minilm, "data.max_length")
