"""Splits by query, never by row: every list lands whole in one split.

Two ways: :func:`split_by_query` draws train/val/test groups at random with a seed;
:func:`split_predefined` keeps a dataset's own split column (ESCI's official test set) and carves
validation out of its train part.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import polars as pl

from ranking.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


def split_by_query(
    df: pl.DataFrame, fractions: Mapping[str, float], seed: int, key: str = "query"
) -> dict[str, pl.DataFrame]:
    """Assign whole groups of ``key`` to train / val / test at random with a fixed seed.

    Splitting on the query *text* (the default) keeps a query that occurs in several regions, or
    under several query_ids, inside one split, so no query text is seen in training and scored in
    test.

    Args:
        df: Canonical table.
        fractions: ``{"train": f1, "val": f2, "test": f3}``, summing to 1.
        seed: Seed of the assignment; the same seed and data give the same split.
        key: Column whose values are kept together.

    Returns:
        ``{split: table}`` with the rows of each split in their original order.
    """
    unknown = set(fractions) - set(SPLIT_NAMES)
    if unknown:
        raise ConfigError(f"data.splits has unknown split(s) {sorted(unknown)}; use {SPLIT_NAMES}")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6 or any(f < 0 for f in fractions.values()):
        raise ConfigError(f"data.splits fractions must be >= 0 and sum to 1, got {dict(fractions)}")
    if key not in df.columns:
        raise ConfigError(f"data.split_key '{key}' is not a column; columns: {df.columns}")

    groups = df.get_column(key).unique().sort().to_numpy()
    order = np.random.default_rng(seed).permutation(len(groups))
    bounds = np.cumsum([fractions.get(name, 0.0) for name in SPLIT_NAMES]) * len(groups)
    assignment = np.searchsorted(np.round(bounds), np.arange(len(groups)), side="right")
    split_of = pl.DataFrame(
        {key: groups[order], "__split": np.asarray(SPLIT_NAMES)[np.minimum(assignment, 2)]}
    )
    tagged = df.join(split_of, on=key, how="left", maintain_order="left")
    return {
        name: tagged.filter(pl.col("__split") == name).drop("__split")
        for name in SPLIT_NAMES
        if fractions.get(name, 0.0) > 0
    }


def split_predefined(
    df: pl.DataFrame,
    column: str,
    val_fraction: float,
    seed: int,
    key: str = "query",
    source: str = "data",
) -> dict[str, pl.DataFrame]:
    """Keep a dataset's own train/test split and carve validation out of its train part.

    Rows whose ``column`` is ``test`` form the test split untouched (e.g. ESCI's official test
    set); rows marked ``val`` go to validation. Of the ``key`` groups (query texts) that occur only
    in ``train`` rows, a fraction ``val_fraction`` chosen at random with ``seed`` moves to
    validation, so validation shares no query text with train or test. A query text the dataset
    itself puts in both train and test stays where the dataset put it; how many there are is
    logged.

    Args:
        df: Canonical table with ``column``.
        column: Column holding ``train`` / ``test`` (and optionally ``val``).
        val_fraction: Share of the train-only query groups moved to validation, in [0, 1).
        seed: Seed of that choice.
        key: Column kept whole inside one split.
        source: Source name quoted in errors.

    Returns:
        ``{"train": ..., "val": ..., "test": ...}`` (a split without rows is left out), rows in
        their original order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"the validation share must be in [0, 1), got {val_fraction}")
    for name in (column, key):
        if name not in df.columns:
            raise ConfigError(
                f"data.split_column/split_key '{name}' is not a column of {source}; "
                f"columns: {df.columns}"
            )
    values = df.get_column(column).cast(pl.Utf8)
    bad = values.is_null() | ~values.is_in(list(SPLIT_NAMES))
    if bad.any():
        first = df.with_row_index("__r").filter(bad).get_column("__r")[:3].to_list()
        raise DataValidationError(
            f"{source}: column '{column}' has {int(bad.sum())} values outside "
            f"{list(SPLIT_NAMES)} (first at row {', '.join(map(str, first))})"
        )
    tagged = df.with_columns(values.alias("__split"))
    keys_of = {
        name: set(tagged.filter(pl.col("__split") == name).get_column(key).unique().to_list())
        for name in SPLIT_NAMES
    }
    shared = keys_of["train"] & keys_of["test"]
    if shared:
        log.warning(
            "%s: %d query text(s) are in both the train and the test part of column '%s' "
            "(kept as the dataset splits them)",
            source,
            len(shared),
            column,
        )
    candidates = np.asarray(
        sorted(keys_of["train"] - keys_of["test"] - keys_of["val"]), dtype=object
    )
    n_val = round(val_fraction * len(candidates))
    chosen = candidates[np.random.default_rng(seed).permutation(len(candidates))[:n_val]]
    tagged = tagged.with_columns(
        pl.when(pl.col(key).is_in(chosen.tolist()) & (pl.col("__split") == "train"))
        .then(pl.lit("val"))
        .otherwise(pl.col("__split"))
        .alias("__split")
    )
    out = {name: tagged.filter(pl.col("__split") == name).drop("__split") for name in SPLIT_NAMES}
    return {name: table for name, table in out.items() if table.height}
