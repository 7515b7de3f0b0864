"""Human-readable result tables: per task and region, the model beside its baselines."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table


def region_table(
    results: Mapping[str, Mapping[str, float]],
    stage: str,
    task_names: Sequence[str],
    region_names: Sequence[str],
    metric: str,
) -> Table:
    """Rows: task x (region..., all); columns: one per scorer (model, random, ...)."""
    table = Table(title=f"{stage} {metric} per task and region")
    table.add_column("task")
    table.add_column("region")
    for scorer in results:
        table.add_column(scorer, justify="right")
    table.add_column("queries", justify="right")
    first = next(iter(results.values()))
    for task in task_names:
        for region in [*region_names, "all"]:
            level = f"{task}/{region}" if region != "all" else task
            cells = []
            for values in results.values():
                value = values.get(f"{stage}/{level}/{metric}", math.nan)
                cells.append("-" if math.isnan(value) else f"{value:.4f}")
            lists = first.get(f"{stage}/{level}/lists", math.nan)
            table.add_row(task, region, *cells, "-" if math.isnan(lists) else str(int(lists)))
    return table


def print_tables(
    results: Mapping[str, Mapping[str, float]],
    stage: str,
    task_names: Sequence[str],
    region_names: Sequence[str],
    metrics: Sequence[str],
) -> None:
    console = Console(width=120)
    for metric in metrics:
        console.print(region_table(results, stage, task_names, region_names, metric))


def write_json(path: Path, payload: Mapping) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
