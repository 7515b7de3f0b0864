"""Per-query metric values: what bootstrap intervals and paired tests between runs are built on.

A run's aggregate metrics (``metrics.json``) are means over lists; ``per_query.parquet`` keeps the
values behind those means, one row per (scorer, query, task, metric), so that a comparison across
runs (:mod:`ranking.analysis.compare`) can resample queries and pair runs on the same queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import polars as pl
import torch

from ranking.metrics.metric_set import RankingMetricSet

#: A scorer: ``batch -> [B, L, K]`` scores (the model, a baseline); the one definition.
ScoreFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]

COLUMNS = ("scorer", "query_id", "region", "task", "metric", "value")


def per_query_metrics(
    batches: Iterable[dict[str, torch.Tensor]],
    scorers: dict[str, tuple[ScoreFn, int]],
    task_names: Sequence[str],
    region_names: Sequence[str],
    metrics: Sequence[str],
    query_ids: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Metric value of every list for every scorer, in long format.

    Lists without a positive label for a task are left out of that task (as in the aggregate
    metrics), so the mean of ``value`` per (scorer, task, metric) equals the aggregate metric.

    Args:
        batches: Listwise batches (with ``list_index``), e.g. a test loader.
        scorers: ``{name: (score_fn, draws)}``; ``score_fn(batch) -> [B, L, K]``. With
            ``draws > 1`` the value is the mean over that many scorings (a random ranker).
        task_names: Task names in label order.
        region_names: Region names indexed by ``batch["region"]``.
        metrics: Metric specs, e.g. ``["ndcg@10"]``.
        query_ids: ``query_id`` of each list index of the split (default: the list index).

    Returns:
        Columns ``scorer, query_id, region, task, metric, value`` (one row per list and metric).
    """
    metric_set = RankingMetricSet(task_names, region_names, metrics)
    parts: dict[str, list[torch.Tensor | list[str]]] = {c: [] for c in COLUMNS}
    seen = 0
    for batch in batches:
        size = batch["mask"].shape[0]
        # Batches without ``list_index`` (hand-made ones) number their lists in order.
        index = batch.get("list_index")
        list_ids = index.tolist() if index is not None else list(range(seen, seen + size))
        seen += size
        regions = batch["region"].tolist()
        for scorer, (score, draws) in scorers.items():
            sums: dict[tuple[str, str], torch.Tensor] = {}
            kept_of: dict[tuple[str, str], torch.Tensor] = {}
            for _ in range(draws):
                scores = score(batch)
                for task, spec, kept, values in metric_set.per_list(
                    scores, batch["labels"], batch["mask"]
                ):
                    key = (task, spec)
                    sums[key] = sums.get(key, 0) + values.double()
                    kept_of[key] = kept
            for (task, spec), total in sums.items():
                rows = kept_of[(task, spec)].nonzero().squeeze(-1).tolist()
                parts["scorer"].append([scorer] * len(rows))
                parts["query_id"].append(
                    [
                        str(list_ids[r]) if query_ids is None else query_ids[list_ids[r]]
                        for r in rows
                    ]
                )
                parts["region"].append([region_names[regions[r]] for r in rows])
                parts["task"].append([task] * len(rows))
                parts["metric"].append([spec] * len(rows))
                parts["value"].append((total / draws).tolist())
    return pl.DataFrame(
        {c: [v for chunk in parts[c] for v in chunk] for c in COLUMNS},
        schema={**{c: pl.Utf8 for c in COLUMNS[:-1]}, "value": pl.Float64},
    )


def summarize(
    table: pl.DataFrame,
    stage: str,
    task_names: Sequence[str],
    region_names: Sequence[str],
    metrics: Sequence[str],
) -> dict[str, float]:
    """Aggregate one scorer's per-query rows into the names :class:`RankingMetricSet` logs.

    ``{stage}/{task}/{metric}`` (mean over lists), ``{stage}/{task}/{region}/{metric}``,
    ``{stage}/{metric}`` (mean over the tasks that have lists) and the list counts
    ``{stage}/{task}/[{region}/]lists``.
    """
    out: dict[str, float] = {}
    for spec in metrics:
        rows = table.filter(pl.col("metric") == spec)
        per_task = []
        for task in task_names:
            task_rows = rows.filter(pl.col("task") == task)
            if task_rows.height == 0:
                continue
            out[f"{stage}/{task}/{spec}"] = float(task_rows.get_column("value").mean())
            per_task.append(out[f"{stage}/{task}/{spec}"])
            for region, values in task_rows.group_by("region").agg(pl.col("value").mean()).rows():
                out[f"{stage}/{task}/{region}/{spec}"] = float(values)
        if per_task:  # as RankingMetricSet: a task without lists is left out of the mean
            out[f"{stage}/{spec}"] = sum(per_task) / len(per_task)
    first = table.filter(pl.col("metric") == metrics[0]) if metrics else table.clear()
    for task in task_names:
        task_rows = first.filter(pl.col("task") == task)
        out[f"{stage}/{task}/lists"] = float(task_rows.height)
        for region in region_names:
            out[f"{stage}/{task}/{region}/lists"] = float(
                task_rows.filter(pl.col("region") == region).height
            )
    return out


def write_per_query(table: pl.DataFrame, path: str | Path) -> Path:
    """Write ``table`` as parquet (atomically: a half-written file never looks complete)."""
    path = Path(path)
    tmp = path.with_suffix(".parquet.tmp")
    table.write_parquet(tmp)
    tmp.replace(path)
    return path
