"""Splits by query, never by row: every list lands whole in one split.

Two ways: :func:`split_by_query` draws train/val/test groups at random with a seed;
:func:`split_predefined` keeps a dataset's own split column (ESCI's official test set) and carves
validation out of its train part.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from data_modules.errors import ConfigError, DataValidationError

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


# ------------------------------------------------------------------------ the split of a run
SPLIT_FILE = "split.parquet"  # query_id, split: written into every training run's directory


def split_record(tables: Mapping[str, pl.DataFrame], key: str) -> dict[str, Any]:
    """The split a run trained with, to keep in its checkpoint and run directory.

    Returns:
        ``{"key": key, "query_ids": {split: sorted query_ids}, "sha256": hex}``: plain
        containers (a ``weights_only`` checkpoint can hold them); ``sha256`` is over the sorted
        ``split<TAB>query_id`` lines, a short name for the split.
    """
    query_ids = {
        name: sorted(table.get_column("query_id").cast(pl.Utf8).unique().to_list())
        for name, table in tables.items()
    }
    digest = hashlib.sha256()
    for name in sorted(query_ids):
        for query_id in query_ids[name]:
            digest.update(f"{name}\t{query_id}\n".encode())
    return {"key": key, "query_ids": query_ids, "sha256": digest.hexdigest()}


def write_split(record: Mapping[str, Any], path: str | Path) -> Path:
    """Write a :func:`split_record` as parquet ``query_id, split`` (atomically)."""
    path = Path(path)
    frame = pl.DataFrame(
        {
            "query_id": [q for ids in record["query_ids"].values() for q in ids],
            "split": [n for n, ids in record["query_ids"].items() for _ in ids],
        },
        schema={"query_id": pl.Utf8, "split": pl.Utf8},
    )
    temp = path.with_name(f".{path.name}.saving")
    frame.write_parquet(temp)
    temp.replace(path)
    return path


def apply_stored_split(
    tables: Mapping[str, pl.DataFrame],
    record: Mapping[str, Any],
    origin: str,
    source: str = "data",
) -> dict[str, pl.DataFrame]:
    """Put every list the stored split knows back into the split it had in training.

    ``tables`` is the split the config gives (by ``data.seed`` and ``data.splits``). A row whose
    ``query_id``, or whose ``record["key"]`` value (the query text), belongs to a stored split
    goes to that split; rows new to the stored split keep the configured assignment. So a
    different seed, other fractions or other data never move a training query into test.

    Args:
        tables: ``{split: rows}`` as configured; rows carry ``__pair`` (their table order).
        record: A :func:`split_record` (from a checkpoint).
        origin: Where the record comes from (quoted in the log and in errors).
        source: The data's name, quoted in errors.

    Returns:
        ``{split: rows}`` in the original row order; splits without rows are left out.

    Raises:
        ConfigError: The stored split's key column is not in the data, or one of its values (a
            query text) belongs to two stored splits (the data changed its query texts).
    """
    key = str(record.get("key", "query"))
    stored = record.get("query_ids") or {}
    tagged = pl.concat(
        [t.with_columns(pl.lit(name).alias("__split")) for name, t in tables.items()],
        how="diagonal_relaxed",
    ).sort("__pair")
    if key not in tagged.columns:
        raise ConfigError(
            f"the split stored in {origin} keeps '{key}' values together, and {source} has no "
            f"column '{key}'"
        )
    known = pl.DataFrame(
        {
            "query_id": [q for ids in stored.values() for q in ids],
            "__stored": [n for n, ids in stored.items() for _ in ids],
        },
        schema={"query_id": pl.Utf8, "__stored": pl.Utf8},
    )
    tagged = tagged.join(known, on="query_id", how="left", maintain_order="left")
    per_key = (
        tagged.filter(pl.col("__stored").is_not_null())
        .group_by(key)
        .agg(pl.col("__stored").unique().alias("__kept"))
    )
    conflict = per_key.filter(pl.col("__kept").list.len() > 1)
    if conflict.height:
        value = conflict.get_column(key)[0]
        splits = sorted(conflict.get_column("__kept")[0].to_list())
        raise ConfigError(
            f"{source}: {key} {value!r} belongs to the {' and '.join(splits)} splits stored in "
            f"{origin} ({conflict.height} such values); the data is not the one the model was "
            "trained on: evaluate it with split=all"
        )
    tagged = tagged.join(
        per_key.with_columns(pl.col("__kept").list.first()), on=key, how="left"
    ).with_columns(pl.coalesce("__kept", "__split").alias("__final"))
    lists = tagged.group_by("query_id").agg(
        pl.col("__kept").is_not_null().any().alias("stored"),
        (pl.col("__final") != pl.col("__split")).any().alias("moved"),
    )
    n_stored, n_moved = int(lists["stored"].sum()), int(lists["moved"].sum())
    log.info(
        "%s: %d of %d lists follow the split stored in %s; %d new to it keep the configured split",
        source,
        n_stored,
        lists.height,
        origin,
        lists.height - n_stored,
    )
    if n_moved:
        log.warning(
            "%s: the configured split (data.seed, data.splits) would have put %d lists in "
            "another split than the model's training run did; the stored split is used, so no "
            "query the model trained on is scored as unseen",
            source,
            n_moved,
        )
    out = {
        name: tagged.filter(pl.col("__final") == name).drop(
            "__split", "__stored", "__kept", "__final"
        )
        for name in SPLIT_NAMES
    }
    return {name: table for name, table in out.items() if table.height}
