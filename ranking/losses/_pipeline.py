"""The one pipeline every loss goes through (TF-Ranking style).

``validate`` -> per-item or per-pair loss (in the loss modules) -> ``list_weights`` ->
``reduce_lists``. Keeping these steps here means every loss treats padding, lists without a
positive and reductions the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("mean", "sum")
EMPTY_LISTS = ("skip", "count")


def large_negative(dtype: torch.dtype) -> float:
    """A finite stand-in for -inf for ``dtype``.

    -inf at padded positions gives NaN gradients (``inf - inf``, ``0 * inf``); this value still
    underflows ``exp`` to exactly 0 next to any real logit, and its square root of the dtype's range
    leaves head-room for multiplying it by temperatures or list lengths without overflowing.
    """
    return -math.sqrt(torch.finfo(dtype).max)


def log1p_exp(x: Tensor) -> Tensor:
    """Stable ``log(1 + exp(x))`` (softplus) = ``-log(sigmoid(-x))``, exact to the dtype's
    precision.

    Used instead of ``F.logsigmoid`` / ``binary_cross_entropy_with_logits``: same values and
    gradients (0.5 at 0), but on this CPU build those two enter an OpenMP parallel region even for
    tiny tensors, costing ~10 ms per call on a busy 2-core machine. Above ``threshold`` softplus is
    linear, which is exact once ``exp(-threshold)`` is below the dtype's resolution.
    """
    threshold = 40.0 if x.dtype == torch.float64 else 20.0
    return F.softplus(x, beta=1.0, threshold=threshold)


def log_sigmoid(x: Tensor) -> Tensor:
    """Stable ``log(sigmoid(x))`` (see ``log1p_exp``)."""
    return -log1p_exp(-x)


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``x - logsumexp(x)``: same values as ``torch.log_softmax``, which on this CPU build takes
    ~8 ms on tiny 3-D inputs (an OpenMP parallel region on a busy machine) where this takes µs."""
    return x - torch.logsumexp(x, dim=dim, keepdim=True)


def check_choice(name: str, value: object, choices: tuple[str, ...], loss: str) -> None:
    """Raise a ValueError naming the loss and the valid values when ``value`` is not a choice."""
    if value not in choices:
        raise ValueError(f"{loss}: {name} must be one of {choices}, got {value!r}")


def validate(scores: Tensor, labels: Tensor, mask: Tensor, loss: str) -> tuple[Tensor, Tensor]:
    """Check the inputs of a loss; return ``(scores, labels)`` cleaned for computation.

    Checks: 2-D tensors of equal shape, floating scores, boolean mask, finite scores and labels and
    labels >= 0 at real positions (padded positions may hold anything, e.g. -1, NaN or inf).

    Returns:
        Scores and labels (labels cast to the scores' dtype) with padded positions set to 0, so
        that nothing computed downstream can turn a padded NaN/inf into a NaN gradient
        (``0 * nan`` in a backward pass is still NaN).

    Raises:
        ValueError: naming the problem and how many real positions are affected.
    """
    if (
        not isinstance(scores, Tensor)
        or not isinstance(labels, Tensor)
        or not isinstance(mask, Tensor)
    ):
        raise ValueError(f"{loss}: scores, labels and mask must be torch.Tensors")
    if scores.dim() != 2:
        raise ValueError(f"{loss}: scores must have shape [batch, list], got {tuple(scores.shape)}")
    if labels.shape != scores.shape or mask.shape != scores.shape:
        raise ValueError(
            f"{loss}: shapes differ: scores {tuple(scores.shape)}, labels {tuple(labels.shape)}, "
            f"mask {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"{loss}: mask must be a bool tensor (True = real item), got {mask.dtype}")
    if not scores.is_floating_point():
        raise ValueError(f"{loss}: scores must be floating point, got {scores.dtype}")
    labels = labels.to(scores.dtype)
    # One combined check (one device sync) on the common path; details only when it fails.
    bad_scores = ~torch.isfinite(scores.detach()) & mask
    bad_labels = (~torch.isfinite(labels) | (labels < 0)) & mask
    if bool((bad_scores | bad_labels).any()):
        problems = []
        for what, tensor in (("scores", scores.detach()), ("labels", labels)):
            for kind, hit in (
                ("NaN", torch.isnan(tensor)),
                ("inf", torch.isinf(tensor)),
            ):
                count = int((hit & mask).sum())
                if count:
                    problems.append(f"{what} contain {kind} at {count} real positions")
        negative = int(((labels < 0) & mask).sum())
        if negative:
            problems.append(
                f"labels are negative at {negative} real positions (mark padding with mask=False)"
            )
        raise ValueError(f"{loss}: " + "; ".join(problems))
    zero = torch.zeros((), dtype=scores.dtype, device=scores.device)
    return torch.where(mask, scores, zero), torch.where(mask, labels, zero)


def has_positive(labels: Tensor, mask: Tensor) -> Tensor:
    """``[B]`` bool: the list has at least one real item with label > 0."""
    return ((labels > 0) & mask).any(dim=-1)


def list_weights(labels: Tensor, mask: Tensor, empty_lists: str, loss: str) -> Tensor:
    """Per-list weights ``[B]`` in the labels' dtype.

    Args:
        labels: ``[B, L]`` labels (validated).
        mask: ``[B, L]`` bool, True for real items.
        empty_lists: ``"skip"`` gives weight 0 to lists without a positive label (TF-Ranking);
            ``"count"`` keeps them with weight 1 (allRank). Lists without any real item always get
            weight 0.
        loss: loss name for error messages.
    """
    check_choice("empty_lists", empty_lists, EMPTY_LISTS, loss)
    nonempty = mask.any(dim=-1)
    keep = nonempty & has_positive(labels, mask) if empty_lists == "skip" else nonempty
    return keep.to(labels.dtype)


def reduce_lists(per_list: Tensor, weights: Tensor, reduction: str, loss: str) -> Tensor:
    """Reduce per-list losses ``[B]`` with list weights ``[B]`` to a scalar.

    ``"mean"`` divides by the total weight of contributing lists, ``"sum"`` does not. Lists with
    weight 0 are replaced by 0 before weighting, so a non-finite value there cannot leak NaN into
    the result. With no contributing list the loss is 0 (with zero gradients).
    """
    check_choice("reduction", reduction, REDUCTIONS, loss)
    per_list = torch.where(weights > 0, per_list, torch.zeros_like(per_list))
    total = (per_list * weights).sum()
    if reduction == "sum":
        return total
    denom = weights.sum()
    return total / torch.where(denom > 0, denom, torch.ones_like(denom))
