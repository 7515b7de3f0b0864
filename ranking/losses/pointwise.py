"""Pointwise losses: binary cross-entropy on logits and mean squared error."""

from __future__ import annotations

import torch
from torch import Tensor

from ranking.losses._pipeline import list_weights, log_sigmoid, reduce_lists, validate


def _per_list_mean(per_item: Tensor, mask: Tensor) -> Tensor:
    per_item = torch.where(mask, per_item, 0)
    size = mask.sum(dim=-1).to(per_item.dtype)
    return per_item.sum(dim=-1) / size.clamp(min=1)


def bce(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    max_label: float | None = None,
    pos_weight: float | None = None,
    empty_lists: str = "count",
    reduction: str = "mean",
) -> Tensor:
    r"""Binary cross-entropy on logits, averaged over a list's real items, then over lists.

    :math:`\ell = -\frac{1}{n}\sum_i [w_+ t_i \log\sigma(s_i) + (1 - t_i)\log(1 - \sigma(s_i))]`
    with targets :math:`t_i = y_i / \text{max\_label}` (``y_i`` itself by default, which must then
    lie in [0, 1]); computed with ``softplus`` (stable for any logit).

    Prefer it when calibrated probabilities matter (e.g. a purchase probability used downstream)
    or as an auxiliary loss; it ignores the ordering within a list, so prefer a listwise loss to
    optimise NDCG. Unlike the listwise losses, lists without a positive *count* by default: their
    negatives are informative for a pointwise model, and dropping them would bias its
    probabilities upwards.

    Args:
        scores: ``[B, L]`` logits.
        labels: ``[B, L]`` targets in ``[0, max_label]`` at real positions.
        mask: ``[B, L]`` bool, True for real items.
        max_label: divide labels by this (e.g. 3 for 0-3 grades); None = labels are in [0, 1].
        pos_weight: weight of the positive term (``w_+``), e.g. #negatives / #positives.
        empty_lists: ``"count"`` (default) or ``"skip"`` lists with no positive label.
        reduction: ``"mean"`` over contributing lists or ``"sum"``.

    Returns:
        Scalar loss.

    Example:
        >>> s = torch.tensor([[0.0, 0.0]]); y = torch.tensor([[1.0, 0.0]])
        >>> round(float(bce(s, y, torch.ones_like(s, dtype=torch.bool))), 4)
        0.6931
    """
    scores, labels = validate(scores, labels, mask, "bce")
    if max_label is not None:
        if max_label <= 0:
            raise ValueError(f"bce: max_label must be > 0, got {max_label}")
        labels = labels / max_label
    above = int(((labels > 1) & mask).sum())
    if above:
        raise ValueError(
            f"bce: targets exceed 1 at {above} real positions; pass max_label to rescale graded "
            "labels"
        )
    # -[w t log s(x) + (1 - t) log(1 - s(x))] = (1 - t) x + (w t + 1 - t) softplus(-x)
    pos = 1.0 if pos_weight is None else float(pos_weight)
    per_item = (1 - labels) * scores - (pos * labels + 1 - labels) * log_sigmoid(scores)
    weights = list_weights(labels, mask, empty_lists, "bce")
    return reduce_lists(_per_list_mean(per_item, mask), weights, reduction, "bce")


def mse(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    empty_lists: str = "count",
    reduction: str = "mean",
) -> Tensor:
    r"""Mean squared error :math:`\frac{1}{n}\sum_i (s_i - y_i)^2` over a list's real items, then
    averaged over lists.

    Prefer it to regress graded relevance or a teacher's scores (pointwise distillation); it
    spends capacity on absolute values that ranking does not need, so prefer a listwise loss for
    ranking quality. Lists without a positive count by default (see ``bce``).

    Args:
        scores: ``[B, L]`` predictions.
        labels: ``[B, L]`` targets >= 0 at real positions.
        mask: ``[B, L]`` bool, True for real items.
        empty_lists: ``"count"`` (default) or ``"skip"`` lists with no positive label.
        reduction: ``"mean"`` over contributing lists or ``"sum"``.

    Returns:
        Scalar loss.
    """
    scores, labels = validate(scores, labels, mask, "mse")
    per_item = (scores - labels) ** 2
    weights = list_weights(labels, mask, empty_lists, "mse")
    return reduce_lists(_per_list_mean(per_item, mask), weights, reduction, "mse")


__all__ = ["bce", "mse"]
