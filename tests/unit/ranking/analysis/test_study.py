"""A study's report: pooled per-query tables, relative changes, claim verdicts, tables, plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from data_modules.errors import ConfigError
from ranking.analysis.study import (
    Claim,
    RunRef,
    check_claims,
    claim_from_config,
    claims_markdown,
    plot_claims,
    relative_change,
    study_table,
    verdict,
)

SCHEMA = ["scorer", "query_id", "region", "task", "metric", "value"]


def write_per_query(run: Path, rows: list[tuple]) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema=SCHEMA, orient="row").write_parquet(run / "per_query.parquet")
    return run


def test_relative_change_is_the_ratio_of_paired_means_with_an_interval_around_it() -> None:
    treatment, control = np.array([0.6, 0.8, 1.0, 0.4]), np.array([0.5, 0.5, 0.5, 0.5])
    rel, low, high, p = relative_change(treatment, control, resamples=500)
    assert rel == pytest.approx(0.7 / 0.5 - 1)
    assert low <= rel <= high and low < high
    assert 0.0 < p <= 1.0
    # Identical values: no change, a zero-width interval and p = 1.
    assert relative_change(control, control) == (0.0, 0.0, 0.0, 1.0)
    assert all(np.isnan(relative_change(treatment, np.zeros(4))))
    with pytest.raises(ValueError, match="paired"):
        relative_change(treatment, control[:3])


@pytest.mark.parametrize(
    ("expect", "low", "high", "expected"),
    [
        ("up", 0.01, 0.05, "agrees"),
        ("up", -0.05, -0.01, "disagrees (significantly worse)"),
        ("up", -0.01, 0.02, "no significant difference"),
        ("neutral", -0.01, 0.02, "agrees (no significant difference)"),
        ("neutral", 0.01, 0.03, "disagrees (significantly better)"),
        ("neutral", -0.03, -0.01, "disagrees (significantly worse)"),
        (None, 0.01, 0.03, "no claim"),
        ("up", float("nan"), float("nan"), "undefined"),
    ],
)
def test_verdict_reads_the_interval_against_the_claim(expect, low, high, expected) -> None:
    assert verdict(expect, low, high) == expected


def test_study_table_pools_seeds_into_seed_qualified_units(tmp_path: Path) -> None:
    rows = lambda v: [  # noqa: E731
        ("model", "q1", "eu", "click", "ndcg@10", v),
        ("model", "q1", "eu", "click", "mrr@10", 0.0),
        ("bm25", "q1", "eu", "click", "ndcg@10", 0.3),
    ]
    a0 = write_per_query(tmp_path / "a0", rows(0.5))
    a1 = write_per_query(tmp_path / "a1", rows(0.7))
    table = study_table(
        {"a": [RunRef("0", a0), RunRef("1", a1)], "baseline:bm25": [RunRef("0", a0, "bm25")]},
        "ndcg@10",
    )
    assert table.sort("variant", "unit").rows() == [
        ("a", "0:q1", "eu", "click", 0.5),
        ("a", "1:q1", "eu", "click", 0.7),
        ("baseline:bm25", "0:q1", "eu", "click", 0.3),
    ]
    with pytest.raises(ConfigError, match="missing"):
        study_table({"a": [RunRef("0", tmp_path / "nowhere")]}, "ndcg@10")
    with pytest.raises(ConfigError, match="scorer 'teacher'"):
        study_table({"a": [RunRef("0", a0, "teacher")]}, "ndcg@10")


def _table(values: dict[str, list[float]], task: str = "purchase") -> pl.DataFrame:
    return pl.DataFrame(
        [
            (variant, f"0:q{i}", "eu" if i % 2 else "na", task, v)
            for variant, vs in values.items()
            for i, v in enumerate(vs)
        ],
        schema=["variant", "unit", "region", "task", "value"],
        orient="row",
    )


def test_claims_pair_common_units_and_report_the_papers_figure_beside_ours() -> None:
    # "new" scored one extra query that "old" did not: it is left out of the pairing.
    table = _table({"new": [0.6, 0.8, 0.9, 0.2], "old": [0.5, 0.5, 0.5]})
    claim = Claim("new", "old", "up", 0.139, "paper X")
    checked = check_claims(table, [claim], resamples=300)
    row = checked.row(0, named=True)
    assert row["queries"] == 3 and row["task"] == "purchase"
    assert row["rel"] == pytest.approx((0.6 + 0.8 + 0.9) / 1.5 - 1)
    assert row["paper"] == 0.139 and row["verdict"] in ("agrees", "no significant difference")
    text = claims_markdown(checked, "ndcg@10")
    assert "+13.9%" in text and f"{100 * row['rel']:+.1f}%" in text and "new vs old" in text
    eu = check_claims(table, [claim], region="eu", resamples=300).row(0, named=True)
    assert eu["queries"] == 1 and eu["rel"] == pytest.approx(0.8 / 0.5 - 1)


def test_claims_name_unknown_variants_and_bad_config_entries() -> None:
    table = _table({"new": [0.6], "old": [0.5]})
    with pytest.raises(ConfigError, match="no variant 'gone'"):
        check_claims(table, [Claim("new", "gone", "up", None, "s")])
    with pytest.raises(ConfigError, match="lacks"):
        claim_from_config({"treatment": "a"}, "losses")
    with pytest.raises(ConfigError, match="unknown key"):
        claim_from_config({"treatment": "a", "control": "b", "source": "s", "paperr": 1}, "x")
    with pytest.raises(ConfigError, match="expect must be"):
        claim_from_config({"treatment": "a", "control": "b", "source": "s", "expect": "down"}, "x")
    parsed = claim_from_config(
        {"treatment": "a", "control": "b", "source": "s", "tasks": ["click"], "paper": "0.2"}, "x"
    )
    assert parsed.tasks == ("click",) and parsed.paper == 0.2 and parsed.expect is None


def test_plot_claims_writes_a_png(tmp_path: Path) -> None:
    table = _table({"new": [0.6, 0.8, 0.9], "old": [0.5, 0.5, 0.6]})
    checked = check_claims(table, [Claim("new", "old", "up", 0.1, "s")], resamples=200)
    path = plot_claims(checked, "title", tmp_path / "claims.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
