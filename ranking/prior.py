"""A score prior: a first-stage retriever's score of each pair, interpolated with the model's.

``s_k(q, d) = tower_k(h(q, d)) + sum_f w_{k,f} x_f(q, d)``

where ``x_f`` are prior features computed once per pair without training (today:
``minilm_cosine``, the zero-shot all-MiniLM-L6-v2 cosine of query and product text, i.e. the
``minilm_zero_shot`` baseline's score) and ``w`` is learned, initialised at ``init_weight``. The
model then starts where the first stage is (a fresh scoring head adds a small random term to a
prior that dominates), and fine-tuning learns what the cross-encoder can add. Interpolating a
re-ranker with its first-stage score is an established IR recipe (Yilmaz et al., 2019, "Cross-
Domain Modeling of Sentence-Level Evidence for Document Retrieval", interpolate BERT with BM25;
Nogueira & Cho, 2019); here the interpolation weight is trained with the ranker instead of tuned
by grid search.

Why it exists: all-MiniLM-L6-v2, the one pretrained encoder that ships offline, is a bi-encoder.
Used as a cross-encoder with a new head it starts from no relevance at all and, on a CPU budget of
a few thousand queries, does not reach its own zero-shot cosine (README, "Real data"). With the
prior it starts at that level.

Prior features are computed on the DataModule's pairs (cached on disk by the pair texts) and ride
in the batches as ``pair_features [B, L, P]`` (:class:`data_modules.listwise.ListwiseCollator`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from data_modules.errors import ConfigError

log = logging.getLogger(__name__)


def _minilm_cosine(pair_texts: pl.DataFrame) -> np.ndarray:
    from ranking.text_baselines import biencoder_row_scores

    return biencoder_row_scores(pair_texts)


#: Prior feature name -> function of ``pair_texts`` (columns query, product) -> ``[N]`` float32.
PRIOR_FEATURES: dict[str, Callable[[pl.DataFrame], np.ndarray]] = {
    "minilm_cosine": _minilm_cosine,
}
_CACHE_VERSION = 1


def check_prior_spec(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``{features: [...], init_weight: float}`` checked, or ``None`` for no prior.

    Raises:
        ConfigError: naming ``model.prior.<key>``.
    """
    if not spec:
        return None
    if not isinstance(spec, Mapping):
        raise ConfigError(f"model.prior must be a mapping {{features, init_weight}}, got {spec!r}")
    unknown = sorted(set(spec) - {"features", "init_weight"})
    if unknown:
        raise ConfigError(f"model.prior.{unknown[0]}: unknown key; valid: features, init_weight")
    features = list(spec.get("features") or [])
    if not features or isinstance(spec.get("features"), str):
        raise ConfigError(
            f"model.prior.features must be a non-empty list, e.g. [minilm_cosine]; got "
            f"{spec.get('features')!r}"
        )
    bad = [f for f in features if f not in PRIOR_FEATURES]
    if bad:
        raise ConfigError(f"model.prior.features: unknown {bad}; known: {sorted(PRIOR_FEATURES)}")
    init = spec.get("init_weight", 20.0)
    if isinstance(init, bool) or not isinstance(init, int | float):
        raise ConfigError(f"model.prior.init_weight must be a number, got {init!r}")
    return {"features": features, "init_weight": float(init)}


class ScorePrior(nn.Module):
    """``[N, P]`` prior features -> ``[N, K]`` score terms ``x @ W``, ``W`` initialised constant.

    Args:
        num_features: P.
        num_tasks: K.
        init_weight: Initial value of every ``W[f, k]`` (20: a cosine difference of 0.1 is a
            logit difference of 2, the temperature sentence-transformers trains MiniLM with).
    """

    def __init__(self, num_features: int, num_tasks: int, init_weight: float = 20.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_features, num_tasks), float(init_weight)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.to(self.weight.dtype) @ self.weight


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
