"""CrowdFlower Search Results Relevance (Kaggle, 2015) -> canonical table.

``train.csv`` (utf-8): ``id, query, product_title, product_description, median_relevance,
relevance_variance`` where median_relevance is the median crowd rating on 1 .. 4 (4 = perfect).

Mapping:
    * ``query_id = query`` (the file has no query ids; one query text is one list),
    * ``product_id = product_title``: the file has no product ids and the title is what the
      raters judged,
    * ``relevance = (median_relevance - 1) / 3`` in [0, 1]; the rating kept in ``rating``,
    * ``region`` = a config value (default ``"crowdflower"``).

Duplicates: the same (query, title) occurs more than once (in the development copy in
``../shared/data/crowdflower``: 440 of 7,373 rows in 211 pairs, 63 of them with different
ratings, some with different or missing descriptions). They are merged into one row with the
ratings *averaged* and the first non-empty description; the removed rows and the queries touched
are counted in the drop report (printed, and in ``metrics.json``).

Some descriptions carry mojibake from the original scrape (``dÃ©cor``); they are kept as is.

The data is Kaggle competition data (non-commercial research use, no redistribution): download
``train.csv`` from the competition page and point ``data.source.path`` at it.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data_modules.adapters._common import text
from data_modules.adapters.base import GradedCsvAdapter


class CrowdFlowerSource(GradedCsvAdapter):
    """CrowdFlower ``train.csv`` as a canonical table with graded ``relevance`` gains.

    Args:
        path: The ``train.csv`` file.
        region: Value of the ``region`` column.
        encoding: CSV encoding (the original is utf-8).
        max_queries: Keep this many queries, chosen with ``seed`` (``None``: all).
        seed: Seed of that choice.
    """

    kind = "crowdflower"
    label = "median_relevance"
    rating_range = (1.0, 4.0)
    columns = ("query", "product_title", "median_relevance")
    text_columns = ("id", "query", "product_title", "product_description")
    duplicate_reason = "repeated (query, product title) rows merged, ratings averaged"

    def __init__(
        self,
        path: str | Path,
        region: str = "crowdflower",
        encoding: str = "utf8",
        max_queries: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(path, region, encoding, max_queries, seed)

    def _columns(self, df: pl.DataFrame) -> list[pl.Expr]:
        description = (
            text("product_description")
            if "product_description" in df.columns
            else pl.lit(None, dtype=pl.Utf8)
        )
        return [
            text("query").alias("query"),
            text("product_title").alias("product_title"),
            # Empty descriptions become null so that merging picks a non-empty one.
            description.replace("", None).alias("product_description"),
        ]

    def _derived(self) -> list[pl.Expr]:
        # No product ids in the file: the title is what the raters judged.
        return [pl.col("product_title").alias("product_id")]
