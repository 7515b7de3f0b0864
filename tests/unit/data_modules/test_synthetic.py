"""Tests of the synthetic multi-region generator (data_modules.synthetic)."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from data_modules.schema import ENGAGEMENT_LABELS, KEY_COLUMNS, TEXT_COLUMNS
from data_modules.synthetic import (
    COLUMNS,
    RegionProfile,
    SyntheticConfig,
    expected_purchase_probability,
    generate_synthetic,
    stage_probabilities,
    summarise,
    write_synthetic,
)
from data_modules.synthetic.__main__ import main
from data_modules.synthetic.catalogue import (
    BRANDS,
    CATEGORIES,
    CATEGORY_NAMES,
    COLORS,
    RELATED_CATEGORIES,
)

DTYPES = {
    **dict.fromkeys(KEY_COLUMNS + TEXT_COLUMNS, pl.String),
    **dict.fromkeys(("product_category", "product_size", "price_band"), pl.String),
    **dict.fromkeys((*ENGAGEMENT_LABELS, "position"), pl.Int64),
    "relevance": pl.Float64,
    "price": pl.Float64,
}
SMALL = SyntheticConfig(num_queries=60, num_products=300, seed=7)


@pytest.fixture(scope="module")
def default_table() -> pl.DataFrame:
    return generate_synthetic(SyntheticConfig())


def as_lists(table: pl.DataFrame, list_size: int, *columns: str) -> list[np.ndarray]:
    """Columns reshaped to [num_queries, list_size], rows grouped by query (stable)."""
    grouped = table.sort("query_id", maintain_order=True)
    return [grouped[c].to_numpy().reshape(-1, list_size) for c in columns]


def ndcg_at_k(scores: np.ndarray, gains: np.ndarray, k: int = 10) -> np.ndarray:
    """NDCG@k per list (gain = label, discount 1/log2(rank + 1)); NaN where no gain."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    dcg = (np.take_along_axis(gains, order, axis=1) * discount[: order.shape[1]]).sum(axis=1)
    ideal = -np.sort(-gains, axis=1)[:, :k]
    idcg = (ideal * discount[: ideal.shape[1]]).sum(axis=1)
    return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), np.nan)


def test_ndcg_helper_reference() -> None:
    gains = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    scores = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    np.testing.assert_allclose(ndcg_at_k(scores, gains, k=10), [1 / np.log2(3), 1.0])


def test_same_seed_same_table_different_seed_differs() -> None:
    first, second = generate_synthetic(SMALL), generate_synthetic(SMALL)
    assert first.equals(second)
    other = generate_synthetic(replace(SMALL, seed=8))
    assert not first.equals(other)
    assert first["query"].to_list() != other["query"].to_list()
    assert first["click"].to_list() != other["click"].to_list()


def test_schema_and_list_structure(default_table: pl.DataFrame) -> None:
    config = SyntheticConfig()
    table = default_table
    assert table.columns == list(COLUMNS)
    assert dict(table.schema) == {c: DTYPES[c] for c in COLUMNS}
    assert table.height == 900 * 20
    assert table.null_count().sum_horizontal().item() == 0
    for column in ("query", "product_title", "product_description", "product_brand"):
        assert (table[column].str.len_chars() > 0).all(), column
    assert table.select("query_id", "product_id").is_duplicated().sum() == 0
    per_query = table.group_by("query_id").len()
    assert per_query["len"].unique().to_list() == [config.list_size]
    assert table.group_by("region").agg(pl.col("query_id").n_unique()).sort("region").rows() == [
        ("apac", 300),
        ("eu", 300),
        ("na", 300),
    ]
    (positions,) = as_lists(table, config.list_size, "position")
    expected = np.arange(1, config.list_size + 1)
    assert (np.sort(positions, axis=1) == expected).all()
    assert set(table["relevance"].unique().to_list()) == {0.0, 1.0, 2.0, 3.0}
    assert table["product_id"].n_unique() > 1000
    assert table["product_title"].n_unique() > 1000  # templated text is varied


def test_cascade_purchase_implies_cart_implies_click(default_table: pl.DataFrame) -> None:
    click, cart, buy = (default_table[c].to_numpy() for c in ENGAGEMENT_LABELS)
    for labels in (click, cart, buy):
        assert set(np.unique(labels).tolist()) <= {0, 1}
    assert (buy <= cart).all() and (cart <= click).all()
    assert buy.sum() > 0 and (cart > buy).any() and (click > cart).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_label_rates_in_documented_ranges(seed: int) -> None:
    table = generate_synthetic(SyntheticConfig(seed=seed))
    overall = summarise(table).filter(pl.col("region") == "all").row(0, named=True)
    assert 0.20 <= overall["click"] <= 0.30
    assert 0.08 <= overall["add_to_cart"] <= 0.12
    assert 0.04 <= overall["purchase"] <= 0.06
    assert overall["queries_with_purchase"] >= 0.60


def test_generation_is_fast_at_default_size() -> None:
    start = time.perf_counter()
    generate_synthetic(SyntheticConfig(seed=3))
    assert time.perf_counter() - start < 2.0


def parse_and_match(query: str, row: dict) -> tuple[str | None, int, int]:
    """Re-derives from the *text* (query category, matched, mismatched stated attributes)."""
    categories = [c for c in CATEGORY_NAMES if c in query]
    assert len(categories) == 1, query
    words = set(re.findall(r"[a-z0-9-]+", query))
    checks = [c == row["product_color"] for c in words & set(COLORS)]
    checks += [b == row["product_brand"].lower() for b in words & {b.lower() for b in BRANDS}]
    if words & {"cheap", "budget", "affordable"}:
        checks.append(row["price_band"] == "budget")
    if words & {"premium", "high-end"}:
        checks.append(row["price_band"] == "premium")
    if categories[0] == row["product_category"]:
        spec = CATEGORIES[CATEGORY_NAMES.index(categories[0])]
        for size in spec.sizes:
            if re.search(rf"(?<![\w-]){re.escape(spec.size_text(size))}(?![\w-])", query):
                checks.append(size == row["product_size"])
    return categories[0], sum(checks), len(checks) - sum(checks)


def test_relevance_grades_mean_what_they_say(default_table: pl.DataFrame) -> None:
    related = {frozenset(pair) for pair in RELATED_CATEGORIES}
    seen = dict.fromkeys(range(4), 0)
    for row in default_table.iter_rows(named=True):
        grade = int(row["relevance"])
        seen[grade] += 1
        category, matched, mismatched = parse_and_match(row["query"], row)
        if grade >= 2:  # same category: the query's category words are in the title
            assert category == row["product_category"] and category in row["product_title"]
        if grade == 3:
            assert mismatched == 0, (row["query"], row)
        elif grade == 2:
            assert mismatched > 0 and matched >= 1 and 2 * matched >= matched + mismatched
        elif grade == 1 and category == row["product_category"]:
            assert mismatched > 0 and (matched == 0 or 2 * matched < matched + mismatched)
        elif grade == 1:
            assert frozenset((category, row["product_category"])) in related
        else:
            assert category != row["product_category"]
            assert frozenset((category, row["product_category"])) not in related
    assert min(seen.values()) > 1000, seen


def test_relevance_does_not_depend_on_region(default_table: pl.DataFrame) -> None:
    pairs = default_table.group_by("query", "product_id").agg(
        pl.col("relevance").n_unique().alias("grades"), pl.col("region").n_unique().alias("regions")
    )
    assert pairs.filter(pl.col("regions") > 1).height > 50  # shared vocabulary across regions
    assert (pairs["grades"] == 1).all()


def region_ndcg(table: pl.DataFrame, config: SyntheticConfig) -> dict[str, tuple[float, float]]:
    """Per region: mean purchase-NDCG@10 of the region-aware and region-blind oracles."""
    table = table.with_columns(
        pl.Series("aware", expected_purchase_probability(table, config, region_aware=True)),
        pl.Series("blind", expected_purchase_probability(table, config, region_aware=False)),
    )
    out = {}
    for region in config.region_names:
        part = table.filter(pl.col("region") == region)
        aware, blind, buy = as_lists(part, config.list_size, "aware", "blind", "purchase")
        bought = buy.sum(axis=1) > 0
        assert bought.sum() >= 100
        gains = buy[bought].astype(np.float64)
        out[region] = (
            float(ndcg_at_k(aware[bought], gains).mean()),
            float(ndcg_at_k(blind[bought], gains).mean()),
        )
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_region_aware_oracle_ranks_purchases_better_in_every_region(seed: int) -> None:
    config = SyntheticConfig(seed=seed)
    scores = region_ndcg(generate_synthetic(config), config)
    for region, (aware, blind) in scores.items():
        assert aware - blind > 0.02, (region, aware, blind)


def test_region_blind_oracle_ignores_region_and_aware_uses_it() -> None:
    table = generate_synthetic(SMALL)
    moved = table.with_columns(pl.lit("apac").alias("region"))
    np.testing.assert_allclose(
        expected_purchase_probability(table, SMALL, region_aware=False),
        expected_purchase_probability(moved, SMALL, region_aware=False),
    )
    aware = expected_purchase_probability(table, SMALL)
    assert not np.allclose(aware, expected_purchase_probability(moved, SMALL))
    stages = stage_probabilities(table, SMALL)
    np.testing.assert_allclose(aware, stages.click * stages.add_to_cart * stages.purchase)
    assert ((aware >= 0) & (aware <= 1)).all()


def test_click_rate_falls_with_position_in_every_region(default_table: pl.DataFrame) -> None:
    rates = default_table.group_by("region", "position").agg(pl.col("click").mean())
    for region in ("na", "eu", "apac"):
        part = rates.filter(pl.col("region") == region)
        top = part.filter(pl.col("position") == 1)["click"].item()
        tenth = part.filter(pl.col("position") == 10)["click"].item()
        assert top > tenth + 0.1, (region, top, tenth)


def test_favoured_brand_converts_best_in_its_own_region(default_table: pl.DataFrame) -> None:
    config = SyntheticConfig()
    rates = default_table.group_by("region", "product_brand").agg(pl.col("purchase").mean())
    rate = {(r, b): p for r, b, p in rates.rows()}
    for profile in config.regions:
        favourite = max(profile.brand_affinity, key=profile.brand_affinity.get)
        for other in config.region_names:
            if other != profile.name:
                assert rate[(profile.name, favourite)] > rate[(other, favourite)], (
                    profile.name,
                    favourite,
                    other,
                )


def test_cart_and_purchase_differ_more_across_regions_than_click(
    default_table: pl.DataFrame,
) -> None:
    # SEQ+MD: click behaviour is similar across markets, conversion is not. Compare how much the
    # true per-row probabilities move when the same rows are placed in each region.
    config = SyntheticConfig()
    stages = {r: stage_probabilities(default_table, config, region=r) for r in config.region_names}
    click = np.stack([s.click for s in stages.values()])
    cart = np.stack([s.add_to_cart for s in stages.values()])

    def spread(p: np.ndarray) -> float:  # mean coefficient of variation over regions
        return float((p.std(axis=0) / p.mean(axis=0)).mean())

    assert spread(cart) > 3 * spread(click)


def test_write_synthetic_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "synthetic.parquet"
    table = write_synthetic(SMALL, path)
    assert pl.read_parquet(path).equals(table)


def test_cli_writes_file_and_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "out.parquet"
    assert main(["--out", str(path), "--num-queries", "30", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    table = pl.read_parquet(path)
    assert table.height == 30 * 20 and table["query_id"].n_unique() == 30
    assert "600 rows, 30 queries" in printed
    for word in ("na", "eu", "apac", "click", "add_to_cart", "purchase"):
        assert word in printed


def test_config_accepts_names_and_mappings_and_rejects_nonsense() -> None:
    config = SyntheticConfig(
        regions=["eu", {"name": "latam", "examination_eta": 0.5, "brand_affinity": {"Kuma": 1}}],
        num_queries=20,
        num_products=200,
    )
    assert config.region_names == ("eu", "latam")
    assert isinstance(config.regions[1], RegionProfile)
    table = generate_synthetic(config)
    assert table.group_by("region").len().sort("region").rows() == [("eu", 200), ("latam", 200)]
    with pytest.raises(ValueError, match="unknown region"):
        SyntheticConfig(regions=("mars",))
    with pytest.raises(ValueError, match="unique"):
        SyntheticConfig(regions=("eu", "eu"))
    with pytest.raises(ValueError, match="num_products"):
        SyntheticConfig(num_products=10)
    with pytest.raises(ValueError, match="examination_eta"):
        RegionProfile(name="x", examination_eta=0.0)
    with pytest.raises(ValueError, match=r"not in config\.regions"):
        expected_purchase_probability(generate_synthetic(SMALL), replace(SMALL, regions=("eu",)))
