"""Pairwise losses (RankNet) and the pair reduction shared with LambdaLoss."""

from __future__ import annotations

import torch
from torch import Tensor

from ranking.losses._pipeline import (
    check_choice,
    list_weights,
    log1p_exp,
    reduce_lists,
    validate,
)

PAIR_REDUCTIONS = ("mean", "sum")
PAIRWISE_REDUCTIONS = ("mean", "sum", "pair_mean")


def reduce_pairs(
    pair_loss: Tensor,
    valid: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    pair_reduction: str,
    empty_lists: str,
    reduction: str,
    loss: str,
) -> Tensor:
    """Reduce per-pair losses ``[B, L, L]`` over the ``valid`` pairs to a scalar.

    Within a list, ``pair_reduction`` sums or averages the valid pairs. Across lists,
    ``reduction`` is ``"mean"`` over contributing lists, ``"sum"``, or ``"pair_mean"``: all valid
    pairs of contributing lists pooled and averaged (allRank's ``rankNet`` and
    ``lambdaLoss(reduction="mean")``; long lists then weigh more). With ``empty_lists="skip"`` a
    list contributes only if it has a positive label and at least one valid pair.
    """
    check_choice("pair_reduction", pair_reduction, PAIR_REDUCTIONS, loss)
    check_choice("reduction", reduction, PAIRWISE_REDUCTIONS, loss)
    pair_loss = torch.where(valid, pair_loss, 0)
    n_pairs = valid.sum(dim=(-2, -1)).to(pair_loss.dtype)
    per_list = pair_loss.sum(dim=(-2, -1))
    weights = list_weights(labels, mask, empty_lists, loss)
    if empty_lists == "skip":
        weights = weights * (n_pairs > 0).to(weights.dtype)
    if reduction == "pair_mean":
        total = (per_list * weights).sum()
        count = (n_pairs * weights).sum()
        return total / torch.where(count > 0, count, torch.ones_like(count))
    if pair_reduction == "mean":
        per_list = per_list / n_pairs.clamp(min=1)
    return reduce_lists(per_list, weights, reduction, loss)


def ranknet(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    weight_by_diff: bool = False,
    sigma: float = 1.0,
    pair_reduction: str = "mean",
    empty_lists: str = "skip",
    reduction: str = "mean",
) -> Tensor:
    r"""RankNet: logistic loss on score differences of pairs with different labels (Burges et
    al., "Learning to Rank using Gradient Descent", ICML 2005).

    For real pairs with :math:`y_i > y_j`:
    :math:`\ell_{ij} = w_{ij} \log(1 + e^{-\sigma (s_i - s_j)})` (computed as
    ``-logsigmoid``, stable for any logit), :math:`w_{ij} = |y_i - y_j|` with
    ``weight_by_diff`` else 1. Pairs are averaged within a list, then lists are averaged. Cost and
    memory :math:`O(L^2)` per list.

    Prefer it as a robust baseline, on noisy engagement labels, or when lists are short; it treats
    all mis-ordered pairs alike, so prefer LambdaLoss (which reweights pairs by their NDCG impact)
    or ApproxNDCG to optimise the top of the list.

    Differences from allRank's ``rankNet``: allRank averages over all valid pairs pooled across the
    batch (and with ``weight_by_diff`` still divides by the number of pairs); we average per list
    first so every query weighs the same. ``reduction="pair_mean"`` reproduces allRank.

    Args:
        scores: ``[B, L]`` logits.
        labels: ``[B, L]`` labels >= 0 at real positions.
        mask: ``[B, L]`` bool, True for real items.
        weight_by_diff: weight each pair by ``|y_i - y_j|``.
        sigma: slope of the logistic function.
        pair_reduction: ``"mean"`` (default) or ``"sum"`` over the pairs of a list.
        empty_lists: ``"skip"`` (default) or ``"count"`` lists with no positive label.
        reduction: ``"mean"`` over lists, ``"sum"``, or ``"pair_mean"`` over pooled pairs.

    Returns:
        Scalar loss.

    Example:
        >>> s = torch.tensor([[0.0, 0.0]]); y = torch.tensor([[1.0, 0.0]])
        >>> round(float(ranknet(s, y, torch.ones_like(s, dtype=torch.bool))), 4)
        0.6931
    """
    scores, labels = validate(scores, labels, mask, "ranknet")
    valid = mask[:, :, None] & mask[:, None, :] & (labels[:, :, None] > labels[:, None, :])
    # [b, i, j]: log(1 + exp(-sigma (s_i - s_j))), built without extra negations (memory)
    pair_loss = log1p_exp(sigma * (scores[:, None, :] - scores[:, :, None]))
    if weight_by_diff:
        pair_loss = pair_loss * (labels[:, :, None] - labels[:, None, :]).abs()
    return reduce_pairs(
        pair_loss,
        valid,
        labels,
        mask,
        pair_reduction=pair_reduction,
        empty_lists=empty_lists,
        reduction=reduction,
        loss="ranknet",
    )


__all__ = ["ranknet", "reduce_pairs"]
