"""Weights & Biases reporting: the resolved config, per-task x region tables, sample rankings,
the per-query values, the best monitored value, and the run id a resumed run continues.

Everything here is a no-op without a :class:`~lightning.pytorch.loggers.WandbLogger` among the
trainer's loggers, and runs on global rank 0 only. ``wandb`` is imported lazily.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from experiments.workflows.config import WANDB_RUN_FILE

log = logging.getLogger(__name__)
# Files of a run directory stored with its W&B run (an artifact "results-<run id>").
RESULT_FILES = (
    "metrics.json",
    "per_query.parquet",
    "sample_rankings.csv",
    "config.yaml",
    "pretrain_metrics.json",
)
RESULT_PATTERNS = ("run.*.trec", "qrels.*.txt", "qrels.*.levels.tsv", "qids.tsv", "docids.tsv")


def wandb_logger(trainer: Any) -> WandbLogger | None:
    """The trainer's W&B logger, or None."""
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


@rank_zero_only
def log_resolved_config(trainer: Any, config: Mapping[str, Any]) -> None:
    """Store the whole resolved config in the run's config (once, from rank 0)."""
    logger = wandb_logger(trainer)
    if logger is not None:
        logger.experiment.config.update({"resolved": dict(config)}, allow_val_change=True)


def _live_run(logger: WandbLogger | None) -> Any:
    """The logger's W&B run, or None when there is none or W&B is disabled."""
    if logger is None:
        return None
    run = logger.experiment
    return None if getattr(run, "disabled", False) or not getattr(run, "id", None) else run


@rank_zero_only
def record_run_id(trainer: Any, output_dir: str | Path) -> Path | None:
    """Write ``<output_dir>/wandb_run.json`` (id, project, name, group): a resumed run reads it
    (:func:`experiments.workflows.config.resumed_wandb_id`) and logs into the same W&B run."""
    run = _live_run(wandb_logger(trainer))
    if run is None:
        return None
    path = Path(output_dir) / WANDB_RUN_FILE
    record = {"id": run.id, "project": run.project, "name": run.name, "group": run.group}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


@rank_zero_only
def log_run_results(
    trainer: Any,
    output_dir: str | Path,
    summary: Mapping[str, Any] | None = None,
    per_query: pl.DataFrame | None = None,
    images: Mapping[str, str | Path] | None = None,
) -> None:
    """Put a finished run's results into its W&B run.

    * ``summary`` (e.g. ``best/val/ndcg@10``) into the run summary;
    * ``per_query`` as the table ``test/per_query`` (up to ``wandb.Table.MAX_ROWS`` rows; the
      whole file is always in the artifact);
    * ``images`` (name -> PNG) as images;
    * the run directory's result files (:data:`RESULT_FILES`, TREC files) as the artifact
      ``results-<run id>`` (type ``results``).
    """
    run = _live_run(wandb_logger(trainer))
    if run is None:
        return
    import wandb

    for key, value in (summary or {}).items():
        run.summary[key] = value
    payload: dict[str, Any] = {}
    if per_query is not None and per_query.height:
        if per_query.height <= wandb.Table.MAX_ROWS:
            payload["test/per_query"] = wandb.Table(
                columns=per_query.columns, data=[list(r) for r in per_query.iter_rows()]
            )
        else:
            log.info(
                "W&B: per_query has %d rows (> %d): stored in the artifact only",
                per_query.height,
                wandb.Table.MAX_ROWS,
            )
    for name, path in (images or {}).items():
        if Path(path).is_file():
            payload[name] = wandb.Image(str(path))
    if payload:
        run.log(payload)
    directory = Path(output_dir)
    files = [directory / name for name in RESULT_FILES if (directory / name).is_file()]
    files += [p for pattern in RESULT_PATTERNS for p in sorted(directory.glob(pattern))]
    if files:
        artifact = wandb.Artifact(f"results-{run.id}", type="results")
        for path in files:
            artifact.add_file(str(path), name=path.name)
        run.log_artifact(artifact)


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


def comparison_group(root: str | Path) -> str:
    """The W&B group of the runs under a sweep directory: ``<task_name>/<sweep dir name>``.

    The same name :func:`experiments.workflows.config.run_identity` gives the jobs of a multirun, so
    the comparison lands beside the runs it compares.
    """
    import yaml

    root = Path(root)
    task = "train"
    for config in sorted(root.glob("*/config.yaml"))[:1]:
        task = str((yaml.safe_load(config.read_text()) or {}).get("task_name", task))
    return f"{task}/{root.name}"


def log_comparison(
    paths: Mapping[str, Path], root: str | Path, metric: str, project: str = "shoprank"
) -> str | None:
    """Log ``experiments.compare``'s plots and table as a W&B run (job type ``compare``) in the
    sweep's group. Offline unless ``$WANDB_MODE`` says otherwise.

    Returns:
        The W&B run id (``None`` when W&B is disabled).
    """
    import os

    import wandb

    finish_wandb()
    run = wandb.init(
        project=project,
        group=comparison_group(root),
        job_type="compare",
        name=f"compare {metric}",
        dir=str(Path(paths["markdown"]).parent),
        mode=None if "WANDB_MODE" in os.environ else "offline",
    )
    try:
        if getattr(run, "disabled", False):
            return None
        table = pl.read_csv(paths["csv"])
        payload: dict[str, Any] = {
            f"compare/{metric}": wandb.Table(
                columns=table.columns, data=[list(r) for r in table.iter_rows()]
            )
        }
        for path in paths.values():
            if str(path).endswith(".png"):
                payload[f"compare/{Path(path).stem}"] = wandb.Image(str(path))
        run.log(payload)
        return run.id
    finally:
        run.finish()


def finish_wandb() -> None:
    """Close the active W&B run, so that the next job of a multirun starts its own run.

    Lightning's WandbLogger reuses an open run; without this, every job of a sweep would log into
    the first job's run.
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
