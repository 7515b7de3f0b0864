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

from data_modules.adapters._common import (
    graded_gain,
    merge_duplicates,
    require_columns,
    text,
    with_file_rows,
)
from data_modules.adapters.base import Adapter
from data_modules.sources import check_path, read_table

COLUMNS = ("id", "product_uid", "product_title", "search_term", "relevance")
RATING_RANGE = (1.0, 3.0)


class HomeDepotSource(Adapter):
    """Home Depot ``train.csv`` as a canonical table with graded ``relevance`` gains.

    Args:
        path: The ``train.csv`` file.
        region: Value of the ``region`` column.
        encoding: CSV encoding (the original is latin-1).
        max_queries: Keep this many queries, chosen with ``seed`` (``None``: all).
        seed: Seed of that choice.
    """

    def __init__(
        self,
        path: str | Path,
        region: str = "homedepot",
        encoding: str = "latin-1",
        max_queries: int | None = None,
        seed: int = 0,
    ) -> None:
        self.path = check_path(path, "data.source.path")
        self.region = str(region)
        self.encoding = encoding
        super().__init__(f"homedepot({self.path})", max_queries, seed)

    def _read(self) -> pl.DataFrame:
        source = str(self.path)
        df = read_table(self.path, self.encoding, key="data.source.path")
        require_columns(df, source, COLUMNS)
        df = with_file_rows(df)
        gain = graded_gain(df, source, "relevance", *RATING_RANGE)
        table = df.select(
            text("search_term").alias("query"),
            pl.col("product_uid").cast(pl.Utf8).alias("product_id"),
            text("product_title").alias("product_title"),
            pl.lit(self.region).alias("region"),
            gain,
            pl.col("relevance").cast(pl.Float64).alias("rating"),
        ).with_columns(pl.col("query").alias("query_id"))
        table = merge_duplicates(
            table,
            ["query_id", "product_id"],
            ["relevance", "rating"],
            self.report,
            "repeated (query, product) rows merged, ratings averaged",
        )
        return table.select("query_id", pl.exclude("query_id"))
