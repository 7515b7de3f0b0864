"""Tests of the engagement simulator (data_modules.engagement)."""

from __future__ import annotations

import math
import time

import numpy as np
import polars as pl
import pytest

from data_modules.engagement import (
    OUTPUT_COLUMNS,
    EngagementSimulator,
    RegionParams,
    engagement_probabilities,
    examination_probability,
    logging_positions,
    resolve_regions,
    stage_probability,
)
from data_modules.engagement.draws import query_generator
from data_modules.errors import ConfigError, DataValidationError
from experiments.workflows.config import plain

REGIONS = ("homedepot", "crowdflower", "us", "es", "jp")


def graded_table(num_queries: int, list_size: int, seed: int = 0) -> pl.DataFrame:
    """Queries over the configured regions with ESCI-like gains (1, 0.1, 0.01, 0) and text ids."""
    rng = np.random.default_rng(seed)
    n = num_queries * list_size
    query = np.repeat(np.arange(num_queries), list_size)
    return pl.DataFrame(
        {
            "query_id": [f"q{q}" for q in query],
            "product_id": [f"p{i}" for i in rng.permutation(n)],
            "region": np.array(REGIONS)[query % len(REGIONS)].tolist(),
            "relevance": rng.choice([1.0, 0.1, 0.01, 0.0], size=n),
            "query": "text",  # an unrelated column, passed through untouched
        }
    )


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return graded_table(200, 12)


@pytest.fixture(scope="module")
def simulator() -> EngagementSimulator:
    return EngagementSimulator(seed=3)


def labels_by_item(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("query_id", "product_id", *OUTPUT_COLUMNS).sort("query_id", "product_id")


# ----------------------------------------------------------------------------- output and cascade


def test_output_keeps_rows_and_adds_nested_int64_labels(table, simulator) -> None:
    out = simulator.apply(table, "t")
    assert out.columns == [*table.columns, *OUTPUT_COLUMNS]
    assert out.select(table.columns).equals(table)  # same rows, same order, same values
    assert all(out.schema[c] == pl.Int64 for c in OUTPUT_COLUMNS)
    for column in ("click", "add_to_cart", "purchase"):
        assert set(out[column].unique().to_list()) <= {0, 1}
    assert (out["add_to_cart"] <= out["click"]).all()
    assert (out["purchase"] <= out["add_to_cart"]).all()
    assert out["purchase"].sum() > 0  # the cascade reaches its last stage on this table
    positions = out.group_by("query_id").agg(pl.col("position").sort())
    assert all(p == list(range(1, 13)) for p in positions["position"].to_list())


def test_labels_follow_the_documented_draws_exactly() -> None:
    """Reference: positions and labels rebuilt by hand from one query's own generator."""
    relevance = np.array([0.3, 1.0, 0.0, 0.6, 0.6])
    products = ["e", "a", "d", "b", "c"]  # draws are assigned in product_id order: a, b, c, d, e
    table = pl.DataFrame(
        {"query_id": "q7", "product_id": products, "region": "jp", "relevance": relevance}
    )
    sim = EngagementSimulator(seed=11, logging_noise=0.4)
    out = sim.apply(table, "t")

    order = np.argsort(products)  # row of the item with the k-th smallest product_id
    rng = query_generator(11, "q7")
    normal, uniform = rng.standard_normal(5), rng.random((4, 5))
    score = np.empty(5)
    score[order] = relevance[order] + 0.4 * normal
    position = np.empty(5, dtype=np.int64)
    position[np.argsort(-score, kind="stable")] = np.arange(1, 6)
    u = np.empty((4, 5))
    u[:, order] = uniform
    p = engagement_probabilities(position, relevance, np.array(["jp"] * 5), sim.regions)
    click = (u[0] < p.examination) & (u[1] < p.click_given_examination)
    cart = click & (u[2] < p.add_to_cart_given_click)
    purchase = cart & (u[3] < p.purchase_given_add_to_cart)

    assert out["position"].to_list() == position.tolist()
    assert out["click"].to_list() == click.astype(int).tolist()
    assert out["add_to_cart"].to_list() == cart.astype(int).tolist()
    assert out["purchase"].to_list() == purchase.astype(int).tolist()


# ---------------------------------------------------------------------------------- determinism


def test_same_seed_identical_different_seed_differs(table) -> None:
    first = EngagementSimulator(seed=5).apply(table, "t")
    assert first.equals(EngagementSimulator(seed=5).apply(table, "t"))
    other = EngagementSimulator(seed=6).apply(table, "t")
    assert first["click"].to_list() != other["click"].to_list()
    assert first["position"].to_list() != other["position"].to_list()


def test_a_query_does_not_depend_on_other_queries_or_row_order(table, simulator) -> None:
    full = labels_by_item(simulator.apply(table, "t"))
    kept = [f"q{i}" for i in range(0, 200, 7)]
    subset = table.filter(pl.col("query_id").is_in(kept))
    alone = labels_by_item(simulator.apply(subset, "t"))
    assert alone.equals(full.filter(pl.col("query_id").is_in(kept)))
    shuffled = table.sample(fraction=1.0, shuffle=True, seed=1)
    assert labels_by_item(simulator.apply(shuffled, "t")).equals(full)


def test_without_item_key_row_order_within_a_query_decides(table) -> None:
    sim = EngagementSimulator(seed=3, item_key=None)
    base = sim.apply(table.drop("product_id"), "t")
    # Queries reversed, each query's rows kept in order: labels unchanged.
    reordered = table.with_row_index("i").sort(["query_id", "i"], descending=[True, False])
    again = sim.apply(reordered.drop("product_id"), "t")
    assert again.sort("i").drop("i").equals(base)


def test_query_id_is_read_as_text() -> None:
    ints = pl.DataFrame(
        {"query_id": [5, 5, 5], "product_id": [1, 2, 10], "region": "us", "relevance": 0.5}
    )
    strings = ints.with_columns(pl.col("query_id", "product_id").cast(pl.Utf8))
    sim = EngagementSimulator(seed=2, logging_noise=0.0)
    assert (
        sim.apply(ints, "t")
        .select(OUTPUT_COLUMNS)
        .equals(sim.apply(strings, "t").select(OUTPUT_COLUMNS))
    )
    # Ties are broken by the item key as text: "1" < "10" < "2".
    assert sim.apply(ints, "t")["position"].to_list() == [1, 3, 2]


# ------------------------------------------------------------------------- exact probabilities


def test_examination_and_stage_reference_values() -> None:
    np.testing.assert_allclose(
        examination_probability(np.array([1, 2, 4, 9]), 0.5), [1.0, 1 / math.sqrt(2), 0.5, 1 / 3]
    )
    np.testing.assert_allclose(examination_probability(np.array([1, 7]), 0.0), [1.0, 1.0])
    np.testing.assert_allclose(
        stage_probability(np.array([0.0, 0.25, 1.0]), 0.1, 0.9), [0.1, 0.3, 0.9]
    )


def test_engagement_probabilities_exact_values() -> None:
    regions = {"default": RegionParams(0.5, 0.1, 0.9, 0.2, 0.6, 0.5, 1.0)}
    p = engagement_probabilities(
        np.array([1, 4]), np.array([1.0, 0.5]), np.array(["x", "y"]), regions
    )
    np.testing.assert_allclose(p.examination, [1.0, 0.5])
    np.testing.assert_allclose(p.click_given_examination, [0.9, 0.5])
    np.testing.assert_allclose(p.add_to_cart_given_click, [0.6, 0.4])
    np.testing.assert_allclose(p.purchase_given_add_to_cart, [1.0, 0.75])
    np.testing.assert_allclose(p.click, [0.9, 0.25])
    np.testing.assert_allclose(p.add_to_cart, [0.54, 0.1])
    np.testing.assert_allclose(p.purchase, [0.54, 0.075])


def test_relevance_power_bends_every_stage_exactly() -> None:
    regions = {"default": RegionParams(0.5, 0.1, 0.9, 0.2, 0.6, 0.5, 1.0, relevance_power=3.0)}
    p = engagement_probabilities(
        np.array([1, 4]), np.array([1.0, 0.5]), np.array(["x", "y"]), regions
    )
    np.testing.assert_allclose(p.click_given_examination, [0.9, 0.1 + 0.8 / 8])
    np.testing.assert_allclose(p.add_to_cart_given_click, [0.6, 0.2 + 0.4 / 8])
    np.testing.assert_allclose(p.purchase_given_add_to_cart, [1.0, 0.5 + 0.5 / 8])
    with pytest.raises(ConfigError, match=r"regions.default.relevance_power must be > 0"):
        resolve_regions({"default": {"relevance_power": 0}})


def test_click_probability_falls_with_position_at_fixed_relevance() -> None:
    """Equal relevance and no noise: positions follow product_id, P(E) = (1/p)^eta exactly."""
    n = 8
    table = pl.DataFrame(
        {"query_id": "q", "product_id": [f"p{i}" for i in range(n)], "region": "jp"}
    ).with_columns(relevance=pl.lit(0.7))
    sim = EngagementSimulator(seed=0, logging_noise=0.0, regions={"jp": {"eta": 0.8}})
    expected = sim.probabilities(table, "t")
    jp = sim.regions["jp"]
    pos = np.arange(1, n + 1)
    assert expected["position"].to_list() == pos.tolist()
    np.testing.assert_allclose(expected["p_examination"].to_numpy(), pos**-jp.eta)
    click = pos**-jp.eta * (jp.click_low + (jp.click_high - jp.click_low) * 0.7)
    np.testing.assert_allclose(expected["p_click"].to_numpy(), click)
    assert np.all(np.diff(expected["p_click"].to_numpy()) < 0)
    assert np.all(np.diff(expected["p_purchase"].to_numpy()) < 0)


def test_sampled_rates_match_probabilities_within_binomial_error() -> None:
    """4,000 lists of 5 equal-relevance items: each position's rates within 5 standard errors."""
    q, n = 4000, 5
    table = pl.DataFrame(
        {
            "query_id": np.repeat([f"q{i}" for i in range(q)], n),
            "product_id": np.tile([f"p{i}" for i in range(n)], q),
            "region": "us",
            "relevance": 0.8,
        }
    )
    sim = EngagementSimulator(seed=1, logging_noise=0.0)
    out = sim.apply(table, "t").with_columns(sim.probabilities(table, "t").drop("position"))
    rates = out.drop("query_id", "product_id", "region").group_by("position").mean()
    for label in ("click", "add_to_cart", "purchase"):
        p = rates[f"p_{label}"].to_numpy()
        error = np.abs(rates[label].to_numpy() - p)
        assert np.all(error < 5 * np.sqrt(p * (1 - p) / q)), (label, error)


def test_regions_use_their_own_parameters_and_unknown_regions_the_default() -> None:
    regions = resolve_regions(
        {"default": {"eta": 1.0, "purchase_high": 0.5}, "jp": {"eta": 0.0, "purchase_high": 0.9}}
    )
    p = engagement_probabilities(
        np.array([3, 3, 3]), np.array([1.0, 1.0, 1.0]), np.array(["jp", "us", "xx"]), regions
    )
    np.testing.assert_allclose(p.examination, [1.0, 1 / 3, 1 / 3])
    np.testing.assert_allclose(p.purchase_given_add_to_cart, [0.9, 0.5, 0.5])
    np.testing.assert_allclose(p.click_given_examination, RegionParams().click_high)


def test_region_overrides_layer_on_default() -> None:
    regions = resolve_regions({"default": {"click_high": 0.7}, "es": {"eta": 0.9}, "us": {}})
    assert regions["default"] == RegionParams(click_high=0.7)
    assert regions["es"] == RegionParams(click_high=0.7, eta=0.9)
    assert regions["us"] == regions["default"]
    assert resolve_regions(None) == {"default": RegionParams()}


def test_probabilities_rise_with_relevance() -> None:
    gain = np.linspace(0.0, 1.0, 11)
    for name, params in resolve_regions(
        {"jp": {"purchase_low": 0.6, "purchase_high": 0.6}}
    ).items():
        p = engagement_probabilities(np.full(11, 2), gain, np.full(11, name), {"default": params})
        for values in (p.click_given_examination, p.add_to_cart_given_click, p.click):
            assert np.all(np.diff(values) > 0)
        assert np.all(np.diff(p.purchase_given_add_to_cart) >= 0)
        assert np.all(np.diff(p.purchase) > 0)
        np.testing.assert_allclose(p.examination, 2.0**-params.eta)


def test_logging_positions_reference() -> None:
    group = np.array([0, 0, 0, 1, 1, 0])
    score = np.array([0.2, 0.9, 0.2, 0.1, 0.5, 0.2])
    tie = np.array([5, 0, 1, 0, 1, 2])  # among the three 0.2 scores: rows 2, 5, 0
    assert logging_positions(group, score, tie).tolist() == [4, 1, 2, 2, 1, 3]


def test_noise_free_policy_sorts_by_relevance_then_item() -> None:
    table = pl.DataFrame(
        {
            "query_id": "q",
            "product_id": ["c", "a", "b", "d"],
            "region": "es",
            "relevance": [0.1, 0.1, 1.0, 0.0],
        }
    )
    out = EngagementSimulator(seed=0, logging_noise=0.0).apply(table, "t")
    assert out["position"].to_list() == [3, 2, 1, 4]


def test_sixty_thousand_rows_take_well_under_a_few_seconds() -> None:
    big = graded_table(3000, 20)
    start = time.perf_counter()
    EngagementSimulator(seed=0).apply(big, "big")
    assert time.perf_counter() - start < 5.0  # ~0.15 s on an idle 2-core machine


# ------------------------------------------------------------------------------------ overwrite


def test_existing_output_column_is_an_error_unless_overwrite(table) -> None:
    with_click = table.with_columns(click=pl.lit(1))
    with pytest.raises(
        DataValidationError,
        match=r"^t: column\(s\) 'click' already exist.*"
        r"data\.engagement\.overwrite=true",
    ):
        EngagementSimulator().apply(with_click, "t")
    out = EngagementSimulator(overwrite=True, seed=3).apply(with_click, "t")
    expected = EngagementSimulator(seed=3).apply(table, "t")
    assert out.columns == [*table.columns, "click", "position", "add_to_cart", "purchase"]
    assert out.select(expected.columns).equals(expected)


# ------------------------------------------------------------------------------- data errors


def small(**columns) -> pl.DataFrame:
    base = {
        "query_id": ["a", "a", "b", "b"],
        "product_id": ["x", "y", "x", "z"],
        "region": ["us", "us", "jp", "jp"],
        "relevance": [1.0, 0.0, 0.5, 0.1],
    }
    return pl.DataFrame({**base, **columns})


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (small().clear(), r"^src: the table is empty"),
        (small().drop("relevance"), r"^src: .*needs column\(s\) 'relevance'; columns found"),
        (small().drop("query_id", "region"), r"^src: .*column\(s\) 'query_id', 'region';"),
        (small().drop("product_id"), r"^src: .*'product_id' \(or set data\.engagement\.item_key\)"),
        (
            small(relevance=[1.0, None, 0.5, None]),
            r"^src: column 'relevance' has 2 null or NaN "
            r"\(first at row 1, 3\)",
        ),
        (
            small(relevance=[1.0, 0.0, float("nan"), 0.1]),
            r"column 'relevance' has 1 null or NaN "
            r"\(first at row 2\)",
        ),
        (
            small(relevance=[1.5, 0.0, 0.5, -0.1]),
            r"column 'relevance' has 2 values outside "
            r"\[0, 1\].*\(first at row 0, 3\)",
        ),
        (small(relevance=[1.0, float("inf"), 0.5, 0.1]), r"'relevance' has 1 values outside"),
        (
            small(relevance=["1", "high", "0", "0"]),
            r"^src: column 'relevance' has type String "
            r"and cannot be read as Float64",
        ),
        (
            small(query_id=["a", None, "b", "b"]),
            r"^src: column 'query_id' has 1 missing values "
            r"\(first at row 1\)",
        ),
        (small(region=["us", "us", None, None]), r"column 'region' has 2 missing values"),
        (small(product_id=["x", "y", None, "z"]), r"column 'product_id' has 1 missing values"),
    ],
    ids=[
        "empty",
        "no-relevance",
        "no-query-region",
        "no-item-key",
        "null",
        "nan",
        "out-of-range",
        "inf",
        "text",
        "null-query",
        "null-region",
        "null-item",
    ],
)
def test_bad_table_is_named(table, message) -> None:
    with pytest.raises(DataValidationError, match=message):
        EngagementSimulator().apply(table, "src")
    with pytest.raises(DataValidationError, match=message):
        EngagementSimulator().probabilities(table, "src")


# ------------------------------------------------------------------------------ config errors


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"sead": 1},
            r"^data\.engagement\.sead: unknown key; valid keys: item_key, "
            r"logging_noise, overwrite, regions, seed$",
        ),
        ({"seed": -1}, r"data\.engagement\.seed must be a non-negative integer"),
        ({"seed": True}, r"data\.engagement\.seed must be a non-negative integer"),
        ({"seed": "42"}, r"data\.engagement\.seed must be a non-negative integer"),
        ({"logging_noise": -0.1}, r"data\.engagement\.logging_noise must be >= 0"),
        ({"logging_noise": "x"}, r"data\.engagement\.logging_noise must be a number"),
        ({"logging_noise": float("nan")}, r"data\.engagement\.logging_noise must be finite"),
        ({"item_key": ""}, r"data\.engagement\.item_key must be a column name or null"),
        ({"overwrite": "yes"}, r"data\.engagement\.overwrite must be true or false"),
        ({"regions": [1, 2]}, r"data\.engagement\.regions must be a mapping"),
        ({"regions": {"jp": 0.5}}, r"data\.engagement\.regions\.jp must be a mapping"),
        (
            {"regions": {"jp": {"etaa": 1}}},
            r"^data\.engagement\.regions\.jp\.etaa: unknown key; "
            r"valid keys: eta, click_low",
        ),
        ({"regions": {"default": {"eta": -1}}}, r"regions\.default\.eta must be >= 0"),
        ({"regions": {"us": {"eta": "1"}}}, r"regions\.us\.eta must be a number, got '1'"),
        (
            {"regions": {"us": {"click_high": 1.2}}},
            r"regions\.us\.click_high must be a "
            r"probability in \[0, 1\]",
        ),
        (
            {"regions": {"es": {"purchase_low": 0.7, "purchase_high": 0.6}}},
            r"regions\.es\.purchase_low \(0\.7\) > data\.engagement\.regions\.es\.purchase_high",
        ),
        # A default that breaks a region's own values is reported at that region.
        (
            {"regions": {"default": {"add_to_cart_low": 0.3}, "jp": {"add_to_cart_high": 0.2}}},
            r"regions\.jp\.add_to_cart_low \(0\.3\) >",
        ),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_params_are_named(params, message) -> None:
    with pytest.raises(ConfigError, match=message):
        EngagementSimulator(**params)


# ------------------------------------------------------------------------------------- configs


def test_pbm_cascade_config_builds_a_simulator(make_cfg) -> None:
    cfg = make_cfg("+data/engagement=pbm_cascade", "seed=7", tiny=False)
    params = plain(cfg.data.engagement)
    assert params["seed"] == 7
    sim = EngagementSimulator(**params)
    assert set(sim.regions) == {"default", *REGIONS}
    # Regions really differ (the multi-distribution setting), and `us` is the default.
    assert len({sim.regions[r] for r in (*REGIONS, "default")}) == len(REGIONS)
    assert sim.regions["us"] == sim.regions["default"]
    out = sim.apply(graded_table(10, 4), "cfg")
    assert out.height == 40


def test_none_config_sets_engagement_to_null(make_cfg) -> None:
    cfg = make_cfg("+data/engagement=none", tiny=False)
    assert "engagement" in cfg.data and cfg.data.engagement is None
