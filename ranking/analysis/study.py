"""A study's report: its runs' per-query values, the papers' claims checked on them, tables, plots.

A study (``conf/reproduce.yaml``) is a set of named *variants*, each trained with several seeds.
Every run wrote ``per_query.parquet`` (:mod:`ranking.metrics.per_query`); :func:`study_table` pools
them into the long table of :mod:`ranking.analysis.compare` (one row per variant, ``seed:query``
unit, region, task), so the full table with 95% bootstrap intervals is
:func:`ranking.analysis.compare.summarize_variants`.

A *claim* is a paper's statement "treatment beats (or matches) control". It is checked on the
units both variants scored, as the relative change of the means

    rel = mean_u(treatment_u) / mean_u(control_u) - 1

with a paired percentile bootstrap interval (units resampled together, ``scipy.stats.bootstrap``
with ``paired=True``) and the two-sided sign-flip permutation p of the mean difference
(:func:`ranking.analysis.compare.paired_difference`). The verdict reads the interval, never a
tuned number:

* ``expect: up`` — *agrees* if the interval lies above 0, *disagrees* if below, else *no
  significant difference*;
* ``expect: neutral`` — *agrees* if the interval covers 0, else *disagrees* (the sign says which
  way);
* ``expect: null`` — the paper makes no claim; the row only reports ours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats

from data_modules.errors import ConfigError
from ranking.analysis.compare import ALL_REGIONS, paired_difference

EXPECTATIONS = ("up", "neutral", None)


@dataclass(frozen=True)
class Claim:
    """A paper's statement about ``treatment`` vs ``control`` on some tasks."""

    treatment: str
    control: str
    expect: str | None
    paper: float | None
    source: str
    tasks: tuple[str, ...] | None = None  # None: every task both variants have

    def __post_init__(self) -> None:
        if self.expect not in EXPECTATIONS:
            raise ConfigError(
                f"claim {self.treatment} vs {self.control}: expect must be one of "
                f"{EXPECTATIONS}, got {self.expect!r}"
            )


def claim_from_config(raw: Mapping, study: str) -> Claim:
    """A :class:`Claim` from one ``claims`` entry of ``conf/reproduce.yaml`` (clear key errors)."""
    missing = [k for k in ("treatment", "control", "source") if k not in raw]
    if missing:
        raise ConfigError(f"studies.{study}.claims: entry {dict(raw)} lacks {missing}")
    unknown = set(raw) - {"treatment", "control", "expect", "paper", "source", "tasks"}
    if unknown:
        raise ConfigError(f"studies.{study}.claims: unknown key(s) {sorted(unknown)}")
    tasks = raw.get("tasks")
    return Claim(
        treatment=str(raw["treatment"]),
        control=str(raw["control"]),
        expect=raw.get("expect"),
        paper=None if raw.get("paper") is None else float(raw["paper"]),
        source=str(raw["source"]),
        tasks=None if tasks is None else tuple(str(t) for t in tasks),
    )


@dataclass(frozen=True)
class RunRef:
    """One scorer of one finished run: a study's variant is a list of these (one per seed)."""

    seed: str
    path: Path
    scorer: str = "model"  # or a baseline the run scored on the same lists: random, bm25, teacher


def study_table(runs: Mapping[str, Sequence[RunRef]], metric: str) -> pl.DataFrame:
    """Long table ``variant, unit, region, task, value`` of ``metric`` over a study's runs.

    Args:
        runs: ``{variant: [RunRef, ...]}``; each run directory holds ``per_query.parquet``.
            The unit of a value is ``"<seed>:<query_id>"`` (each seed draws its own split).
        metric: Metric spec stored in the files, e.g. ``ndcg@10``.

    Raises:
        ConfigError: a run has no ``per_query.parquet``, not this metric or not the scorer.
    """
    frames = []
    for variant, refs in runs.items():
        for ref in refs:
            path = Path(ref.path) / "per_query.parquet"
            if not path.is_file():
                raise ConfigError(f"study: {path} is missing (did the run finish?)")
            table = pl.read_parquet(path)
            rows = table.filter((pl.col("metric") == metric) & (pl.col("scorer") == ref.scorer))
            if rows.height == 0:
                found = sorted(set(table.get_column("scorer")) | set(table.get_column("metric")))
                raise ConfigError(
                    f"study: {path} has no rows of scorer '{ref.scorer}' and metric '{metric}' "
                    f"(scorers and metrics there: {found})"
                )
            unit = pl.concat_str([pl.lit(f"{ref.seed}:"), pl.col("query_id")]).alias("unit")
            frames.append(rows.with_columns(pl.lit(variant).alias("variant"), unit))
    if not frames:
        raise ConfigError("study: no runs")
    table = pl.concat(frames, how="vertical_relaxed").select(
        "variant", "unit", "region", "task", "value"
    )
    return table.unique(subset=["variant", "unit", "task"], keep="first", maintain_order=True)


def relative_change(
    treatment: np.ndarray,
    control: np.ndarray,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float, float]:
    """``(rel, low, high, p)``: ``mean(t) / mean(c) - 1`` on paired values, bootstrap CI, p.

    ``p`` is the sign-flip permutation p of ``mean(t - c)`` (two-sided). NaN when the control
    mean is 0 (no relative change is defined).
    """
    t, c = np.asarray(treatment, dtype=float), np.asarray(control, dtype=float)
    if t.shape != c.shape or t.size == 0:
        raise ValueError(f"relative_change: need paired, non-empty values ({t.shape} vs {c.shape})")
    if c.mean() == 0:
        return math.nan, math.nan, math.nan, math.nan
    rel = float(t.mean() / c.mean() - 1.0)
    p = paired_difference(t, c, confidence, resamples, seed)[3]
    if t.size < 2 or np.all(t - c == 0):
        return rel, rel, rel, p
    result = stats.bootstrap(
        (t, c),
        lambda a, b, axis: a.mean(axis=axis) / b.mean(axis=axis) - 1.0,
        paired=True,
        vectorized=True,
        confidence_level=confidence,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return rel, float(ci.low), float(ci.high), p


def verdict(expect: str | None, low: float, high: float) -> str:
    """How the interval ``[low, high]`` of our relative change reads against the paper's claim."""
    if math.isnan(low) or math.isnan(high):
        return "undefined"
    if expect is None:
        return "no claim"
    if expect == "neutral":
        if low <= 0.0 <= high:
            return "agrees (no significant difference)"
        return "disagrees (significantly better)" if low > 0 else "disagrees (significantly worse)"
    if low > 0:
        return "agrees"
    if high < 0:
        return "disagrees (significantly worse)"
    return "no significant difference"


def check_claims(
    table: pl.DataFrame,
    claims: Sequence[Claim],
    region: str = ALL_REGIONS,
    resamples: int = 2000,
    seed: int = 0,
) -> pl.DataFrame:
    """One row per (claim, task): our relative change with its interval, the paper's, a verdict.

    Pairs units that both variants scored for the task (and region, unless ``all``).

    Raises:
        ConfigError: a claim names a variant the table does not hold.
    """
    variants = set(table.get_column("variant").unique().to_list())
    rows = []
    for claim in claims:
        for name in (claim.treatment, claim.control):
            if name not in variants:
                raise ConfigError(
                    f"claim {claim.treatment} vs {claim.control}: no variant '{name}' "
                    f"(variants: {sorted(variants)})"
                )
        scope = table if region == ALL_REGIONS else table.filter(pl.col("region") == region)
        tasks = claim.tasks or [
            t
            for t in scope.get_column("task").unique(maintain_order=True).to_list()
            if scope.filter((pl.col("task") == t) & (pl.col("variant") == claim.control)).height
        ]
        for task in tasks:

            def values(name: str, task: str = task, scope: pl.DataFrame = scope) -> pl.DataFrame:
                picked = scope.filter((pl.col("variant") == name) & (pl.col("task") == task))
                return picked.select("unit", "value")

            paired = values(claim.treatment).join(values(claim.control), on="unit", suffix="_c")
            if paired.height == 0:
                raise ConfigError(
                    f"claim {claim.treatment} vs {claim.control}: no common queries on {task}"
                )
            t = paired.get_column("value").to_numpy()
            c = paired.get_column("value_c").to_numpy()
            rel, low, high, p = relative_change(t, c, resamples=resamples, seed=seed)
            rows.append(
                {
                    "treatment": claim.treatment,
                    "control": claim.control,
                    "task": task,
                    "region": region,
                    "queries": paired.height,
                    "treatment_mean": float(t.mean()),
                    "control_mean": float(c.mean()),
                    "rel": rel,
                    "rel_low": low,
                    "rel_high": high,
                    "p": p,
                    "expect": claim.expect,
                    "paper": claim.paper,
                    "verdict": verdict(claim.expect, low, high),
                    "source": claim.source,
                }
            )
    return pl.DataFrame(rows, infer_schema_length=None)


def _pct(value: float | None, signed: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:+.1f}%" if signed else f"{100 * value:.1f}%"


def claims_markdown(checked: pl.DataFrame, metric: str) -> str:
    """The claims table: ours (relative change, 95% CI, p) beside the paper's, and the verdict."""
    header = (
        f"| treatment vs control | task | {metric} treatment / control | ours: relative change "
        "[95% CI] | p | paper | verdict |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in checked.iter_rows(named=True):
        paper = (
            _pct(r["paper"])
            if r["paper"] is not None
            else {
                "up": "better (no figure)",
                "neutral": "neutral",
                None: "no claim",
            }[r["expect"]]
        )
        lines.append(
            f"| {r['treatment']} vs {r['control']} | {r['task']} | "
            f"{r['treatment_mean']:.3f} / {r['control_mean']:.3f} | "
            f"{_pct(r['rel'])} [{_pct(r['rel_low'])}, {_pct(r['rel_high'])}] | "
            f"{r['p']:.3f} | {paper} | {r['verdict']} |"
        )
    return "\n".join(lines)


def plot_claims(checked: pl.DataFrame, title: str, path: Path) -> Path:
    """Forest plot: our relative change per (claim, task) with its 95% CI; paper's as a cross."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(checked.iter_rows(named=True))
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(rows) + 1.6))
    y = np.arange(len(rows))[::-1]
    colors = {"agrees": "tab:green", "disagrees": "tab:red"}
    for yi, r in zip(y, rows, strict=True):
        color = next((c for k, c in colors.items() if r["verdict"].startswith(k)), "tab:gray")
        ax.errorbar(
            100 * r["rel"],
            yi,
            xerr=[[100 * (r["rel"] - r["rel_low"])], [100 * (r["rel_high"] - r["rel"])]],
            fmt="o",
            color=color,
            capsize=3,
        )
        if r["paper"] is not None:
            ax.plot(100 * r["paper"], yi, "x", color="black", markersize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(
        y, [f"{r['treatment']} vs {r['control']} | {r['task']}" for r in rows], fontsize=7
    )
    # Say what the colours mean (agrees / disagrees / no evidence either way) and the cross.
    from matplotlib.lines import Line2D

    legend = [
        Line2D([], [], marker="o", ls="", color=c, label=f"ours: {k} with the paper")
        for k, c in colors.items()
    ]
    legend += [
        Line2D(
            [], [], marker="o", ls="", color="tab:gray", label="ours: no significant difference"
        ),
        Line2D([], [], marker="x", ls="", color="black", label="paper's reported change"),
    ]
    ax.legend(handles=legend, fontsize=7, loc="best")
    ax.set_xlabel("relative change of the mean, % (95% paired bootstrap CI); x = paper")
    ax.set_title(title, fontsize=9, wrap=True)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
