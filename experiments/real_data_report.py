"""``python -m experiments.real_data_report NAME=DIR [NAME=DIR ...] [--out DIR]``.

The fine-tuned model against every baseline it was scored beside, per dataset: each ``DIR`` is a
multirun directory of one recipe over seeds (e.g. ``experiment=crowdflower seed=0,1,2``). Writes
``real_data.md`` (model and baselines: mean with a 95% bootstrap interval; model minus each
baseline: paired bootstrap interval over (seed, query) units and the sign-flip p; per-seed means)
and ``real_data.png`` (the paired differences, one panel per dataset) under ``--out``.
Statistics come from :mod:`ranking.analysis.compare`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from data_modules.errors import ConfigError, ShoprankError
from ranking.analysis.compare import (
    discover_runs,
    gather,
    paired_difference,
    paired_fields,
    unit_summary,
)

BASELINES = ("random", "bm25", "minilm_zero_shot", "lambdamart")
MODEL = "model"


def dataset_table(root: Path, metric: str, task: str) -> pl.DataFrame:
    """Long table ``scorer, seed, unit, value`` of one dataset's runs (model and baselines)."""
    runs = discover_runs(root)
    found = set(runs[0].per_query.get_column("scorer").unique().to_list())
    baselines = [b for b in BASELINES if b in found]
    table = gather(runs, metric, baselines).filter(pl.col("task") == task)
    if table.height == 0:
        raise ConfigError(f"real_data_report: {root} has no task '{task}'")
    scorer = (
        pl.when(pl.col("variant").str.starts_with("baseline:"))
        .then(pl.col("variant").str.replace("baseline:", ""))
        .otherwise(pl.lit(MODEL))
    )
    return table.select(
        scorer.alias("scorer"),
        pl.col("unit").str.split(":").list.first().alias("seed"),
        "unit",
        "value",
    )


def summarize(table: pl.DataFrame, resamples: int) -> pl.DataFrame:
    """Per scorer: mean [95% CI]; and model minus the scorer on shared units, interval and p."""
    model = table.filter(pl.col("scorer") == MODEL).select("unit", "value")
    rows = []
    for scorer in table.get_column("scorer").unique(maintain_order=True).to_list():
        mine = table.filter(pl.col("scorer") == scorer).select("unit", "value")
        # The model minus this scorer (not this scorer minus the model).
        reference = paired_fields(model, mine, resamples=resamples) if scorer != MODEL else {}
        rows.append({"scorer": scorer, **unit_summary(mine, resamples=resamples), **reference})
    return pl.DataFrame(rows, infer_schema_length=None)


def per_seed(table: pl.DataFrame) -> pl.DataFrame:
    """Scorer x seed: the mean over that seed's test queries."""
    return (
        table.group_by("scorer", "seed", maintain_order=True)
        .agg(pl.col("value").mean())
        .pivot(on="seed", index="scorer", values="value")
    )


def markdown(name: str, root: Path, summary: pl.DataFrame, seeds: pl.DataFrame, metric: str) -> str:
    lines = [
        f"## {name}",
        "",
        f"Runs: `{root}`. Test {metric}, mean over (seed, query) units.",
        "",
        f"| scorer | {metric} [95% CI] | model − scorer [95% CI] | p | units |",
        "|---|---|---|---|---|",
    ]
    for r in summary.iter_rows(named=True):
        delta = (
            f"{r['delta']:+.4f} [{r['delta_low']:+.4f}, {r['delta_high']:+.4f}]"
            if r["delta"] is not None
            else "—"
        )
        p = f"{r['p']:.3f}" if r["p"] is not None else "—"
        lines.append(
            f"| {r['scorer']} | {r['mean']:.4f} [{r['low']:.4f}, {r['high']:.4f}] | {delta} | {p} "
            f"| {r['queries']} |"
        )
    lines += ["", "Per seed (mean over that seed's test queries):", ""]
    cols = [c for c in seeds.columns if c != "scorer"]
    lines += ["| scorer | " + " | ".join(f"seed {c}" for c in cols) + " |"]
    lines += ["|---|" + "---|" * len(cols)]
    for r in seeds.iter_rows(named=True):
        lines.append(f"| {r['scorer']} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + " |")
    return "\n".join([*lines, ""])


def model_pair(tables: dict[str, pl.DataFrame], spec: str, resamples: int) -> str:
    """``A:B``: the model of runs ``A`` minus the model of runs ``B`` on the units both scored.

    For two recipes on the same data and seeds (e.g. a domain-adapted encoder vs the generic one):
    the same seed gives the same split, so (seed, query) units pair up.
    """
    names = spec.split(":")
    if len(names) != 2 or any(n not in tables for n in names):
        raise ConfigError(f"real_data_report: --pair expects A:B of {sorted(tables)}, got {spec!r}")
    a, b = (tables[n].filter(pl.col("scorer") == MODEL).select("unit", "value") for n in names)
    paired = a.join(b, on="unit", suffix="_b")
    if paired.height == 0:
        raise ConfigError(f"real_data_report: {names[0]} and {names[1]} share no (seed, query)")
    mean, low, high, p = paired_difference(
        paired.get_column("value").to_numpy(),
        paired.get_column("value_b").to_numpy(),
        resamples=resamples,
    )
    return (
        f"| {names[0]} − {names[1]} | {mean:+.4f} [{low:+.4f}, {high:+.4f}] | {p:.3f} "
        f"| {paired.height} |"
    )


def plot(summaries: dict[str, pl.DataFrame], metric: str, path: Path) -> Path:
    """One panel per dataset: model minus each baseline, paired 95% interval, 0 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(summaries), figsize=(4.8 * len(summaries), 3.2), squeeze=False, sharex=False
    )
    for ax, (name, summary) in zip(axes[0], summaries.items(), strict=True):
        rows = summary.filter(pl.col("delta").is_not_null())
        labels = rows.get_column("scorer").to_list()
        mean = rows.get_column("delta").to_numpy()
        low, high = (
            rows.get_column("delta_low").to_numpy(),
            rows.get_column("delta_high").to_numpy(),
        )
        y = np.arange(len(labels))
        colors = [
            "tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:gray"
            for lo, hi in zip(low, high, strict=True)
        ]
        for yi, m, lo, hi, c in zip(y, mean, low, high, colors, strict=True):
            ax.errorbar(m, yi, xerr=[[m - lo], [hi - m]], fmt="o", color=c, capsize=4)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_yticks(y, [f"vs {label}" for label in labels])
        ax.invert_yaxis()
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"model − baseline, test {metric}")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Fine-tuned MiniLM cross-encoder vs each baseline (paired 95% CI)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.real_data_report", description=__doc__
    )
    parser.add_argument("runs", nargs="+", help="NAME=DIR: a dataset's multirun directory")
    parser.add_argument("--out", default="experiments/results", help="output directory")
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--task", default="relevance")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument(
        "--pair", action="append", default=[], help="A:B: model of A minus model of B (paired)"
    )
    args = parser.parse_args(argv)
    try:
        pairs = [item.split("=", 1) for item in args.runs]
        if any(len(p) != 2 or not p[0] for p in pairs):
            raise ConfigError(f"real_data_report: expected NAME=DIR, got {args.runs}")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        sections, summaries, tables = [], {}, {}
        for name, root in pairs:
            table = tables[name] = dataset_table(Path(root), args.metric, args.task)
            summaries[name] = summarize(table, args.resamples)
            sections.append(
                markdown(name, Path(root), summaries[name], per_seed(table), args.metric)
            )
        if args.pair:
            sections += [
                "## Model against model",
                "",
                f"| runs | Δ {args.metric} [95% CI] | p | units |",
                "|---|---|---|---|",
                *[model_pair(tables, spec, args.resamples) for spec in args.pair],
                "",
            ]
        png = plot(summaries, args.metric, out / "real_data.png")
        header = (
            f"# Real data: fine-tuned model vs baselines\n\nWritten by `python -m "
            f"experiments.real_data_report {' '.join(argv or sys.argv[1:])}` on "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Intervals: 95% percentile bootstrap "
            f"({args.resamples} resamples) over (seed, query) units; p: paired sign-flip "
            f"permutation test. Task: {args.task}.\n\n![differences]({png.name})\n\n"
        )
        path = out / "real_data.md"
        path.write_text(header + "\n".join(sections))
        print(path.read_text())
    except ShoprankError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
