"""Splits by query, never by row: every list lands whole in one split."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from ranking.errors import ConfigError

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
