"""Compare the runs of a sweep: bootstrap intervals over queries, paired tests, tables.

Every training run writes ``per_query.parquet`` (one metric value per test list; see
:mod:`ranking.metrics.per_query`). This module gathers those files under a directory (a Hydra
multirun dir, or any tree of runs), groups runs into *variants* (the same overrides apart from
``seed``), and reports per variant, task and region:

* the mean with a 95% percentile bootstrap interval over queries (Efron & Tibshirani, 1993) —
  ``scipy.stats.bootstrap``;
* the difference to a baseline variant on the *same* queries, with a paired bootstrap interval and
  a paired sign-flip permutation test (two-sided p) — ``scipy.stats.permutation_test``
  (Smucker, Allan & Carterette, CIKM 2007, compare such tests for IR).

Seeds: runs of one variant with different seeds are pooled; the resampling unit is
``(seed, query_id)`` because the data split follows the seed. A paired test pairs the units both
variants scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import yaml
from scipy import stats

from data_modules.errors import ConfigError

PER_QUERY = "per_query.parquet"
ALL_REGIONS = "all"
# Overrides that name where a run wrote, not what it ran: never an axis of the comparison.
_NOT_AXES = ("paths.", "hydra.", "logger", "trainer.enable_progress_bar", "callbacks")


@dataclass(frozen=True)
class Run:
    """One run's directory, its command-line overrides and its per-query values."""

    path: Path
    overrides: dict[str, str]
    seed: str
    per_query: pl.DataFrame


def _overrides(run_dir: Path) -> dict[str, str]:
    """``key=value`` overrides of a Hydra job (``.hydra/overrides.yaml``), ``{}`` if absent."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    pairs = (item.split("=", 1) for item in items if "=" in item)
    return {k.lstrip("+~"): v for k, v in pairs if not k.lstrip("+~").startswith(_NOT_AXES)}


def _seed(run_dir: Path, overrides: dict[str, str]) -> str:
    if "seed" in overrides:
        return overrides["seed"]
    config = run_dir / "config.yaml"
    if config.is_file():
        return str((yaml.safe_load(config.read_text()) or {}).get("seed", "0"))
    return "0"


def _job_order(path: Path) -> tuple[int, str]:
    """Hydra numbers multirun jobs 0, 1, ...: keep that order (the sweep's first value first)."""
    name = path.name
    return (int(name), "") if name.isdigit() else (1 << 30, str(path))


def discover_runs(root: str | Path) -> list[Run]:
    """Every run under ``root`` that wrote ``per_query.parquet``, in job order.

    Raises:
        ConfigError: ``root`` does not exist or holds no finished run.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"compare: {root} is not a directory")
    files = sorted(root.rglob(PER_QUERY), key=lambda p: _job_order(p.parent))
    if not files:
        raise ConfigError(
            f"compare: no {PER_QUERY} under {root} (runs write it when they test after fitting)"
        )
    runs = []
    for file in files:
        overrides = _overrides(file.parent)
        runs.append(
            Run(file.parent, overrides, _seed(file.parent, overrides), pl.read_parquet(file))
        )
    return runs


def swept_axes(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value differs between runs (``seed`` excluded), in first-seen order."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys]
    return [
        k
        for k in keys
        if k != "seed" and len({run.overrides.get(k, "<default>") for run in runs}) > 1
    ]


def variant_name(overrides: dict[str, str], axes: Sequence[str]) -> str:
    return ",".join(f"{k}={overrides.get(k, '<default>')}" for k in axes) or "run"


def gather(runs: Sequence[Run], metric: str, baselines: Sequence[str] = ()) -> pl.DataFrame:
    """Long table ``variant, <axes...>, unit, region, task, value`` of one metric.

    The model of every run is a variant named by its swept axes; each scorer named in
    ``baselines`` (e.g. ``random``, ``bm25``) becomes one more variant, its rows taken once per
    (seed, query) since every run of a seed scored the same lists with it.
    """
    axes = swept_axes(runs)
    models, others = [], []
    for run in runs:
        rows = run.per_query.filter(pl.col("metric") == metric)
        if rows.height == 0:
            found = sorted(run.per_query.get_column("metric").unique().to_list())
            raise ConfigError(f"compare: {run.path} has no metric '{metric}' (found {found})")
        unit = pl.concat_str([pl.lit(f"{run.seed}:"), pl.col("query_id")]).alias("unit")
        models.append(
            rows.filter(pl.col("scorer") == "model").with_columns(
                pl.lit(variant_name(run.overrides, axes)).alias("variant"),
                *[pl.lit(run.overrides.get(a, "<default>")).alias(a) for a in axes],
                unit,
            )
        )
        for scorer in baselines:
            base = rows.filter(pl.col("scorer") == scorer)
            if base.height == 0:
                raise ConfigError(f"compare: {run.path} has no baseline '{scorer}'")
            others.append(
                base.with_columns(
                    pl.lit(f"baseline:{scorer}").alias("variant"),
                    *[pl.lit("-").alias(a) for a in axes],
                    unit,
                )
            )
    frames = models + others  # model variants first, in job order; baselines last
    table = pl.concat(frames, how="vertical_relaxed").select(
        "variant", *axes, "unit", "region", "task", "value"
    )
    # A baseline appears once per run of the same seed: keep one copy of each (unit, task).
    return table.unique(subset=["variant", "unit", "task"], keep="first", maintain_order=True)


def bootstrap_interval(
    values: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, low, high)``: percentile bootstrap interval of the mean over ``values``."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    if values.size == 1 or np.all(values == values[0]):
        return float(values.mean()), float(values.mean()), float(values.mean())
    result = stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return float(values.mean()), float(ci.low), float(ci.high)


def paired_difference(
    a: np.ndarray, b: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float, float]:
    """``(mean(a - b), low, high, p)`` on paired values: bootstrap interval and sign-flip p."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = a - b
    mean, low, high = bootstrap_interval(diff, confidence, resamples, seed)
    if diff.size < 2 or np.all(diff == 0):
        return mean, low, high, 1.0
    test = stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed + 1),
    )
    return mean, low, high, float(test.pvalue)


NO_DELTA = {"delta": None, "delta_low": None, "delta_high": None, "p": None}


def paired_fields(
    values: pl.DataFrame,
    reference: pl.DataFrame,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, float | None]:
    """``delta, delta_low, delta_high, p`` of ``values - reference`` on the units both hold
    (all ``None`` when they share none). Both frames have columns ``unit, value``."""
    paired = values.join(reference, on="unit", suffix="_b")
    if paired.height == 0:
        return dict(NO_DELTA)
    delta = paired_difference(
        paired.get_column("value").to_numpy(),
        paired.get_column("value_b").to_numpy(),
        confidence,
        resamples,
        seed,
    )
    return dict(zip(NO_DELTA, delta, strict=True))


def unit_summary(
    values: pl.DataFrame,
    reference: pl.DataFrame | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, float | int | None]:
    """``queries, mean, low, high`` of ``values`` (columns ``unit, value``) and, against a
    ``reference``, the :func:`paired_fields` of ``values - reference`` (``None`` without one)."""
    mean, low, high = bootstrap_interval(
        values.get_column("value").to_numpy(), confidence, resamples, seed
    )
    delta = (
        NO_DELTA
        if reference is None
        else paired_fields(values, reference, confidence, resamples, seed)
    )
    return {"queries": values.height, "mean": mean, "low": low, "high": high, **delta}


def summarize_variants(
    table: pl.DataFrame,
    baseline: str | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> pl.DataFrame:
    """Per variant, task and region (and ``all``): mean, interval, and the paired comparison.

    Args:
        table: Output of :func:`gather`.
        baseline: Variant the others are compared with (default: the first variant).

    Returns:
        Columns ``variant, <axes>, task, region, queries, mean, low, high, delta, delta_low,
        delta_high, p`` (the ``delta*``/``p`` columns are null for the baseline itself).
    """
    variants = table.get_column("variant").unique(maintain_order=True).to_list()
    baseline = baseline or variants[0]
    if baseline not in variants:
        raise ConfigError(f"compare: baseline '{baseline}' is not a variant; variants: {variants}")
    axes = [c for c in table.columns if c not in ("variant", "unit", "region", "task", "value")]
    everywhere = pl.concat([table, table.with_columns(pl.lit(ALL_REGIONS).alias("region"))])
    regions = [*sorted(set(table.get_column("region").to_list())), ALL_REGIONS]
    tasks = table.get_column("task").unique(maintain_order=True).to_list()

    def values_of(variant: str, task: str, region: str) -> pl.DataFrame:
        return everywhere.filter(
            (pl.col("variant") == variant) & (pl.col("task") == task) & (pl.col("region") == region)
        ).select("unit", "value")

    rows = []
    for variant in variants:
        labels = table.filter(pl.col("variant") == variant).row(0, named=True)
        for task in tasks:
            for region in regions:
                mine = values_of(variant, task, region)
                if mine.height == 0:
                    continue
                reference = values_of(baseline, task, region) if variant != baseline else None
                rows.append(
                    {
                        "variant": variant,
                        **{a: labels[a] for a in axes},
                        "task": task,
                        "region": region,
                        **unit_summary(mine, reference, confidence, resamples, seed),
                    }
                )
    return pl.DataFrame(rows, infer_schema_length=None)


def markdown_table(summary: pl.DataFrame, metric: str, baseline: str) -> str:
    """One markdown table: rows variant x task, a column per region with mean [low, high]."""
    regions = summary.get_column("region").unique(maintain_order=True).to_list()
    regions = [r for r in regions if r != ALL_REGIONS] + [ALL_REGIONS]
    header = ["variant", "task", *regions, f"Δ all vs {baseline} [95% CI], p"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (variant, task), group in summary.group_by(["variant", "task"], maintain_order=True):
        by_region = {row["region"]: row for row in group.iter_rows(named=True)}
        cells = [
            f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]" if (r := by_region.get(g)) else "-"
            for g in regions
        ]
        overall = by_region.get(ALL_REGIONS)
        if overall and overall["delta"] is not None:
            cells.append(
                f"{overall['delta']:+.3f} [{overall['delta_low']:+.3f}, "
                f"{overall['delta_high']:+.3f}], p={overall['p']:.3f}"
            )
        else:
            cells.append("baseline" if variant == baseline else "-")
        lines.append("| " + " | ".join([variant, task, *cells]) + " |")
    return (
        f"{metric} per task and region, mean over test queries [95% bootstrap CI]\n\n"
        + "\n".join(lines)
    )


def axis_table(table: pl.DataFrame, axis: str) -> pl.DataFrame:
    """Model rows of ``table`` with every other swept axis averaged out, one row per query.

    When a sweep crosses ``axis`` with other axes, each (seed, query) is scored once per
    combination; bootstrapping the raw rows would count that query once per combination and give
    intervals too narrow by ~sqrt(#combinations). Averaging per (axis value, unit, region, task)
    first keeps the resampling unit a query.

    Returns:
        Columns ``<axis>, unit, region, task, value``.
    """
    models = table.filter(~pl.col("variant").str.starts_with("baseline:"))
    return models.group_by([axis, "unit", "region", "task"], maintain_order=True).agg(
        pl.col("value").mean()
    )
