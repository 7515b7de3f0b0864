"""LambdaLoss framework with its weighting schemes (Wang et al., CIKM 2018)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ranking.losses._dcg import check_k, ideal_dcg, rank_discounts
from ranking.losses._pipeline import log1p_exp, validate
from ranking.losses.gains import GainSpec, resolve_gain
from ranking.losses.pairwise import reduce_pairs

#: Canonical scheme names; lookup ignores case and allRank's ``_scheme`` suffix, and accepts
#: ``None`` / ``"ranknet"`` for ``"none"`` and ``"ndcgLoss2PP"`` for ``"ndcgLoss2++"``.
SCHEMES = ("none", "ndcgLoss1", "ndcgLoss2", "lambdaRank", "ndcgLoss2++")
_ALIASES = {
    "none": "none",
    "ranknet": "none",
    "ndcgloss1": "ndcgLoss1",
    "ndcgloss2": "ndcgLoss2",
    "lambdarank": "lambdaRank",
    "ndcgloss2++": "ndcgLoss2++",
    "ndcgloss2pp": "ndcgLoss2++",
}


def canonical_scheme(scheme: str | None) -> str:
    """Map a weighting-scheme name (ours or allRank's) to one of ``SCHEMES``."""
    if scheme is None:
        return "none"
    key = str(scheme).lower().removesuffix("_scheme")
    if key not in _ALIASES:
        raise ValueError(f"lambdaloss: unknown weighing_scheme {scheme!r}; valid: {SCHEMES}")
    return _ALIASES[key]


def _pair_weights(scheme: str, gains: Tensor, disc: Tensor, mu: float) -> Tensor | None:
    """``[B, L, L]`` weights in predicted-rank order (None = all 1).

    ``gains``: ``[B, L]`` gains / IDCG in rank order; ``disc``: ``[L]`` ``1 / log2(1 + rank)``.
    """
    if scheme == "none":
        return None
    if scheme == "ndcgLoss1":
        return (gains * disc)[:, :, None].expand(-1, -1, gains.shape[-1])
    gain_gap = (gains[:, :, None] - gains[:, None, :]).abs()
    if scheme == "lambdaRank":
        return (disc[:, None] - disc[None, :]).abs() * gain_gap
    # ndcgLoss2: delta_ij = |1/D(|i-j|) - 1/D(|i-j| + 1)|, D(r) = log2(1 + r), 0 on the diagonal.
    size = gains.shape[-1]
    pos = torch.arange(size, device=gains.device)
    gap = (pos[:, None] - pos[None, :]).abs().to(gains.dtype)
    delta = (1.0 / torch.log2(1.0 + gap) - 1.0 / torch.log2(2.0 + gap)).abs()
    delta = torch.where(gap > 0, delta, 0)
    ndcg2 = delta * gain_gap
    if scheme == "ndcgLoss2":
        return ndcg2
    lambdarank = (disc[:, None] - disc[None, :]).abs() * gain_gap
    return mu * ndcg2 + lambdarank


def lambdaloss(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    weighing_scheme: str | None = "ndcgLoss2++",
    k: int | None = None,
    sigma: float = 1.0,
    mu: float = 10.0,
    gain: GainSpec = "exp2",
    eps: float = 0.0,
    pair_reduction: str = "sum",
    empty_lists: str = "skip",
    reduction: str = "mean",
) -> Tensor:
    r"""LambdaLoss (Wang, Li, Golbandi, Bendersky & Najork, "The LambdaLoss Framework for Ranking
    Metric Optimization", CIKM 2018).

    Items are placed at the ranks of the current predicted order (ties by position). With
    :math:`G_i = g(y_i)/\mathrm{IDCG@k}` and :math:`D_i = \log_2(1 + \mathrm{rank}_i)`, for real
    pairs with :math:`y_i > y_j`:
    :math:`\ell_{ij} = -w_{ij} \log_2 \sigma(\sigma_s (s_i - s_j))`, where the weighting scheme
    gives :math:`w_{ij}`:

    * ``"none"``: 1 (RankNet with a base-2 log);
    * ``"ndcgLoss1"``: :math:`G_i / D_i`, over *all* real pairs including :math:`i = j`;
    * ``"ndcgLoss2"``: :math:`\delta_{ij} |G_i - G_j|`,
      :math:`\delta_{ij} = |1/D(|i-j|) - 1/D(|i-j|+1)|`;
    * ``"lambdaRank"``: :math:`|1/D_i - 1/D_j| \, |G_i - G_j|`;
    * ``"ndcgLoss2++"``: :math:`\mu\,\mathrm{ndcgLoss2} + \mathrm{lambdaRank}` (the paper's best).

    With ``k``, only pairs whose both items are within the predicted top ``k`` count (allRank's
    truncation) and IDCG is taken at ``k``. Weights are constants of the current order (no
    gradient through the sort). Pair losses are summed per list, then averaged over lists.
    Cost :math:`O(L^2)` plus one sort.

    Prefer it (ndcgLoss2++) to optimise NDCG on graded labels; prefer softmax cross-entropy or
    RankNet for noisy click lists, and ApproxNDCG when a smooth surrogate of NDCG itself is wanted.

    Differences from allRank's ``lambdaLoss``: allRank's defaults are no weighting scheme and a sum
    over all pairs of the batch; ours are ``ndcgLoss2++`` and a per-list sum averaged over
    lists. allRank clamps :math:`\sigma(\cdot)` and :math:`\sigma(\cdot)^{w}` at 1e-10, which
    zeroes the gradient of badly mis-ordered pairs; we use an exact ``logsigmoid`` unless ``eps``
    is set. ``eps=1e-10, empty_lists="count"`` with ``reduction="sum"`` (allRank ``"sum"``) or
    ``reduction="pair_mean"`` (allRank ``"mean"``) reproduces allRank.

    Args:
        scores: ``[B, L]`` logits.
        labels: ``[B, L]`` labels >= 0 at real positions.
        mask: ``[B, L]`` bool, True for real items.
        weighing_scheme: one of ``SCHEMES`` (allRank's names are accepted too).
        k: optional truncation rank.
        sigma: slope of the logistic function.
        mu: weight of ndcgLoss2 in ndcgLoss2++.
        gain: ``"exp2"`` (default), ``"linear"`` or a mapping ``{grade: gain}``.
        eps: allRank's clamps (0 = exact).
        pair_reduction: ``"sum"`` (default) or ``"mean"`` over the pairs of a list.
        empty_lists: ``"skip"`` (default) or ``"count"`` lists with no positive label.
        reduction: ``"mean"`` over lists, ``"sum"``, or ``"pair_mean"`` over pooled pairs.

    Returns:
        Scalar loss.

    Example:
        >>> s = torch.tensor([[0.0, 1.0]]); y = torch.tensor([[1.0, 0.0]])
        >>> loss = lambdaloss(s, y, torch.ones_like(s, dtype=torch.bool), weighing_scheme="none")
        >>> round(float(loss), 4)
        1.8946
    """
    scores, labels = validate(scores, labels, mask, "lambdaloss")
    scheme = canonical_scheme(weighing_scheme)
    check_k(k, "lambdaloss")
    size = scores.shape[-1]

    # Predicted order: real items by score descending (ties by position), padding last.
    key = torch.where(mask, scores.detach(), -math.inf)
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    s_sorted = torch.gather(scores, -1, order)
    y_sorted = torch.gather(labels, -1, order)
    m_sorted = torch.gather(mask, -1, order)

    gains = resolve_gain(gain)(y_sorted, m_sorted)
    idcg = ideal_dcg(gains, k)
    if eps > 0:
        idcg = idcg.clamp(min=eps)
    gains = gains / torch.where(idcg > 0, idcg, torch.ones_like(idcg))[:, None]
    disc = rank_discounts(size, scores)
    weights = _pair_weights(scheme, gains, disc, mu)

    valid = m_sorted[:, :, None] & m_sorted[:, None, :]
    if scheme != "ndcgLoss1":
        valid = valid & (y_sorted[:, :, None] > y_sorted[:, None, :])
    if k is not None:
        top = torch.arange(size, device=scores.device) < k
        valid = valid & top[:, None] & top[None, :]

    # -log sigma(sigma_s (s_i - s_j)) for [b, i, j], without extra negations (memory)
    nll = log1p_exp(sigma * (s_sorted[:, None, :] - s_sorted[:, :, None]))
    if eps > 0:
        # allRank: -log(max(max(p, eps) ** w, eps)) = min(w * min(-log p, -log eps), -log eps).
        cap = -math.log(eps)
        nll = nll.clamp(max=cap)
        weighted = nll if weights is None else (weights * nll).clamp(max=cap)
    else:
        weighted = nll if weights is None else weights * nll
    pair_loss = weighted / math.log(2.0)
    return reduce_pairs(
        pair_loss,
        valid,
        labels,
        mask,
        pair_reduction=pair_reduction,
        empty_lists=empty_lists,
        reduction=reduction,
        loss="lambdaloss",
    )


__all__ = ["SCHEMES", "canonical_scheme", "lambdaloss"]
