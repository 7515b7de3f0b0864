"""The report of a sweep: ``compare_<metric>.md/.csv/.json`` and its plots.

:func:`compare` gathers the runs under a directory and writes the tables of
:mod:`ranking.analysis.compare` (bootstrap intervals, paired differences) and the plots below:
bars per variant, paired differences to the baseline, and one line plot per swept axis.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from data_modules.errors import ConfigError
from ranking.analysis.compare import (
    ALL_REGIONS,
    axis_table,
    bootstrap_interval,
    discover_runs,
    gather,
    markdown_table,
    summarize_variants,
    swept_axes,
)


def compare(
    root: str | Path,
    metric: str = "ndcg@10",
    baseline: str | None = None,
    baselines: Sequence[str] = (),
    out_dir: str | Path | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Path]:
    """Gather every run under ``root`` and write ``compare.md``, ``compare.csv`` and PNG plots.

    Args:
        root: A multirun directory (or any directory holding runs).
        metric: Metric spec stored in ``per_query.parquet`` (e.g. ``ndcg@10``).
        baseline: Variant to compare against (default: the first job's variant).
        baselines: Non-model scorers to add as variants (``random``, ``bm25``, ...).
        out_dir: Where to write (default: ``root``).

    Returns:
        ``{"markdown", "csv", "plot", "plot_delta", "plot_<axis>"...}`` paths.
    """
    runs = discover_runs(root)
    table = gather(runs, metric, baselines)
    summary = summarize_variants(table, baseline, resamples=resamples, seed=seed)
    baseline = baseline or summary.get_column("variant")[0]
    out = Path(out_dir or root)
    out.mkdir(parents=True, exist_ok=True)
    safe = metric.replace("@", "_at_")
    paths = {
        "markdown": out / f"compare_{safe}.md",
        "csv": out / f"compare_{safe}.csv",
        "json": out / f"compare_{safe}.json",
    }
    axes = swept_axes(runs)
    runs_line = f"{len(runs)} run(s) under {Path(root)}; swept: {', '.join(axes) or 'nothing'}"
    paths["markdown"].write_text(f"{runs_line}\n\n{markdown_table(summary, metric, baseline)}\n")
    summary.write_csv(paths["csv"])
    paths["json"].write_text(json.dumps(summary.to_dicts(), indent=1) + "\n")
    paths["plot"] = plot_variants(summary, metric, out / f"compare_{safe}.png")
    if summary.get_column("delta").is_not_null().any():
        paths["plot_delta"] = plot_deltas(
            summary, metric, baseline, out / f"compare_{safe}_delta.png"
        )
    for axis in axes:
        name = axis.replace("/", "_").replace(".", "_")
        paths[f"plot_{axis}"] = plot_axis(
            table, axis, metric, out / f"compare_{safe}_by_{name}.png"
        )
    return paths


def plot_variants(summary: pl.DataFrame, metric: str, path: Path) -> Path:
    """One panel per task: bars per region (and all), one bar per variant, 95% CI whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = summary.get_column("task").unique(maintain_order=True).to_list()
    variants = summary.get_column("variant").unique(maintain_order=True).to_list()
    regions = summary.get_column("region").unique(maintain_order=True).to_list()
    regions = [r for r in regions if r != ALL_REGIONS] + [ALL_REGIONS]
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(4.2 * len(tasks), 4.2), sharey=True, squeeze=False
    )
    width = 0.8 / len(variants)
    colors = plt.get_cmap("tab10")
    for ax, task in zip(axes[0], tasks, strict=True):
        for v, variant in enumerate(variants):
            rows = {
                r["region"]: r
                for r in summary.filter(
                    (pl.col("task") == task) & (pl.col("variant") == variant)
                ).iter_rows(named=True)
            }
            x = np.arange(len(regions)) + (v - (len(variants) - 1) / 2) * width
            means = np.array([rows[g]["mean"] if g in rows else np.nan for g in regions])
            low = np.array([rows[g]["low"] if g in rows else np.nan for g in regions])
            high = np.array([rows[g]["high"] if g in rows else np.nan for g in regions])
            ax.bar(x, means, width, color=colors(v % 10), label=variant)
            ax.errorbar(
                x, means, yerr=[means - low, high - means], fmt="none", ecolor="black", lw=1
            )
        ax.set_title(task)
        ax.set_xticks(np.arange(len(regions)), regions)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} (95% bootstrap CI over queries)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(variants), 4), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 + 0.04 * (len(variants) // 4), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_axis(table: pl.DataFrame, axis: str, metric: str, path: Path, seed: int = 0) -> Path:
    """``metric`` by one swept axis (other axes averaged per query), a line per region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = axis_table(table, axis)
    values = models.get_column(axis).unique(maintain_order=True).to_list()
    tasks = models.get_column("task").unique(maintain_order=True).to_list()
    regions = [*sorted(set(models.get_column("region").to_list())), ALL_REGIONS]
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(4.2 * len(tasks), 3.8), sharey=True, squeeze=False
    )
    for ax, task in zip(axes[0], tasks, strict=True):
        for region in regions:
            rows = models.filter(pl.col("task") == task)
            if region != ALL_REGIONS:
                rows = rows.filter(pl.col("region") == region)
            stats_ = [
                bootstrap_interval(
                    rows.filter(pl.col(axis) == value).get_column("value").to_numpy(), seed=seed
                )
                for value in values
            ]
            mean, low, high = (np.array(s) for s in zip(*stats_, strict=True))
            x = np.arange(len(values))
            ax.plot(x, mean, marker="o", label=region, lw=2.5 if region == ALL_REGIONS else 1.2)
            ax.fill_between(x, low, high, alpha=0.15)
        ax.set_title(task)
        ax.set_xticks(np.arange(len(values)), [str(v) for v in values], rotation=20)
        ax.set_xlabel(axis)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} (95% CI over queries)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_deltas(summary: pl.DataFrame, metric: str, baseline: str, path: Path) -> Path:
    """Paired difference of every variant to ``baseline``, with its 95% interval, per task.

    Bars of absolute values hide the 0.01-0.03 effects ranking comparisons are about; this plot
    draws ``mean(variant - baseline)`` over the queries both scored, a marker per region (filled
    for ``all``), the bootstrap interval as a whisker and 0 as a line. Whiskers that cross 0: no
    evidence of a difference.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary.filter(pl.col("delta").is_not_null())
    if rows.height == 0:
        raise ConfigError(f"compare: no variant besides the baseline '{baseline}' to plot")
    tasks = rows.get_column("task").unique(maintain_order=True).to_list()
    variants = rows.get_column("variant").unique(maintain_order=True).to_list()
    regions = rows.get_column("region").unique(maintain_order=True).to_list()
    regions = [r for r in regions if r != ALL_REGIONS] + [ALL_REGIONS]
    height = 0.8 / len(regions)
    fig, axes = plt.subplots(
        1,
        len(tasks),
        figsize=(4.6 * len(tasks), 1.0 + 0.45 * len(variants) * max(1, len(regions) / 2)),
        sharey=True,
        squeeze=False,
    )
    colors = plt.get_cmap("tab10")
    for ax, task in zip(axes[0], tasks, strict=True):
        for g, region in enumerate(regions):
            part = {
                r["variant"]: r
                for r in rows.filter(
                    (pl.col("task") == task) & (pl.col("region") == region)
                ).iter_rows(named=True)
            }
            y = np.arange(len(variants)) + (g - (len(regions) - 1) / 2) * height
            mean = np.array([part[v]["delta"] if v in part else np.nan for v in variants])
            low = np.array([part[v]["delta_low"] if v in part else np.nan for v in variants])
            high = np.array([part[v]["delta_high"] if v in part else np.nan for v in variants])
            full = region == ALL_REGIONS
            ax.errorbar(
                mean,
                y,
                xerr=[mean - low, high - mean],
                fmt="o" if full else "s",
                color="black" if full else colors(g % 10),
                mfc="black" if full else "white",
                capsize=3,
                label=region,
            )
        ax.axvline(0.0, color="grey", lw=1)
        ax.set_title(task)
        ax.set_xlabel(f"Δ {metric}")
        ax.xaxis.set_major_locator(plt.MaxNLocator(5))  # readable ticks on narrow panels
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(np.arange(len(variants)), variants)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(fontsize=8, title="region", loc="best")
    # One label for all panels: a long baseline name would run into the next panel's.
    fig.suptitle(f"paired difference to {baseline} (95% CI)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
