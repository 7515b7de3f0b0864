"""The claim x task grid of every study on one dataset."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from ranking.analysis.claims_overview import claims_matrix, plot_claims_overview


def _checked(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema=["treatment", "control", "task", "region", "rel", "rel_low", "rel_high",
                "expect", "paper"],
        orient="row",
    )  # fmt: skip


def test_claims_are_stacked_per_task_with_significance_and_the_papers_figure(tmp_path) -> None:
    losses = _checked(
        [
            ("a", "b", "click", "all", 0.02, 0.01, 0.03, "up", 0.139),
            ("a", "b", "purchase", "all", -0.01, -0.05, 0.02, "up", 0.139),
            ("a", "b", "click", "eu", 0.5, 0.4, 0.6, "up", 0.139),  # a region row: not shown
        ]
    )
    seq = _checked([("s", "t", "purchase", "all", -0.2, -0.3, -0.1, "neutral", None)])
    grid = claims_matrix({"losses": losses, "seq_md": seq})
    assert grid.rows == ["losses: a vs b (paper +13.9%)", "seq_md: s vs t (paper: neutral)"]
    assert grid.tasks == ["click", "purchase"]
    np.testing.assert_allclose(grid.values[0], [0.02, -0.01])
    assert math.isnan(grid.values[1, 0]) and grid.values[1, 1] == -0.2
    assert grid.significant.tolist() == [[True, False], [False, True]]
    drawn = plot_claims_overview({"losses": losses}, "t", tmp_path / "o.png")
    assert drawn.rows == ["losses: a vs b (paper +13.9%)"]
    assert (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG"
