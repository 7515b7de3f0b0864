"""How much of engagement relevance explains vs position (ranking.analysis.engagement_check)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from data_modules.errors import DataValidationError
from ranking.analysis.engagement_check import engagement_signal, signal_markdown


def _table() -> pl.DataFrame:
    # One query: the clicked (and bought) item is the most relevant one, shown at position 3.
    return pl.DataFrame(
        {
            "query_id": ["q"] * 3,
            "region": ["us"] * 3,
            "relevance": [1.0, 0.5, 0.0],
            "position": [3, 1, 2],
            "click": [1, 0, 0],
            "add_to_cart": [1, 0, 0],
            "purchase": [0, 0, 0],
        }
    )


def test_relevance_position_and_random_rankings_exact() -> None:
    frame = engagement_signal(_table(), k=10, draws=1000, seed=0)
    click = frame.filter((pl.col("region") == "all") & (pl.col("label") == "click")).row(
        0, named=True
    )
    assert click["lists"] == 1
    assert click["relevance"] == pytest.approx(1.0)
    assert click["position"] == pytest.approx(1 / math.log2(4))  # the click sits at rank 3
    expected_random = (1 + 1 / math.log2(3) + 1 / math.log2(4)) / 3
    assert click["random"] == pytest.approx(expected_random, abs=0.02)
    # The display order is worse than random here: no position lift to share (NaN).
    assert math.isnan(click["relevance_share"])
    # No purchase at all: no row (nothing to rank for that label); both regions reported.
    assert set(frame["label"]) == {"click", "add_to_cart"}
    assert set(frame["region"]) == {"us", "all"}
    assert "| us | click | 1 | 1.000 | 0.500 |" in signal_markdown(frame)


def test_missing_columns_are_named() -> None:
    with pytest.raises(DataValidationError, match=r"\['position'\]"):
        engagement_signal(_table().drop("position"))
