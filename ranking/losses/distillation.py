"""Cross-encoder -> bi-encoder distillation losses.

ListBERT (Kumar et al., 2022) distils its listwise cross-encoder into a bi-encoder for serving
with a listwise loss between the teacher's and the student's score distributions over each
query's list. Here:

* :func:`listnet_kl` - ``T^2 * KL(softmax(t / T) || softmax(s / T))`` per list (ListNet's top-one
  distributions, Cao et al. 2007, with Hinton et al. 2015's temperature and ``T^2`` factor);
* :func:`margin_mse` - Margin-MSE (Hofstätter et al., 2020, "Improving Efficient Neural Ranking
  Models with Cross-Architecture Knowledge Distillation"), over every pair of a list.

The teacher's scores come from :mod:`ranking.serving.teacher_scores` (cached per pair row).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from data_modules.errors import ConfigError
from ranking.losses._pipeline import large_negative, log_softmax, reduce_lists

DISTILLATION_DEFAULTS: dict[str, Any] = {
    "alpha": 0.5,  # weight of the distillation loss; 1 - alpha weighs the ground-truth loss
    "loss": "listnet_kl",
    "temperature": 1.0,
}


# ---------------------------------------------------------------------------------------- losses
def _check(student: Tensor, teacher: Tensor, mask: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Shapes ``[B, L]``, a bool mask, finite scores at real positions; padding zeroed."""
    if student.dim() != 2 or teacher.shape != student.shape or mask.shape != student.shape:
        raise ValueError(
            f"{name}: student, teacher and mask must share shape [batch, list]; got "
            f"{tuple(student.shape)}, {tuple(teacher.shape)}, {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"{name}: mask must be a bool tensor (True = real item), got {mask.dtype}")
    teacher = teacher.to(student.dtype)
    bad = (~torch.isfinite(student.detach()) | ~torch.isfinite(teacher)) & mask
    if bool(bad.any()):
        raise ValueError(f"{name}: non-finite student or teacher scores at {int(bad.sum())} items")
    zero = torch.zeros((), dtype=student.dtype, device=student.device)
    return torch.where(mask, student, zero), torch.where(mask, teacher, zero)


def listnet_kl(
    student: Tensor,
    teacher: Tensor,
    mask: Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Listwise distillation: KL divergence between teacher and student top-one distributions.

    Per list, over its real items: with :math:`p = \mathrm{softmax}(t / T)` and
    :math:`q = \mathrm{softmax}(s / T)`,
    :math:`\ell = T^2 \sum_i p_i (\log p_i - \log q_i)`. It is ListNet's cross-entropy with the
    teacher's distribution as target, minus the target's entropy, so it is 0 exactly when the
    student's scores equal the teacher's up to a per-list shift. The ``T^2`` factor keeps gradient
    magnitudes comparable across temperatures (Hinton et al., 2015). Lists with fewer than two
    real items carry no ranking information and get weight 0.

    Args:
        student: ``[B, L]`` student logits.
        teacher: ``[B, L]`` teacher logits.
        mask: ``[B, L]`` bool, True for real items.
        temperature: ``T > 0``.
        reduction: ``"mean"`` over lists with >= 2 items, or ``"sum"``.

    Returns:
        Scalar loss.

    Example:
        >>> s = torch.tensor([[0.0, 0.0]]); t = torch.tensor([[1.0, 0.0]])
        >>> round(float(listnet_kl(s, t, torch.ones_like(s, dtype=torch.bool))), 4)
        0.1109
    """
    if not temperature > 0:
        raise ValueError(f"listnet_kl: temperature must be > 0, got {temperature}")
    student, teacher = _check(student, teacher, mask, "listnet_kl")
    neg = large_negative(student.dtype)
    log_q = log_softmax(torch.where(mask, student / temperature, neg), dim=-1)
    log_p = log_softmax(torch.where(mask, teacher / temperature, neg), dim=-1)
    per_item = torch.where(mask, log_p.exp() * (log_p - log_q), 0)
    per_list = per_item.sum(-1) * temperature**2
    weights = (mask.sum(-1) >= 2).to(student.dtype)
    return reduce_lists(per_list, weights, reduction, "listnet_kl")


def margin_mse(
    student: Tensor, teacher: Tensor, mask: Tensor, *, reduction: str = "mean"
) -> Tensor:
    r"""Margin-MSE (Hofstätter et al., 2020) over every pair of real items in a list.

    Per list: :math:`\ell = \frac{1}{|P|} \sum_{(i, j) \in P} \big((s_i - s_j) - (t_i - t_j)\big)^2`
    over ordered pairs :math:`i \ne j` of real items. The paper uses one (query, positive,
    negative) triple; a list gives all its pairs. Only score *differences* are matched, so the
    student may differ from the teacher by a per-list shift, but, unlike :func:`listnet_kl`, it
    must match the teacher's scale.

    Args:
        student: ``[B, L]`` student logits.
        teacher: ``[B, L]`` teacher logits.
        mask: ``[B, L]`` bool, True for real items.
        reduction: ``"mean"`` over lists with >= 2 items, or ``"sum"``.

    Example:
        >>> s = torch.tensor([[0.0, 0.0]]); t = torch.tensor([[1.0, 0.0]])
        >>> float(margin_mse(s, t, torch.ones_like(s, dtype=torch.bool)))
        1.0
    """
    student, teacher = _check(student, teacher, mask, "margin_mse")
    d = student - teacher  # (s_i - s_j) - (t_i - t_j) = d_i - d_j
    eye = torch.eye(mask.shape[-1], dtype=torch.bool, device=mask.device)
    pairs = mask.unsqueeze(-1) & mask.unsqueeze(-2) & ~eye
    squared = (d.unsqueeze(-1) - d.unsqueeze(-2)).square()
    count = pairs.sum((-1, -2))
    per_list = torch.where(pairs, squared, 0).sum((-1, -2)) / count.clamp_min(1)
    return reduce_lists(per_list, (count > 0).to(student.dtype), reduction, "margin_mse")


DISTILLATION_LOSSES: dict[str, Callable[..., Tensor]] = {
    "listnet_kl": listnet_kl,
    "margin_mse": margin_mse,
}


def build_distillation_loss(name: str, temperature: float = 1.0) -> Callable[..., Tensor]:
    """``fn(student [B, L], teacher [B, L], mask [B, L]) -> scalar`` for a named loss.

    Raises:
        ConfigError: Unknown name (lists the valid ones), a temperature <= 0, or a temperature
            other than 1 for ``margin_mse`` (its value does not depend on one).
    """
    if name not in DISTILLATION_LOSSES:
        raise ConfigError(
            f"student.distillation.loss: unknown loss {name!r}; "
            f"valid: {sorted(DISTILLATION_LOSSES)}"
        )
    temperature = float(temperature)
    if not temperature > 0:
        raise ConfigError(f"student.distillation.temperature must be > 0, got {temperature}")
    if name == "margin_mse":
        if temperature != 1.0:
            raise ConfigError("student.distillation.temperature has no effect on margin_mse: set 1")
        return margin_mse
    return functools.partial(listnet_kl, temperature=temperature)  # picklable (ddp_spawn)
