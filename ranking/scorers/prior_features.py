"""The score prior's features of every pair row: computed once, cached by the pair texts.

See :mod:`ranking.nn.prior` for the prior itself.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from data_modules.errors import ConfigError
from ranking.nn.prior import PRIOR_FEATURE_NAMES
from ranking.scorers.text_baselines import biencoder_row_scores, bm25_row_scores

log = logging.getLogger(__name__)


def _minilm_cosine(pair_texts: pl.DataFrame) -> np.ndarray:
    return biencoder_row_scores(pair_texts)


def _bm25_query_max(pair_texts: pl.DataFrame) -> np.ndarray:
    """BM25(query, product) divided by the largest BM25 among the same query's pairs.

    ``x = bm25(q, d) / max_{d'} bm25(q, d')`` over the rows with the same query text, so the
    feature lies in [0, 1] like the cosine (raw BM25 grows with query length and would swamp
    ``init_weight``); 0 for every pair of a query whose terms match no product. Uses no label.
    """
    raw = bm25_row_scores(pair_texts)
    best = (
        pl.DataFrame({"query": pair_texts.get_column("query"), "raw": raw})
        .select(pl.col("raw").max().over("query"))
        .to_series()
        .to_numpy()
    )
    return np.divide(raw, best, out=np.zeros_like(raw), where=best > 0).astype(np.float32)


#: Prior feature name -> function of ``pair_texts`` (columns query, product) -> ``[N]`` float32.
PRIOR_FEATURES: dict[str, Callable[[pl.DataFrame], np.ndarray]] = {
    "minilm_cosine": _minilm_cosine,
    "bm25": _bm25_query_max,
}
assert set(PRIOR_FEATURES) == set(PRIOR_FEATURE_NAMES)
_CACHE_VERSION = 1


def _cache_path(cache_dir: str | Path, name: str, pair_texts: pl.DataFrame) -> Path:
    digest = hashlib.sha256(f"v{_CACHE_VERSION}|{name}|{pair_texts.height}|".encode())
    for column in ("query", "product"):
        for text in pair_texts.get_column(column).to_list():
            digest.update(text.encode("utf-8", "surrogatepass"))
            digest.update(b"\x00")
    return Path(cache_dir) / "prior" / f"{name}-{digest.hexdigest()[:32]}.npy"


def compute_prior_features(
    names: Sequence[str], pair_texts: pl.DataFrame, cache_dir: str | Path | None = None
) -> np.ndarray:
    """``[N, P]`` float32: each prior feature of every pair row (cached on disk when asked).

    A cached file is used only when it holds exactly ``N`` finite values; anything else is
    recomputed (and the reason logged).
    """
    columns = []
    for name in names:
        if name not in PRIOR_FEATURES:
            raise ConfigError(
                f"model.prior.features: unknown '{name}'; known: {sorted(PRIOR_FEATURES)}"
            )
        path = _cache_path(cache_dir, name, pair_texts) if cache_dir else None
        values = None
        if path is not None and path.is_file():
            try:
                values = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                log.warning("prior cache %s unreadable (%s): recomputing", path, err)
            if values is not None and (
                values.shape != (pair_texts.height,) or not np.isfinite(values).all()
            ):
                log.warning("prior cache %s does not fit the pairs: recomputing", path)
                values = None
        if values is None:
            log.info("prior feature %s for %d pairs", name, pair_texts.height)
            values = np.asarray(PRIOR_FEATURES[name](pair_texts), dtype=np.float32)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(".tmp.npy")
                np.save(partial, values, allow_pickle=False)
                partial.replace(path)
        columns.append(values.astype(np.float32))
    return np.stack(columns, axis=1)


def attach_prior_features(module: Any, datamodule: Any) -> None:
    """Give ``datamodule``'s batches the prior features ``module`` reads (no-op without a prior).

    Computed features are cached under the DataModule's ``cache_dir`` (beside its token cache).

    Args:
        module: A ranker; its ``prior_feature_names`` (empty: no prior).
        datamodule: A set-up :class:`data_modules.ListwiseDataModule`.
    """
    names = list(getattr(module, "prior_feature_names", []) or [])
    if not names or (
        datamodule.pair_features is not None and datamodule.pair_feature_names == names
    ):
        return
    cache_dir = getattr(datamodule, "cache_dir", None)
    values = compute_prior_features(names, datamodule.pair_texts, cache_dir)
    datamodule.set_pair_features(names, values)
