"""The monitored metric, checked before training against what the run will log.

``monitor`` picks the best checkpoint (and what a sweep optimises). Lightning only finds out at
the end of the first epoch that it names no logged metric, and then stops with nothing saved.
Here it is checked twice before any training step:

1. :func:`check_monitor_form`, before the data is read: the stage (``train``/``val``), the task
   and the metric of a ``val/...`` name against the config; a typo stops in seconds.
2. :func:`check_monitor`, once the data is split: the exact name against every name the fit will
   log (with the data's regions), and against the validation lists: a metric of a task (or
   region) without a single validation list with a positive label would never have a value.

A task whose validation lists have no positive label is left out of the mean over tasks
(``val/ndcg@10``), as every such list is left out of a task's mean; :func:`check_monitor` logs a
warning naming it.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from data_modules.errors import ConfigError
from ranking.metrics.metric_set import metric_names

log = logging.getLogger(__name__)

FIT_STAGES = ("train", "val")
_REGION = "<region>"


def _suggest(monitor: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(monitor, list(names), n=4, cutoff=0.6)
    if close:
        return "; close valid names: " + ", ".join(close)
    examples = [n for n in names if n.count("/") == 1][:4]
    return "; valid names look like " + ", ".join(examples)


def check_monitor_form(monitor: str, task_names: Sequence[str], metrics: Sequence[str]) -> None:
    """Check ``monitor``'s stage, task and metric against the config, before any data is read.

    Region parts (``val/<task>/<region>/<metric>``) and ``train/`` names are checked by
    :func:`check_monitor` once the data and the model exist.

    Raises:
        ConfigError: Naming ``monitor`` and the closest valid names.
    """
    stage = monitor.split("/", 1)[0]
    if stage == "test":
        raise ConfigError(
            f"monitor: '{monitor}' is a test metric, computed only after training; monitor "
            f"a validation metric such as val/{monitor.split('/', 1)[-1]}"
        )
    if stage not in FIT_STAGES or "/" not in monitor:
        raise ConfigError(
            f"monitor: '{monitor}' is not a metric name; names are "
            "{stage}/[{task}/[{region}/]]{metric}, stage train or val, e.g. val/ndcg@10"
        )
    if stage != "val":
        return
    parts = monitor.split("/")
    template = f"val/{parts[1]}/{_REGION}/{parts[3]}" if len(parts) == 4 else monitor
    names = ["val/loss", *metric_names("val", task_names, [_REGION], metrics)]
    if template not in names:
        region = parts[2] if len(parts) == 4 else "<region>"
        valid = [n.replace(_REGION, region) for n in names]
        raise ConfigError(
            f"monitor: 'val' metrics of this config do not include '{monitor}' (tasks "
            f"{list(task_names)}, metrics {list(metrics)}){_suggest(monitor, valid)}"
        )


def positive_lists(datamodule: object, split: str) -> dict[tuple[str, str], int]:
    """Lists of ``split`` with at least one positive label, per ``(label column, region)``.

    ``region`` ``"all"`` counts every region.
    """
    lists = datamodule.lists[split]
    labels = datamodule.labels
    counts: dict[tuple[str, str], int] = {}
    has_positive = (
        np.stack([labels[rows].max(axis=0) > 0 for rows in lists.rows])
        if len(lists)
        else np.zeros((0, len(datamodule.label_columns)), dtype=bool)
    )
    regions = np.asarray(lists.regions)
    for k, column in enumerate(datamodule.label_columns):
        counts[(column, "all")] = int(has_positive[:, k].sum())
        for r, region in enumerate(datamodule.region_names):
            counts[(column, region)] = int(has_positive[regions == r, k].sum())
    return counts


def check_monitor(
    monitor: str,
    fit_names: Sequence[str],
    datamodule: object,
    tasks: Mapping[str, str],
) -> None:
    """Check ``monitor`` against the names the fit logs and the validation lists.

    Args:
        monitor: The ``monitor`` key.
        fit_names: Every name the fit logs (the module's ``fit_metric_names``).
        datamodule: The set-up data (``lists``, ``labels``, ``label_columns``, ``region_names``).
        tasks: ``{task name: label column}``.

    Raises:
        ConfigError: The name is not logged, the data has no validation split for a ``val/``
            monitor, or the monitored task (and region) has no validation list with a positive
            label, so the metric would never have a value.
    """
    if monitor not in fit_names:
        raise ConfigError(
            f"monitor: '{monitor}' is not logged by this run{_suggest(monitor, fit_names)}"
        )
    if not monitor.startswith("val/"):
        return
    if "val" not in datamodule.lists:
        raise ConfigError(
            f"monitor: '{monitor}' needs validation lists, and data.splits "
            f"({datamodule.splits}) left none (no val fraction, or too few queries for it); "
            "raise data.splits.val (e.g. 0.15) or monitor train/loss"
        )
    if monitor == "val/loss":
        return
    counts = positive_lists(datamodule, "val")
    total = len(datamodule.lists["val"])
    parts = monitor.split("/")
    if len(parts) == 2:  # the mean over tasks
        if parts[1] == "lists":
            return
        empty = [task for task, column in tasks.items() if counts[(column, "all")] == 0]
        if len(empty) == len(tasks):
            raise ConfigError(
                f"monitor: '{monitor}' has no value: none of the {total} validation lists has a "
                f"positive label for any task {list(tasks)}; check the labels or data.splits"
            )
        for task in empty:
            log.warning(
                "val split: no list has a positive '%s' label (0 of %d lists); task '%s' is left "
                "out of %s, the mean over tasks",
                tasks[task],
                total,
                task,
                monitor,
            )
        return
    if parts[-1] == "lists":
        return
    task = parts[1]
    region = parts[2] if len(parts) == 4 else "all"
    if counts[(tasks[task], region)] == 0:
        where = "" if region == "all" else f" of region '{region}'"
        raise ConfigError(
            f"monitor: '{monitor}' has no value: no validation list{where} has a positive "
            f"'{tasks[task]}' label (0 of {total} lists); monitor the mean over tasks "
            f"(val/{parts[-1]}) or another task"
        )
