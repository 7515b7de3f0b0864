"""Helpers shared by the dataset adapters: checks that name file/column/row, merging, sampling."""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence

import numpy as np
import polars as pl

from data_modules.errors import ConfigError, DataValidationError
from data_modules.validation import DropReport

log = logging.getLogger(__name__)

ROW = "__file_row"  # 0-based data row of the file a table was read from (header excluded)


def with_file_rows(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with its 0-based data row number in :data:`ROW`, for error messages."""
    return df.with_row_index(ROW)


def first_rows(df: pl.DataFrame, condition: pl.Expr, limit: int = 3) -> list[int]:
    """The first ``limit`` file rows (:data:`ROW`) where ``condition`` holds."""
    return df.filter(condition).get_column(ROW)[:limit].to_list()


def fail(source: str, column: str, what: str, df: pl.DataFrame, condition: pl.Expr) -> None:
    """Raise :class:`DataValidationError` if ``condition`` holds on any row of ``df``.

    The message names the file, the column, how many rows and the first of them.
    """
    count = df.select(condition.sum()).item()
    if count:
        rows = ", ".join(map(str, first_rows(df, condition)))
        raise DataValidationError(
            f"{source}: column '{column}' has {count} {what} (first at row {rows})"
        )


def numeric(df: pl.DataFrame, source: str, column: str) -> pl.Series:
    """``df[column]`` as Float64, or a :class:`DataValidationError` naming the first bad row."""
    values = df.get_column(column)
    cast = values.cast(pl.Float64, strict=False)
    bad = cast.is_null() & values.is_not_null()
    if bad.any():
        frame = df.with_columns(__bad=bad)
        fail(source, column, "non-numeric values", frame, pl.col("__bad"))
    return cast


def graded_gain(df: pl.DataFrame, source: str, column: str, low: float, high: float) -> pl.Series:
    """Graded labels on ``[low, high]`` mapped linearly to gains in [0, 1].

    ``gain = (label - low) / (high - low)``, so the lowest grade is gain 0 (not relevant).

    Raises:
        DataValidationError: A missing, NaN or out-of-range label, naming file, column and row.
    """
    values = numeric(df, source, column)
    frame = df.with_columns(__label=values)
    fail(source, column, "missing or NaN labels", frame, pl.col("__label").is_null())
    fail(source, column, "missing or NaN labels", frame, pl.col("__label").is_nan())
    out_of_range = (pl.col("__label") < low) | (pl.col("__label") > high)
    fail(source, column, f"labels outside [{low:g}, {high:g}]", frame, out_of_range)
    return ((values - low) / (high - low)).alias("relevance")


def text(column: str) -> pl.Expr:
    """``column`` as stripped Utf8 with HTML entities (``&amp;``, ``&quot;``) decoded."""
    return (
        pl.col(column)
        .cast(pl.Utf8)
        .map_elements(html.unescape, return_dtype=pl.Utf8, skip_nulls=True)
        .str.strip_chars()
    )


def merge_duplicates(
    df: pl.DataFrame,
    keys: Sequence[str],
    mean_columns: Sequence[str],
    report: DropReport,
    reason: str,
) -> pl.DataFrame:
    """Merge rows repeating a ``keys`` pair into one, averaging ``mean_columns``.

    Other columns keep their first non-null value (first in file order). The number of rows
    removed (rows in duplicated groups minus the groups) and of queries touched go into
    ``report`` under ``reason`` and the log, so nothing disappears silently.
    """
    duplicated = df.select(pl.struct(*keys).is_duplicated()).to_series()
    n_dup = int(duplicated.sum())
    if n_dup == 0:
        return df
    groups = df.filter(duplicated).select(keys).n_unique()
    queries = df.filter(duplicated).get_column("query_id").n_unique()
    others = [c for c in df.columns if c not in keys and c not in mean_columns]
    merged = df.group_by(keys, maintain_order=True).agg(
        *[pl.col(c).mean() for c in mean_columns],
        *[pl.col(c).drop_nulls().first() for c in others],
    )
    report.add(reason, n_dup - groups, queries)
    log.info(
        "%s: %d rows in %d duplicated groups merged (%s)", report.source, n_dup, groups, reason
    )
    return merged.select(df.columns)


def sample_queries(
    df: pl.DataFrame, max_queries: int | None, seed: int, report: DropReport, key: str
) -> pl.DataFrame:
    """Keep ``max_queries`` query_ids chosen at random with ``seed`` (all of them if ``None``).

    The subsample is recorded in ``report`` (it is a choice, but it changes what a run saw).
    """
    if max_queries is None:
        return df
    if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 1:
        raise ConfigError(f"{key} must be a positive integer or null, got {max_queries!r}")
    ids = df.get_column("query_id").unique().sort()
    if len(ids) <= max_queries:
        return df
    keep = ids.gather(np.random.default_rng(seed).permutation(len(ids))[:max_queries])
    out = df.filter(pl.col("query_id").is_in(keep.implode()))
    report.add(
        f"not among the {max_queries} queries sampled ({key}, seed {seed})",
        df.height - out.height,
        len(ids) - max_queries,
    )
    return out
