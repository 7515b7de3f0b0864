"""Every study's claims on one dataset in one picture: claim x task, coloured by our effect.

The per-study forest plots (:func:`ranking.analysis.study.plot_claims`) show one study each; a
reader comparing the three papers wants one grid. Rows are the claims of every study (``study:
treatment vs control``, the paper's figure in the label), columns the tasks; a cell holds our
relative change of the mean over all regions,

    rel = mean_u(treatment_u) / mean_u(control_u) - 1,

coloured on a diverging scale, starred when its 95% paired bootstrap interval excludes 0 (the
intervals and verdicts of :func:`ranking.analysis.study.check_claims`), blank where the claim
does not cover the task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ranking.analysis.compare import ALL_REGIONS


@dataclass(frozen=True)
class ClaimsMatrix:
    """``values[i, j]``: relative change of claim ``rows[i]`` on task ``tasks[j]`` (NaN: none)."""

    rows: list[str]
    tasks: list[str]
    values: np.ndarray  # [rows, tasks] float
    significant: np.ndarray  # [rows, tasks] bool: the 95% interval excludes 0


def claims_matrix(checked_by_study: Mapping[str, pl.DataFrame]) -> ClaimsMatrix:
    """Stack the checked claims (``check_claims`` frames, one per study) into a claim x task grid.

    Only the all-regions rows are used; the row label carries the paper's figure when it has
    one (``+13.9%``) or its direction (``up``, ``neutral``).
    """
    rows: dict[str, int] = {}  # label -> row position (first seen first)
    tasks: dict[str, int] = {}
    cells: list[tuple[str, str, float, bool]] = []
    for study, checked in checked_by_study.items():
        for r in checked.filter(pl.col("region") == ALL_REGIONS).iter_rows(named=True):
            if r["paper"] is not None:
                said = f"paper {100 * r['paper']:+.1f}%"
            else:
                said = f"paper: {r['expect']}" if r["expect"] else "not in the paper"
            label = f"{study}: {r['treatment']} vs {r['control']} ({said})"
            rows.setdefault(label, len(rows))
            tasks.setdefault(r["task"], len(tasks))
            significant = r["rel_low"] > 0 or r["rel_high"] < 0
            cells.append((label, r["task"], float(r["rel"]), bool(significant)))
    values = np.full((len(rows), len(tasks)), np.nan)
    stars = np.zeros((len(rows), len(tasks)), dtype=bool)
    for label, task, rel, significant in cells:
        values[rows[label], tasks[task]] = rel
        stars[rows[label], tasks[task]] = significant
    return ClaimsMatrix(list(rows), list(tasks), values, stars)


def plot_claims_overview(
    checked_by_study: Mapping[str, pl.DataFrame], title: str, path: Path, clip: float = 0.1
) -> ClaimsMatrix:
    """Write the claim x task heat map to ``path`` (PNG); colours saturate at +-``clip``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = claims_matrix(checked_by_study)
    fig, ax = plt.subplots(
        figsize=(4.5 + 1.3 * len(grid.tasks), 0.38 * len(grid.rows) + 1.8), squeeze=True
    )
    shown = np.ma.masked_invalid(100 * grid.values)
    image = ax.imshow(shown, cmap="RdBu", vmin=-100 * clip, vmax=100 * clip, aspect="auto")
    for i in range(len(grid.rows)):
        for j in range(len(grid.tasks)):
            value = grid.values[i, j]
            if np.isnan(value):
                continue
            text = f"{100 * value:+.1f}%" + ("*" if grid.significant[i, j] else "")
            dark = abs(value) > 0.6 * clip  # white text on saturated cells
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")  # fmt: skip
    ax.set_xticks(range(len(grid.tasks)), grid.tasks, fontsize=8)
    ax.set_yticks(range(len(grid.rows)), grid.rows, fontsize=7)
    ax.xaxis.tick_top()
    bar = fig.colorbar(image, ax=ax, shrink=0.6)
    bar.set_label("our relative change of NDCG@10, % (treatment vs control)", fontsize=7)
    ax.set_xlabel(
        "* = 95% paired bootstrap interval excludes 0; blank = the claim is not about that task",
        fontsize=7,
    )
    ax.set_title(title, fontsize=8, pad=24, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # keeps the long row and colour-bar labels
    plt.close(fig)
    return grid
