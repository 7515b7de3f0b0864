"""Validation of a canonical table: every problem names the source, column and row.

Structural problems (a missing column, a NaN label, an empty text, a duplicated pair) are errors:
the run stops with one line saying what to fix. Rows that are valid but unusable for listwise
training (lists of one item) are dropped and *reported*, never silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from data_modules.errors import ConfigError, DataValidationError
from data_modules.schema import (
    ENGAGEMENT_LABELS,
    KEY_COLUMNS,
    MAX_RELEVANCE,
    POSITION_COLUMN,
    TEXT_COLUMNS,
)

# A text is blank when nothing but whitespace and invisible format characters (Unicode category
# Cf: zero-width space U+200B, joiners U+200C/U+200D, word joiner U+2060, BOM U+FEFF, soft
# hyphen U+00AD...) is left: a tokenizer drops them all, and the model would read nothing.
BLANK = r"^[\s\p{Cf}]*$"


@dataclass
class DropReport:
    """What validation removed and why: ``{reason: (rows, queries)}``."""

    source: str
    dropped: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, reason: str, rows: int, queries: int) -> None:
        if rows:
            self.dropped[reason] = (rows, queries)

    def summary(self) -> str:
        if not self.dropped:
            return f"{self.source}: nothing dropped"
        parts = [
            f"{rows} rows / {queries} queries ({why})"
            for why, (rows, queries) in self.dropped.items()
        ]
        return f"{self.source}: dropped " + "; ".join(parts)


def _first_rows(df: pl.DataFrame, condition: pl.Expr, limit: int = 3) -> list[int]:
    return df.filter(condition).get_column("__row")[:limit].to_list()


def _fail(source: str, column: str, what: str, rows: list[int], count: int) -> DataValidationError:
    where = ", ".join(str(r) for r in rows)
    more = f" (first at row {where})" if rows else ""
    return DataValidationError(f"{source}: column '{column}' has {count} {what}{more}")


def require_columns(df: pl.DataFrame, source: str, columns: Sequence[str]) -> None:
    """Raise :class:`DataValidationError` naming every absent column and the columns found."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        names = ", ".join(f"'{c}'" for c in missing)
        raise DataValidationError(
            f"{source}: missing required column(s) {names}; columns found: {', '.join(df.columns)}"
        )


def cast_column(df: pl.DataFrame, source: str, column: str, dtype: pl.DataType) -> pl.Series:
    """``df[column]`` as ``dtype``, or a :class:`DataValidationError` naming the column's type."""
    try:
        return df.get_column(column).cast(dtype, strict=True)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as err:
        raise DataValidationError(
            f"{source}: column '{column}' has type {df.schema[column]} "
            f"and cannot be read as {dtype}"
        ) from err


def validate_table(
    df: pl.DataFrame, source: str, label_columns: Sequence[str]
) -> tuple[pl.DataFrame, DropReport]:
    """Check and normalise a canonical table (see ``data_modules.schema``).

    Args:
        df: The table as read from ``source``.
        source: File path or dataset name, quoted in every message.
        label_columns: Label columns the run needs (one per task).

    Returns:
        The table with canonical dtypes (text as Utf8, labels as Float64, optional text columns
        filled with "") and lists of one item removed, plus the report of what was removed.

    Raises:
        DataValidationError: The first problem found, naming source, column and row (0-based data
            row, header excluded).
    """
    if df.height == 0:
        raise DataValidationError(f"{source}: the table is empty")
    require_columns(df, source, [*KEY_COLUMNS, *label_columns])
    df = df.with_row_index("__row")

    casts = {c: cast_column(df, source, c, pl.Utf8) for c in KEY_COLUMNS}
    for column in TEXT_COLUMNS:
        if column in df.columns:
            casts[column] = cast_column(df, source, column, pl.Utf8).fill_null("")
    for column in label_columns:
        casts[column] = cast_column(df, source, column, pl.Float64)
    if POSITION_COLUMN in df.columns:
        casts[POSITION_COLUMN] = cast_column(df, source, POSITION_COLUMN, pl.Int64)
    df = df.with_columns(**casts)

    for column in KEY_COLUMNS:
        nulls = pl.col(column).is_null()
        if (count := df.select(nulls.sum()).item()) > 0:
            raise _fail(source, column, "missing values", _first_rows(df, nulls), count)
    for column in KEY_COLUMNS:
        blank = pl.col(column).str.contains(BLANK)
        if (count := df.select(blank.sum()).item()) > 0:
            what = "empty texts" if column in ("query", "product_title") else "empty values"
            error = _fail(source, column, what, _first_rows(df, blank), count)
            raise DataValidationError(
                f"{error}; a value of only spaces or zero-width characters is empty"
            )
    for column in label_columns:
        bad = pl.col(column).is_null() | pl.col(column).is_nan()
        if (count := df.select(bad.sum()).item()) > 0:
            raise _fail(source, column, "missing or NaN labels", _first_rows(df, bad), count)
        bad = pl.col(column).is_infinite() | (pl.col(column) < 0) | (pl.col(column) > MAX_RELEVANCE)
        if column in ENGAGEMENT_LABELS:
            bad = ~pl.col(column).is_in([0.0, 1.0])
        if (count := df.select(bad.sum()).item()) > 0:
            allowed = "0 or 1" if column in ENGAGEMENT_LABELS else f"0 .. {MAX_RELEVANCE:g}"
            raise _fail(
                source,
                column,
                f"labels outside the allowed range ({allowed})",
                _first_rows(df, bad),
                count,
            )
    if POSITION_COLUMN in df.columns:
        bad = pl.col(POSITION_COLUMN) < 1
        if (count := df.select(bad.sum()).item()) > 0:
            raise _fail(
                source,
                POSITION_COLUMN,
                "positions < 1 (positions are 1-based)",
                _first_rows(df, bad),
                count,
            )

    duplicated = pl.struct("query_id", "product_id").is_duplicated()
    if (count := df.select(duplicated.sum()).item()) > 0:
        rows = _first_rows(df, duplicated)
        raise DataValidationError(
            f"{source}: {count} rows repeat a (query_id, product_id) pair (first at rows "
            f"{', '.join(map(str, rows))}); aggregate duplicates before training"
        )
    for column in ("query", "region"):
        conflicting = (
            df.group_by("query_id")
            .agg(pl.col(column).n_unique().alias("n"))
            .filter(pl.col("n") > 1)
        )
        if conflicting.height:
            qid = conflicting.get_column("query_id")[0]
            raise DataValidationError(
                f"{source}: query_id '{qid}' has more than one value in column '{column}' "
                f"({conflicting.height} such query_ids); a query_id must name one list"
            )

    report = DropReport(source)
    singletons = pl.len().over("query_id") < 2
    n_single = df.select(singletons.sum()).item()
    report.add("lists of one item carry no ranking signal", n_single, n_single)
    df = df.filter(~singletons)
    if df.height == 0:
        raise DataValidationError(f"{source}: no query has two or more products; nothing to rank")
    return df.drop("__row"), report


def column_names(columns: Sequence[str] | None, key: str) -> list[str]:
    """``columns`` as a list of distinct names, or :class:`ConfigError` naming ``key``."""
    if columns is None:
        return []
    if isinstance(columns, str):
        raise ConfigError(
            f"{key} must be a list of column names, e.g. [{columns}]; got {columns!r}"
        )
    names = list(columns)
    bad = [c for c in names if not isinstance(c, str) or not c]
    if bad:
        raise ConfigError(f"{key} must hold column names, got {bad}")
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise ConfigError(f"{key} repeats column(s) {repeated}")
    return names


def check_numeric_columns(table: pl.DataFrame, source: str, columns: Sequence[str]) -> None:
    """Each of ``columns`` must exist, be numeric and hold finite values only.

    Raises:
        DataValidationError: naming ``source``, the column and its first bad rows (0-based data
            rows of the table as loaded, header excluded).
    """
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataValidationError(
            f"{source}: missing region feature column(s) {missing} (data.region_feature_columns);"
            f" columns found: {', '.join(table.columns)}"
        )
    for column in columns:
        dtype = table.schema[column]
        if not dtype.is_numeric():
            raise DataValidationError(
                f"{source}: region feature column '{column}' has type {dtype}; region features "
                "must be numeric (encode categories as numbers first)"
            )
        values = table.get_column(column).cast(pl.Float64)
        bad = values.is_null() | values.is_nan() | values.is_infinite()
        count = int(bad.sum())
        if count:
            rows = ", ".join(str(r) for r in bad.arg_true()[:3].to_list())
            raise DataValidationError(
                f"{source}: region feature column '{column}' has {count} missing, NaN or "
                f"infinite value(s) (first at row {rows})"
            )
