"""A score prior: a first-stage retriever's score of each pair, interpolated with the model's.

``s_k(q, d) = tower_k(h(q, d)) + sum_f w_{k,f} x_f(q, d)``

where ``x_f`` are prior features computed once per pair without training (``minilm_cosine``,
the zero-shot all-MiniLM-L6-v2 cosine of query and product text, i.e. the ``minilm_zero_shot``
baseline's score; ``bm25``, the BM25 score divided by the best BM25 among the query's pairs, in
[0, 1]) and ``w`` is learned, initialised at ``init_weight``. The
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

Prior features are computed on the DataModule's pairs (:mod:`ranking.scorers.prior_features`,
cached on disk by the pair texts) and ride in the batches as ``pair_features [B, L, P]``
(:class:`data_modules.listwise.ListwiseCollator`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from data_modules.errors import ConfigError

log = logging.getLogger(__name__)


#: The prior features a model may read (computed by :mod:`ranking.scorers.prior_features`).
PRIOR_FEATURE_NAMES = ("minilm_cosine", "bm25")


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
    bad = [f for f in features if f not in PRIOR_FEATURE_NAMES]
    if bad:
        raise ConfigError(
            f"model.prior.features: unknown {bad}; known: {sorted(PRIOR_FEATURE_NAMES)}"
        )
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
