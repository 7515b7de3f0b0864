"""The one pipeline every loss goes through (TF-Ranking style).

``validate`` -> per-item or per-pair loss (in the loss modules) -> ``list_weights`` ->
``reduce_lists`` (or, in the losses that fold the reduction into one autograd Function,
``keep_lists`` -> ``list_coefficients``). Keeping these steps here means every loss treats
padding, lists without a positive and reductions the same way.

Speed: a loss is called once per task on every training batch, and on [B, L] tensors each
PyTorch operation costs microseconds of fixed overhead, so these helpers keep the number of
operations low (one fused pass for the value checks; reductions through float or uint8 views,
since bool kernels are several times slower on CPU). ``bench/bench_losses.py`` times every loss
against allRank's.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("mean", "sum")
EMPTY_LISTS = ("skip", "count")


@functools.cache
def large_negative(dtype: torch.dtype) -> float:
    """A finite stand-in for -inf for ``dtype``.

    -inf at padded positions gives NaN gradients (``inf - inf``, ``0 * inf``); this value still
    underflows ``exp`` to exactly 0 next to any real logit, and its square root of the dtype's range
    leaves head-room for multiplying it by temperatures or list lengths without overflowing.
    """
    return -math.sqrt(torch.finfo(dtype).max)


def no_double_backward(loss: str) -> None:
    """Call first in the ``backward`` of a loss's autograd Function: its gradient is written out,
    not differentiable again, so a second-order pass (``create_graph=True``) must fail loudly
    instead of returning wrong values. (``once_differentiable`` does the same at several times the
    cost, which shows on losses that take ~0.1 ms.)"""
    if torch.is_grad_enabled():
        raise RuntimeError(f"{loss}: second derivatives are not supported (create_graph=True)")


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


def validate(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    loss: str,
    *,
    clean_scores: bool = True,
    clean_labels: bool = True,
) -> tuple[Tensor, Tensor]:
    """Check the inputs of a loss; return ``(scores, labels)`` cleaned for computation.

    Checks: 2-D tensors of equal shape, floating scores, boolean mask, finite scores and labels and
    labels >= 0 at real positions (padded positions may hold anything, e.g. -1, NaN or inf).

    The value checks cost one fused pass on the common path (a loss is called once per task and
    batch, so this is in every training step): ``labels + 0 * scores`` is NaN wherever a score is
    NaN or infinite, and NaN or infinite wherever a label is, so its minimum and maximum tell
    whether anything is wrong. Taken over the whole tensor first (training batches hold 0 at
    padded positions, so that is enough); only if that fails, over real positions; only if that
    fails too are the problems counted one by one for the message.

    Args:
        scores: ``[B, L]`` floating scores.
        labels: ``[B, L]`` labels (any real dtype; cast to the scores' dtype). Labels are targets:
            the returned labels are detached, no gradient flows to them.
        mask: ``[B, L]`` bool, True for real items.
        loss: loss name for error messages.
        clean_scores: also return the scores with padded positions set to 0. A loss may pass
            False when every use of the scores goes through its own ``where(mask, scores, ...)``.
        clean_labels: the same for the labels (then they may hold anything at padding).

    Returns:
        Scores and labels (in the scores' dtype), cleaned unless told otherwise: 0 at padded
        positions, so that nothing computed downstream can turn a padded NaN/inf into a
        NaN gradient (``0 * nan`` in a backward pass is still NaN).

    Raises:
        ValueError: naming the problem and how many real positions are affected.
    """
    check_structure(scores, labels, mask, loss)
    labels = labels.detach().to(scores.dtype)
    _, cleaned = check_values(scores, labels, mask, loss)
    if clean_labels:
        labels = torch.where(mask, labels, 0) if cleaned is None else cleaned
    return (torch.where(mask, scores, 0) if clean_scores else scores), labels


def check_structure(scores: Tensor, labels: Tensor, mask: Tensor, loss: str) -> None:
    """The shape and dtype checks of :func:`validate` (no tensor operation)."""
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


def check_values(
    scores: Tensor, labels: Tensor, mask: Tensor, loss: str
) -> tuple[bool, Tensor | None]:
    """The value checks of :func:`validate` (shapes and dtypes already checked).

    Returns:
        ``(finite_everywhere, cleaned)``: whether every score and label, padding included, is
        finite (and every label >= 0), which lets a loss mask with arithmetic instead of
        ``where``; and, when that was not the case, the labels with padded positions set to 0
        (else None).

    Raises:
        ValueError: a real position holds a NaN or infinite score or label, or a negative label.
    """
    # labels + 0 * scores (``alpha=0`` still multiplies: 0 * inf and 0 * nan are NaN)
    probe = torch.add(labels, scores.detach(), alpha=0)
    if not probe.numel() or _all_valid(probe):
        return True, None
    # Something is off somewhere: padding may hold anything (-1, NaN), so look again at the real
    # positions only.
    cleaned = torch.where(mask, probe, 0)
    if not _all_valid(cleaned):
        _raise_invalid(scores.detach(), labels, mask, loss)
    # ``cleaned`` equals the labels at real positions exactly (x + 0 = x for finite x)
    return False, cleaned


def _all_valid(probe: Tensor) -> bool:
    """Every value of ``labels + 0 * scores`` is finite and >= 0 (NaN fails both tests)."""
    low, high = torch.aminmax(probe)
    return low.item() >= 0.0 and high.item() < math.inf


def _raise_invalid(scores: Tensor, labels: Tensor, mask: Tensor, loss: str) -> None:
    """Count every problem of invalid inputs and raise one ValueError listing them."""
    problems = []
    for what, tensor in (("scores", scores), ("labels", labels)):
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


def keep_lists(
    labels: Tensor,
    mask: Tensor,
    empty_lists: str,
    loss: str,
    cleaned: bool = True,
    real: Tensor | None = None,
) -> Tensor:
    """``[B]``, > 0 for the lists that contribute to the loss (for :func:`list_coefficients`).

    ``"skip"`` keeps lists with a positive label (TF-Ranking), ``"count"`` every list with a real
    item (allRank). The result is a row maximum of the labels or of the mask: bool reductions
    (``any``) are several times slower on CPU.

    Args:
        labels: ``[B, L]`` validated labels (:func:`validate`).
        mask: ``[B, L]`` bool.
        empty_lists: ``"skip"`` or ``"count"``.
        loss: loss name for error messages.
        cleaned: the labels are 0 at padded positions.
        real: the mask as 0/1 floats (:func:`mask_as`) when every label is finite, padding
            included (:func:`check_values`): then masking is a multiplication.
    """
    check_choice("empty_lists", empty_lists, EMPTY_LISTS, loss)
    if empty_lists == "skip":
        if not cleaned:
            labels = labels * real if real is not None else torch.where(mask, labels, 0)
        return labels.amax(dim=-1)
    return (real if real is not None else mask.view(torch.uint8)).amax(dim=-1)


def mask_as(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A bool mask as 0/1 values of ``dtype``, through a uint8 view (several times faster on CPU
    than converting the bool tensor itself)."""
    return mask.view(torch.uint8).to(dtype)


def list_coefficients(
    keep: Tensor, reduction: str, loss: str, dtype: torch.dtype
) -> Tensor | float:
    """Weights ``c`` such that the reduced loss is ``sum_b c_b * per_list_b``.

    ``keep``: ``[B]``, > 0 for kept lists (:func:`keep_lists`). ``"mean"``: ``1 / max(1, #kept)``
    for kept lists; ``"sum"``: 1 for kept lists; 0 for the others. When every list is kept (the
    common case) the weight is one Python float, which saves the fused losses a [B]-sized
    multiply in forward and backward; otherwise a ``[B]`` tensor. Dropped lists get exactly 0, so
    the per-list losses must be finite there (``0 * nan`` is NaN); the losses guarantee that.
    """
    check_choice("reduction", reduction, REDUCTIONS, loss)
    if not keep.numel() or keep.amin().item() > 0:
        return 1.0 if reduction == "sum" else 1.0 / max(1, keep.numel())
    weights = (keep > 0).to(dtype)
    if reduction == "sum":
        return weights
    return weights / weights.sum().clamp(min=1)


class FusedInputs(NamedTuple):
    """What the losses that run as one autograd Function need, from :func:`fused_inputs`."""

    labels: Tensor  #: validated labels in the scores' dtype (0 at padding when ``cleaned``)
    real: Tensor  #: the mask as 0/1 in the scores' dtype
    coef: Tensor | float  #: per-list weights of the reduction (:func:`list_coefficients`)
    finite: bool  #: every score and label is finite, padding included: mask with arithmetic
    cleaned: bool


def fused_inputs(
    scores: Tensor, labels: Tensor, mask: Tensor, loss: str, empty_lists: str, reduction: str
) -> FusedInputs:
    """Validation, list weights and reduction coefficients in one call (the fused losses' input
    stage: :func:`validate`, :func:`keep_lists` and :func:`list_coefficients`, inlined, since
    every Python call costs a measurable share of a loss that takes ~0.1 ms)."""
    check_structure(scores, labels, mask, loss)
    check_choice("empty_lists", empty_lists, EMPTY_LISTS, loss)
    check_choice("reduction", reduction, REDUCTIONS, loss)
    labels = labels.detach().to(scores.dtype)
    # check_values' common path, inlined
    if scores.numel() and _all_valid(torch.add(labels, scores.detach(), alpha=0)):
        finite, cleaned = True, None
    else:
        finite, cleaned = check_values(scores, labels, mask, loss)
    real = mask.view(torch.uint8).to(scores.dtype)
    if empty_lists == "count":
        keep = real.amax(dim=-1)
    elif cleaned is not None:
        keep = cleaned.amax(dim=-1)
    else:  # finite everywhere: masking is a product
        keep = (labels * real).amax(dim=-1)
    if keep.numel() and keep.amin().item() > 0:  # all lists kept: list_coefficients' common path
        coef: Tensor | float = 1.0 if reduction == "sum" else 1.0 / keep.numel()
    else:
        coef = list_coefficients(keep, reduction, loss, scores.dtype)
    if cleaned is not None:
        labels = cleaned
    return FusedInputs(labels, real, coef, finite, cleaned is not None)


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
