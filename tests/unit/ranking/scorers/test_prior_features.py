"""The score prior's features: the BM25 feature's per-query scaling, the cache."""

from __future__ import annotations

import numpy as np
import polars as pl

from ranking.nn.prior import PRIOR_FEATURE_NAMES, check_prior_spec
from ranking.scorers.prior_features import PRIOR_FEATURES, compute_prior_features
from ranking.scorers.text_baselines import bm25_row_scores

PAIRS = pl.DataFrame(
    {
        "query": ["red drill", "red drill", "red drill", "oak table", "oak table", "zzz"],
        "product": [
            "cordless drill ; red",
            "hammer ; black",
            "drill bits ; red ; red drill",
            "oak dining table",
            "pine table",
            "garden hose",
        ],
    }
)


def test_bm25_feature_is_bm25_over_the_querys_best_pair() -> None:
    raw = bm25_row_scores(PAIRS)
    values = compute_prior_features(["bm25"], PAIRS)[:, 0]
    assert values.dtype == np.float32 and values.shape == (6,)
    # Each query's best pair is 1, the rest its raw BM25 over that best; a query that matches
    # nothing ("zzz") is 0, not NaN.
    for rows in ([0, 1, 2], [3, 4]):
        np.testing.assert_allclose(values[rows], raw[rows] / raw[rows].max(), rtol=1e-6)
        assert values[rows].max() == 1.0
    assert values[1] == 0.0 and values[5] == 0.0
    # The same pairs in another order give the same value per pair.
    order = [5, 2, 4, 0, 3, 1]
    again = compute_prior_features(["bm25"], PAIRS[order])[:, 0]
    np.testing.assert_allclose(again, values[order], rtol=1e-6)


def test_every_prior_feature_the_model_accepts_has_a_function(tmp_path) -> None:
    assert set(PRIOR_FEATURES) == set(PRIOR_FEATURE_NAMES)
    assert check_prior_spec({"features": ["minilm_cosine", "bm25"]})["features"] == [
        "minilm_cosine",
        "bm25",
    ]
    # Cached on disk by the pair texts: a second call reads the file.
    first = compute_prior_features(["bm25"], PAIRS, cache_dir=tmp_path)
    cached = list((tmp_path / "prior").glob("bm25-*.npy"))
    assert len(cached) == 1
    np.testing.assert_array_equal(np.load(cached[0]), first[:, 0])
    np.testing.assert_array_equal(compute_prior_features(["bm25"], PAIRS, tmp_path), first)
