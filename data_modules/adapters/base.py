"""Base class of the dataset adapters: read -> canonical table, optional query subsample, report."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data_modules.adapters._common import (
    graded_gain,
    merge_duplicates,
    sample_queries,
    with_file_rows,
)
from data_modules.sources import check_encoding, check_path, read_table
from data_modules.validation import DropReport, require_columns


class Adapter:
    """A :class:`data_modules.sources.TableSource` for one dataset layout.

    Subclasses implement :meth:`_read` (file(s) -> canonical table, recording merged or removed
    rows in ``self.report``); :meth:`load` adds the optional query subsample.

    Args:
        name: Source name quoted in messages and reports.
        max_queries: Keep this many query_ids, chosen at random with ``seed`` (``None``: all);
            for quick experiments on a slice of a large dataset.
        seed: Seed of that choice.
    """

    def __init__(self, name: str, max_queries: int | None = None, seed: int = 0) -> None:
        self.name = name
        self.max_queries = max_queries
        self.seed = seed
        self.report = DropReport(name)

    def load(self) -> pl.DataFrame:
        """The canonical table (see :mod:`data_modules.schema`)."""
        self.report = DropReport(self.name)
        table = self._read()
        return sample_queries(
            table, self.max_queries, self.seed, self.report, "data.source.max_queries"
        )

    def _read(self) -> pl.DataFrame:
        raise NotImplementedError


class GradedCsvAdapter(Adapter):
    """A crowd-rated relevance CSV (Kaggle layouts): one file, one region, ratings -> gains.

    Subclasses set ``label`` (the rating column), ``rating_range`` (min, max), ``columns``
    (required), ``kind`` (name prefix), ``duplicate_reason`` and implement :meth:`_columns`
    (query, product_title, more text; product_id unless :meth:`_derived` gives it); this class
    reads and checks the file, adds ``relevance = (rating - min) / (max - min)``, the raw
    ``rating``, the region and ``query_id = query`` (these files have no query ids: one query
    text is one list), and merges repeated (query_id, product_id) rows with ratings averaged
    (reported).

    Args:
        path: The CSV file.
        region: Value of the ``region`` column.
        encoding: CSV encoding.
        max_queries: Keep this many queries, chosen with ``seed`` (``None``: all).
        seed: Seed of that choice.
    """

    kind = ""
    label = ""
    rating_range: tuple[float, float] = (0.0, 1.0)
    columns: tuple[str, ...] = ()
    # Columns read as text whatever they look like (ids such as 00025 keep their zeros).
    text_columns: tuple[str, ...] = ()
    duplicate_reason = "repeated (query, product) rows merged, ratings averaged"

    def __init__(
        self,
        path: str | Path,
        region: str,
        encoding: str,
        max_queries: int | None = None,
        seed: int = 0,
    ) -> None:
        self.path = check_path(path, "data.source.path")
        self.region = str(region)
        self.encoding = check_encoding(encoding, "data.source.encoding")
        super().__init__(f"{self.kind}({self.path})", max_queries, seed)

    def _columns(self, df: pl.DataFrame) -> list[pl.Expr]:
        """Expressions on the file's columns: query, product_title (product_id, more text)."""
        raise NotImplementedError

    def _derived(self) -> list[pl.Expr]:
        """Columns computed from :meth:`_columns`' output (e.g. a product_id from the title)."""
        return []

    def _read(self) -> pl.DataFrame:
        source = str(self.path)
        df = read_table(self.path, self.encoding, "data.source.path", self.text_columns)
        require_columns(df, source, self.columns)
        df = with_file_rows(df)
        table = df.select(
            *self._columns(df),
            pl.lit(self.region).alias("region"),
            graded_gain(df, source, self.label, *self.rating_range),
            pl.col(self.label).cast(pl.Float64).alias("rating"),
        ).with_columns(pl.col("query").alias("query_id"), *self._derived())
        table = merge_duplicates(
            table,
            ["query_id", "product_id"],
            ["relevance", "rating"],
            self.report,
            self.duplicate_reason,
        )
        return table.select(
            "query_id", "query", "product_id", pl.exclude("query_id", "query", "product_id")
        )
