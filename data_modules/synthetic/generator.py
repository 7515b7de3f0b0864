"""Assembles catalogue, queries and engagement into the canonical table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from data_modules.synthetic.catalogue import BRANDS, CATEGORY_NAMES, COLORS, SIZES, build_catalogue
from data_modules.synthetic.config import SyntheticConfig
from data_modules.synthetic.engagement import logging_positions, simulate_engagement
from data_modules.synthetic.queries import build_queries, grade_relevance
from data_modules.synthetic.regions import PRICE_BANDS

#: Output columns in order: the canonical schema, then the synthetic extras.
COLUMNS: tuple[str, ...] = (
    "query_id", "query", "product_id", "product_title", "product_description", "product_brand",
    "product_color", "region", "position", "relevance", "click", "add_to_cart", "purchase",
    "product_category", "product_size", "price_band", "price",
)  # fmt: skip


def _names(vocabulary: tuple[str, ...], codes: np.ndarray) -> pl.Series:
    """Decodes integer codes (``-1`` -> ``""``) into a string Series."""
    table = np.array([*vocabulary, ""], dtype=object)
    return pl.Series(table[codes].tolist(), dtype=pl.String)


def generate_synthetic(config: SyntheticConfig | None = None) -> pl.DataFrame:
    """Generates the synthetic multi-region search log.

    One row per (query, candidate product) impression, ``config.list_size`` rows per query, rows
    of a query in random (not display) order. Catalogue, queries and engagement use independent
    random streams spawned from ``config.seed``, so, e.g., changing ``num_queries`` keeps the
    catalogue.

    Args:
        config: Generator config; defaults to :class:`SyntheticConfig()`.

    Returns:
        A polars DataFrame with :data:`COLUMNS` (schema.py types; relevance holds the integer
        grades 0..3 as Float64).
    """
    config = config or SyntheticConfig()
    catalogue_seed, query_seed, engagement_seed = np.random.SeedSequence(config.seed).spawn(3)
    catalogue = build_catalogue(config.num_products, np.random.default_rng(catalogue_seed))
    queries = build_queries(
        catalogue,
        config.regions,
        config.num_queries,
        config.list_size,
        config.candidate_mix,
        np.random.default_rng(query_seed),
        anchor_affinity_weight=config.anchor_affinity_weight,
    )
    engagement_rng = np.random.default_rng(engagement_seed)

    num_queries, list_size = queries.candidates.shape
    row_query = np.repeat(np.arange(num_queries), list_size)
    product = queries.candidates.reshape(-1)
    relevance = grade_relevance(queries.attributes.take(row_query), catalogue, product)
    position = logging_positions(
        relevance.reshape(num_queries, list_size).astype(np.float64),
        config.logging_noise,
        engagement_rng,
    ).reshape(-1)
    region_names = np.array(config.region_names, dtype=object)

    table = pl.DataFrame(
        {
            "query_id": pl.Series(queries.query_id[row_query].tolist(), dtype=pl.String),
            "query": pl.Series(queries.text[row_query].tolist(), dtype=pl.String),
            "product_id": pl.Series(catalogue.product_id[product].tolist(), dtype=pl.String),
            "product_title": pl.Series(catalogue.title[product].tolist(), dtype=pl.String),
            "product_description": pl.Series(
                catalogue.description[product].tolist(), dtype=pl.String
            ),
            "product_brand": _names(BRANDS, catalogue.brand[product]),
            "product_color": _names(COLORS, catalogue.color[product]),
            "region": pl.Series(region_names[queries.region[row_query]].tolist(), dtype=pl.String),
            "position": pl.Series(position, dtype=pl.Int64),
            "relevance": pl.Series(relevance, dtype=pl.Float64),
            "product_category": _names(CATEGORY_NAMES, catalogue.category[product]),
            "product_size": _names(SIZES, catalogue.size[product]),
            "price_band": _names(PRICE_BANDS, catalogue.band[product]),
            "price": pl.Series(catalogue.price[product], dtype=pl.Float64),
        }
    )
    labels = simulate_engagement(table, config, engagement_rng)
    table = table.with_columns(pl.Series(k, v, dtype=pl.Int64) for k, v in labels.items())
    return table.select(COLUMNS)


def write_synthetic(config: SyntheticConfig | None, path: str | Path) -> pl.DataFrame:
    """Generates the table and writes it to ``path`` as parquet (parent dirs are created).

    Returns:
        The generated table.
    """
    table = generate_synthetic(config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.write_parquet(path)
    return table


def summarise(table: pl.DataFrame) -> pl.DataFrame:
    """Per-region label rates: rows, queries, click/cart/purchase rates, share of queries bought.

    Returns:
        One row per region plus a final ``"all"`` row.
    """
    per_query = table.group_by("region", "query_id").agg(pl.col("purchase").max().alias("bought"))

    def rates(frame: pl.DataFrame, queries: pl.DataFrame) -> dict[str, float | int]:
        return {
            "rows": frame.height,
            "queries": queries.height,
            "click": frame["click"].mean(),
            "add_to_cart": frame["add_to_cart"].mean(),
            "purchase": frame["purchase"].mean(),
            "queries_with_purchase": queries["bought"].mean(),
        }

    rows = []
    for region in table["region"].unique(maintain_order=True).to_list():
        part = rates(
            table.filter(pl.col("region") == region),
            per_query.filter(pl.col("region") == region),
        )
        rows.append({"region": region, **part})
    rows.append({"region": "all", **rates(table, per_query)})
    return pl.DataFrame(rows)
