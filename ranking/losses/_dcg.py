"""DCG building blocks shared by the NDCG-based losses."""

from __future__ import annotations

import torch
from torch import Tensor


def rank_discounts(length: int, like: Tensor) -> Tensor:
    """``[length]`` discounts ``1 / log2(rank + 1)`` for ranks ``1..length``."""
    ranks = torch.arange(1, length + 1, dtype=like.dtype, device=like.device)
    return 1.0 / torch.log2(ranks + 1.0)


def ideal_dcg(gains: Tensor, k: int | None = None) -> Tensor:
    """``[B]`` DCG@k of the ideal ordering; ``gains`` ``[B, L]`` must be 0 at padded positions."""
    ideal, _ = gains.sort(dim=-1, descending=True)
    disc = rank_discounts(gains.shape[-1], gains)
    if k is not None:
        disc = torch.where(torch.arange(disc.shape[0], device=disc.device) < k, disc, 0)
    return (ideal * disc).sum(dim=-1)


def check_k(k: int | None, loss: str) -> None:
    """``k`` is None or a positive int."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"{loss}: k must be a positive int or None, got {k!r}")
