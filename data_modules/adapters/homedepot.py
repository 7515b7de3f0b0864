"""Home Depot Product Search Relevance (Kaggle, 2016) -> canonical table.

``train.csv`` (latin-1): ``id, product_uid, product_title, search_term, relevance`` where
relevance is the mean of at least three crowd ratings on 1 (irrelevant) .. 3 (exact match).

Mapping:
    * ``query = search_term`` (stripped), ``query_id = query`` (the file has no query ids; one
      query text is one list),
    * ``product_id = product_uid``, ``product_title`` with HTML entities decoded (``&amp;``),
    * ``relevance = (rating - 1) / 2`` in [0, 1], the raw mean kept in ``rating``,
    * ``region`` = a config value (default ``"homedepot"``).

Repeated (query, product) rows, if any, are merged with their ratings averaged and counted in
the drop report (the development copy in ``../shared/data/homedepot`` has none: 59,262 rows,
9,435 queries, 45,755 products).

The data is Kaggle competition data (non-commercial research use, no redistribution): download
``train.csv`` from the competition page and point ``data.source.path`` at it.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data_modules.adapters._common import text
from data_modules.adapters.base import GradedCsvAdapter


class HomeDepotSource(GradedCsvAdapter):
    """Home Depot ``train.csv`` as a canonical table with graded ``relevance`` gains.

    Args:
        path: The ``train.csv`` file.
        region: Value of the ``region`` column.
        encoding: CSV encoding (the original is latin-1).
        max_queries: Keep this many queries, chosen with ``seed`` (``None``: all).
        seed: Seed of that choice.
    """

    kind = "homedepot"
    label = "relevance"
    rating_range = (1.0, 3.0)
    columns = ("id", "product_uid", "product_title", "search_term", "relevance")
    text_columns = ("id", "product_uid", "product_title", "search_term")

    def __init__(
        self,
        path: str | Path,
        region: str = "homedepot",
        encoding: str = "latin-1",
        max_queries: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(path, region, encoding, max_queries, seed)

    def _columns(self, df: pl.DataFrame) -> list[pl.Expr]:
        return [
            text("search_term").alias("query"),
            pl.col("product_uid").cast(pl.Utf8).alias("product_id"),
            text("product_title").alias("product_title"),
        ]
