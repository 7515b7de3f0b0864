"""What a DataModule holds, as tables and text: lists, rows, list lengths and label statistics.

Every function takes the split tables (``{"train": ..., "val": ..., "test": ...}``, canonical
columns, :mod:`data_modules.schema`) and the label columns in use; ``ListwiseDataModule.describe``
/ ``label_distribution`` / ``summary`` call them on the module's own split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from data_modules.validation import DropReport

# Leading columns of ``describe()``; label statistics follow.
_DESCRIBE_FIRST = (
    "split",
    "region",
    "queries",
    "lists",
    "rows",
    "mean_list",
    "min_list",
    "max_list",
)


def _column(tables: Mapping[str, pl.DataFrame], column: str) -> pl.Series:
    """``column`` over every split."""
    return pl.concat([t.get_column(column) for t in tables.values()])


def _binary(values: pl.Series) -> bool:
    return bool(values.is_in([0.0, 1.0]).all())


def describe(tables: Mapping[str, pl.DataFrame], label_columns: Sequence[str]) -> pl.DataFrame:
    """Per split and region: queries, lists, rows, list lengths and label statistics.

    Columns: ``queries`` (distinct query texts), ``lists`` (query_ids), ``rows``,
    ``mean_list``/``min_list``/``max_list`` (items per list, before any cap), per label
    ``{label}>0`` (share of positive rows) and, for graded labels, ``{label}_mean``. Rows for
    every split come first per region, then ``all`` regions together.
    """
    graded = [c for c in label_columns if not _binary(_column(tables, c))]
    frames = []
    for name, table in tables.items():
        for by_region in (True, False):
            frame = table if by_region else table.with_columns(pl.lit("all").alias("region"))
            sizes = frame.group_by("region", "query_id").agg(pl.len().alias("n"))
            stats = frame.group_by("region").agg(
                pl.col("query").n_unique().alias("queries"),
                pl.col("query_id").n_unique().alias("lists"),
                pl.len().alias("rows"),
                *[pl.col(c).gt(0).mean().round(3).alias(f"{c}>0") for c in label_columns],
                *[pl.col(c).mean().round(3).alias(f"{c}_mean") for c in graded],
            )
            lengths = sizes.group_by("region").agg(
                pl.col("n").mean().round(1).alias("mean_list"),
                pl.col("n").min().alias("min_list"),
                pl.col("n").max().alias("max_list"),
            )
            frames.append(
                stats.join(lengths, on="region").with_columns(pl.lit(name).alias("split"))
            )
    order = {name: i for i, name in enumerate(tables)}
    return (
        pl.concat(frames, how="diagonal_relaxed")
        .select(*_DESCRIBE_FIRST, pl.exclude(_DESCRIBE_FIRST))
        .with_columns(
            pl.col("split").replace_strict(order, return_dtype=pl.Int64).alias("__order"),
            (pl.col("region") == "all").alias("__all"),
        )
        .sort("__order", "__all", "region")
        .drop("__order", "__all")
    )


def label_distribution(
    tables: Mapping[str, pl.DataFrame], label_columns: Sequence[str], max_values: int = 8
) -> pl.DataFrame:
    """Share of each label value per split and region, for graded labels with few values.

    Returns:
        Long table ``split, region, label, value, rows, share``. Binary labels (their
        positive rate is in :func:`describe`) and labels with more than ``max_values``
        distinct values (e.g. averaged ratings, summarised by their mean) are left out.
    """
    frames = []
    for column in label_columns:
        values = _column(tables, column)
        if _binary(values) or values.n_unique() > max_values:
            continue
        for name, table in tables.items():
            counts = table.group_by("region", column).agg(pl.len().alias("rows"))
            frames.append(
                counts.with_columns(
                    pl.lit(name).alias("split"),
                    pl.lit(column).alias("label"),
                    pl.col(column).cast(pl.Float64).alias("value"),
                    (pl.col("rows") / pl.col("rows").sum().over("region")).round(3).alias("share"),
                ).select("split", "region", "label", "value", "rows", "share")
            )
    if not frames:
        return pl.DataFrame(
            schema={
                "split": pl.Utf8,
                "region": pl.Utf8,
                "label": pl.Utf8,
                "value": pl.Float64,
                "rows": pl.UInt32,
                "share": pl.Float64,
            }
        )
    order = {name: i for i, name in enumerate(tables)}
    return pl.concat(frames).sort(
        pl.col("label"), pl.col("split").replace_strict(order), "region", "value"
    )


def summary(
    source: str,
    tables: Mapping[str, pl.DataFrame],
    label_columns: Sequence[str],
    drop_report: DropReport | None,
) -> str:
    """:func:`describe`, the label distribution and the drop report, as printable text."""
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        parts = [f"Data ({source}): per split and region", str(describe(tables, label_columns))]
        distribution = label_distribution(tables, label_columns)
        if distribution.height:
            wide = distribution.pivot(
                on="value",
                index=["label", "split", "region"],
                values="share",
                sort_columns=True,
            )
            parts += ["Label value shares per split and region", str(wide)]
    if drop_report is not None:
        parts.append(drop_report.summary())
    return "\n".join(parts)
