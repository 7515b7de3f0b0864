"""Engagement logs (parquet or CSV) -> canonical table.

A generic log of search impressions: one row per (query, product) shown, with any of ``click``,
``add_to_cart``, ``purchase`` (0/1 or booleans) and optionally ``position`` and ``region``.
Columns named differently are mapped with ``rename`` (``{in file: canonical}``), as for
``data=file``.

Beyond :class:`data_modules.sources.FileSource` this adapter

* derives ``query_id`` from the query text when the log has none,
* fills ``region`` from a config value when the log covers one market,
* casts boolean labels to 0/1,
* optionally merges repeated impressions of a (query_id, product_id) pair (``duplicates: max``:
  a label is 1 if any impression had it, position is the best one), counting merged rows in the
  drop report; the default ``error`` leaves them to validation, which stops on them.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data_modules.adapters.base import Adapter
from data_modules.errors import ConfigError, DataValidationError
from data_modules.schema import ENGAGEMENT_LABELS, POSITION_COLUMN
from data_modules.sources import (
    apply_rename,
    canonical_text_columns,
    check_encoding,
    check_path,
    read_table,
)
from data_modules.validation import require_columns

DUPLICATE_POLICIES = ("error", "max")


class LogsSource(Adapter):
    """An engagement log file as a canonical table.

    Args:
        path: Parquet or CSV/TSV file.
        encoding: CSV encoding.
        rename: ``{column in file: canonical column}`` applied first.
        region: Region of every row when the file has no ``region`` column (``None``: the
            column is required).
        duplicates: ``"error"`` (validation stops on a repeated pair) or ``"max"`` (merge them).
        max_queries: Keep this many queries, chosen with ``seed`` (``None``: all).
        seed: Seed of that choice.
    """

    def __init__(
        self,
        path: str | Path,
        encoding: str = "utf8",
        rename: dict[str, str] | None = None,
        region: str | None = None,
        duplicates: str = "error",
        max_queries: int | None = None,
        seed: int = 0,
    ) -> None:
        self.path = check_path(path, "data.source.path")
        self.encoding = check_encoding(encoding, "data.source.encoding")
        self.rename = dict(rename or {})
        self.region = region
        if duplicates not in DUPLICATE_POLICIES:
            raise ConfigError(
                f"data.source.duplicates must be one of {list(DUPLICATE_POLICIES)}, "
                f"got {duplicates!r}"
            )
        self.duplicates = duplicates
        super().__init__(f"logs({self.path})", max_queries, seed)

    def _read(self) -> pl.DataFrame:
        source = str(self.path)
        df = read_table(
            self.path,
            self.encoding,
            "data.source.path / data.source.encoding",
            canonical_text_columns(self.rename),
        )
        df = apply_rename(df, self.rename, source)
        require_columns(df, source, ["query", "product_id", "product_title"])
        labels = [c for c in ENGAGEMENT_LABELS if c in df.columns]
        if not labels:
            raise DataValidationError(
                f"{source}: no engagement column ({', '.join(ENGAGEMENT_LABELS)}); columns "
                f"found: {', '.join(df.columns)} (map yours with data.source.rename)"
            )
        if "region" not in df.columns:
            if self.region is None:
                raise DataValidationError(
                    f"{source}: missing column 'region'; set data.source.region to the one "
                    "region of this file, or map a column with data.source.rename"
                )
            df = df.with_columns(pl.lit(str(self.region)).alias("region"))
        if "query_id" not in df.columns:
            df = df.with_columns(pl.col("query").cast(pl.Utf8).alias("query_id"))
        df = df.with_columns(pl.col(c).cast(pl.Int64) for c in labels if df.schema[c] == pl.Boolean)
        if self.duplicates == "max":
            df = self._merge(df, labels)
        return df.select("query_id", pl.exclude("query_id"))

    def _merge(self, df: pl.DataFrame, labels: list[str]) -> pl.DataFrame:
        keys = ["query_id", "product_id"]
        duplicated = df.select(pl.struct(*keys).is_duplicated()).to_series()
        n_dup = int(duplicated.sum())
        if n_dup == 0:
            return df
        groups = df.filter(duplicated).select(keys).n_unique()
        self.report.add(
            "repeated (query_id, product_id) impressions merged (labels: max, position: min)",
            n_dup - groups,
            df.filter(duplicated).get_column("query_id").n_unique(),
        )
        aggregated = {c: pl.col(c).max() for c in labels}
        if POSITION_COLUMN in df.columns:
            aggregated[POSITION_COLUMN] = pl.col(POSITION_COLUMN).min()
        others = [c for c in df.columns if c not in keys and c not in aggregated]
        merged = df.group_by(keys, maintain_order=True).agg(
            *aggregated.values(), *[pl.col(c).drop_nulls().first() for c in others]
        )
        return merged.select(df.columns)
