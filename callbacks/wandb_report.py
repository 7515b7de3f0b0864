"""Weights & Biases reporting: the resolved config, per-task x region tables, sample rankings.

Everything here is a no-op without a :class:`~lightning.pytorch.loggers.WandbLogger` among the
trainer's loggers, and runs on global rank 0 only. ``wandb`` is imported lazily.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only


def wandb_logger(trainer: Any) -> WandbLogger | None:
    """The trainer's W&B logger, or None."""
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


@rank_zero_only
def log_resolved_config(trainer: Any, config: Mapping[str, Any]) -> None:
    """Store the whole resolved config in the run's config (once, from rank 0)."""
    logger = wandb_logger(trainer)
    if logger is not None:
        logger.experiment.config.update({"resolved": dict(config)}, allow_val_change=True)


def metric_rows(
    results: Mapping[str, Mapping[str, float]],
    stage: str,
    task_names: Sequence[str],
    region_names: Sequence[str],
    metrics: Sequence[str],
) -> list[list[Any]]:
    """``[scorer, task, region, metric, value, lists]`` rows of every scorer's results."""
    rows = []
    for scorer, values in results.items():
        for task in task_names:
            for region in [*region_names, "all"]:
                level = task if region == "all" else f"{task}/{region}"
                lists = values.get(f"{stage}/{level}/lists", math.nan)
                for metric in metrics:
                    value = values.get(f"{stage}/{level}/{metric}")
                    if value is not None:
                        rows.append([scorer, task, region, metric, float(value), lists])
    return rows


@rank_zero_only
def log_result_tables(
    trainer: Any,
    results: Mapping[str, Mapping[str, float]],
    stage: str,
    task_names: Sequence[str],
    region_names: Sequence[str],
    metrics: Sequence[str],
    rankings: pl.DataFrame | None = None,
) -> None:
    """Log ``{stage}/metrics_table`` (scorer x task x region x metric) and ``{stage}/rankings``."""
    logger = wandb_logger(trainer)
    if logger is None:
        return
    import wandb

    columns = ["scorer", "task", "region", "metric", "value", "lists"]
    tables = {
        f"{stage}/metrics_table": wandb.Table(
            columns=columns, data=metric_rows(results, stage, task_names, region_names, metrics)
        )
    }
    if rankings is not None and rankings.height:
        tables[f"{stage}/rankings"] = wandb.Table(
            columns=rankings.columns, data=[list(r) for r in rankings.iter_rows()]
        )
    logger.experiment.log(tables)


def finish_wandb() -> None:
    """Close the active W&B run, so that the next job of a multirun starts its own run.

    Lightning's WandbLogger reuses an open run; without this, every job of a sweep would log into
    the first job's run.
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
