"""Bi-encoder student: query and product encoded apart, one similarity per task.

A representation-focused ranker (Sentence-BERT, Reimers & Gurevych, EMNLP 2019): the query and
the product are each encoded alone, so product vectors can be computed once, offline, and ranking
``n`` candidates costs one query encoding and ``n`` dot products. ListBERT (Kumar et al., 2022,
"ListBERT: Learning to Rank E-commerce products with Listwise BERT") distils a cross-encoder into
such a model for serving; :mod:`ranking.losses.distillation` trains it from a cross-encoder teacher.

Scoring, for task ``k`` of K (one head per task, so the student is a drop-in multi-task ranker):

    u_k(q) = W_{q,k} pool(BERT(q)),   v_k(p) = W_{p,k} pool(BERT(p))          (each in R^D)
    dot:     s_k(q, p) = <u_k(q), v_k(p)>
    cosine:  s_k(q, p) = cos(u_k(q), v_k(p)) / tau

``dot`` (default) leaves the score scale free, which a listwise distillation loss needs to match a
teacher whose logits span several units; ``cosine`` bounds scores to ``[-1/tau, 1/tau]`` (vectors
are unit-normalised at encoding time, so a precomputed product index needs no further work).

Data (:mod:`data_modules.student`): the student reads its own tokens of the query and product texts
(``StudentTexts``), built from ``datamodule.pair_texts`` by tokenising each unique text once, and
finds them through the batch's ``rows`` (pair row per item). Its batches (``BiEncoderCollator``) are

    query_input_ids / query_attention_mask      [B, Tq]     (one query per list)
    product_input_ids / product_attention_mask  [B, L, Tp]
    mask [B, L], labels [B, L, K], region [B], list_index [B], rows [B, L]
    teacher_scores [B, L, K]                    (training batches of a distillation run)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data_modules.errors import ConfigError
from ranking.nn.encoders import pool

SIMILARITIES = ("dot", "cosine")
BI_ENCODER_DEFAULTS: dict[str, Any] = {
    "shared_encoder": True,  # one transformer for both sides (Sentence-BERT's siamese network)
    "pooling": "mean",
    "dim": 64,  # D, per-task vector width
    "similarity": "dot",
    "temperature": 0.05,  # cosine only
    "query_max_length": 32,
    "product_max_length": 64,
    "query_region_prefix": True,  # "eu | red shoes", as the cross-encoder sees the query
}


def checked_options(given: Mapping[str, Any] | None, defaults: Mapping[str, Any], key: str) -> dict:
    unknown = sorted(set(given or {}) - set(defaults))
    if unknown:
        raise ConfigError(f"{key}: unknown option(s) {unknown}; valid: {sorted(defaults)}")
    return {**defaults, **dict(given or {})}


def bi_encoder_options(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """``BI_ENCODER_DEFAULTS`` updated by ``given``, checked; errors name ``student.bi_encoder``."""
    opts = checked_options(given, BI_ENCODER_DEFAULTS, "student.bi_encoder")
    if opts["similarity"] not in SIMILARITIES:
        raise ConfigError(
            f"student.bi_encoder.similarity must be one of {SIMILARITIES}, "
            f"got {opts['similarity']!r}"
        )
    for name in ("dim", "query_max_length", "product_max_length"):
        if int(opts[name]) < 1:
            raise ConfigError(f"student.bi_encoder.{name} must be >= 1, got {opts[name]}")
    if float(opts["temperature"]) <= 0:
        raise ConfigError(f"student.bi_encoder.temperature must be > 0, got {opts['temperature']}")
    return opts


# ---------------------------------------------------------------------------------------- model
def similarity_scores(queries: Any, products: Any, similarity: str, temperature: float) -> Any:
    """Scores ``[..., K]`` of broadcastable query and product vectors ``[..., K, D]``.

    ``dot``: ``<u, v>``; ``cosine``: ``<u, v> / temperature`` (the vectors are unit-normalised when
    encoded). The one definition for torch tensors (training, :class:`BiEncoder`) and numpy arrays
    (a saved product index, ONNX serving): the same formula, each in its own library.
    """
    if isinstance(queries, np.ndarray):
        scores = np.einsum("...kd,...kd->...k", queries, products)
    else:
        scores = (queries * products).sum(-1)
    return scores / temperature if similarity == "cosine" else scores


class BiEncoder(nn.Module):
    """Query and product towers with K per-task projection heads (see the module docstring).

    Args:
        query_encoder: Hugging Face encoder for queries (``last_hidden_state [N, T, H]``).
        product_encoder: Encoder for products; ``None`` shares ``query_encoder`` (siamese).
        hidden_size: H.
        num_tasks: K.
        dim: D, width of each task's vector.
        pooling: ``mean`` or ``cls`` (:func:`ranking.nn.encoders.pool`).
        similarity: ``dot`` or ``cosine``.
        temperature: tau of ``cosine``.
    """

    def __init__(
        self,
        query_encoder: nn.Module,
        product_encoder: nn.Module | None,
        hidden_size: int,
        num_tasks: int,
        dim: int = 64,
        pooling: str = "mean",
        similarity: str = "dot",
        temperature: float = 0.05,
    ) -> None:
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ConfigError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        self.query_encoder = query_encoder
        self.product_encoder = product_encoder  # None: shared
        self.query_head = nn.Linear(hidden_size, num_tasks * dim)
        self.product_head = nn.Linear(hidden_size, num_tasks * dim)
        self.num_tasks, self.dim = num_tasks, dim
        self.pooling, self.similarity, self.temperature = pooling, similarity, float(temperature)

    def _encode(
        self, encoder: nn.Module, head: nn.Linear, input_ids: torch.Tensor, attention: torch.Tensor
    ) -> torch.Tensor:
        hidden = encoder(input_ids=input_ids, attention_mask=attention).last_hidden_state
        vectors = head(pool(hidden, attention, self.pooling))
        vectors = vectors.view(-1, self.num_tasks, self.dim)
        return F.normalize(vectors, dim=-1) if self.similarity == "cosine" else vectors

    def encode_queries(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[N, T]`` query tokens -> ``[N, K, D]`` query vectors (unit norm under cosine)."""
        return self._encode(self.query_encoder, self.query_head, input_ids, attention_mask)

    def encode_products(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """``[N, T]`` product tokens -> ``[N, K, D]`` product vectors (unit norm under cosine)."""
        encoder = self.product_encoder if self.product_encoder is not None else self.query_encoder
        return self._encode(encoder, self.product_head, input_ids, attention_mask)

    def similarity_scores(self, queries: torch.Tensor, products: torch.Tensor) -> torch.Tensor:
        """Scores ``[..., K]`` of broadcastable query and product vectors ``[..., K, D]``."""
        return similarity_scores(queries, products, self.similarity, self.temperature)


def _trim(input_ids: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop token columns that are padding in every row (dynamic padding after packing)."""
    seq_len = max(1, int(attention.sum(-1).max()))
    return input_ids[:, :seq_len], attention[:, :seq_len]


def score_batch(model: BiEncoder, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Scores ``[B, L, K]`` of a bi-encoder batch (0 at padded positions).

    Queries are encoded once per list (``[B, Tq]``); products only at real positions.
    """
    mask = batch["mask"]
    queries = model.encode_queries(
        *_trim(batch["query_input_ids"], batch["query_attention_mask"])
    )  # [B, K, D]
    products = model.encode_products(
        *_trim(batch["product_input_ids"][mask], batch["product_attention_mask"][mask])
    )  # [N, K, D]
    per_item = queries.unsqueeze(1).expand(*mask.shape, *queries.shape[1:])[mask]
    scores = products.new_zeros((*mask.shape, model.num_tasks))
    scores[mask] = model.similarity_scores(per_item, products)
    return scores
