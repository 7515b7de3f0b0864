"""Gain functions that turn relevance labels into the gains used by NDCG-style losses and metrics.

A gain is given as a ``GainSpec``:

* ``"exp2"``: ``2**y - 1`` (Burges et al.; allRank's and TF-Ranking's default for NDCG).
* ``"linear"``: ``y`` itself (trec_eval's convention).
* a mapping ``{grade: gain}``, e.g. ESCI's E/S/C/I grades 3/2/1/0 -> ``{3: 1.0, 2: 0.1, 1: 0.01,
  0: 0.0}``. Every label at a real position must be one of the keys; anything else is a ValueError
  (a silent default would hide a label-encoding bug).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

GainSpec = str | Mapping[float, float]
GainFn = Callable[[Tensor, Tensor], Tensor]

GAIN_NAMES = ("exp2", "linear")


def _exp2(labels: Tensor, mask: Tensor) -> Tensor:
    # Padded labels are arbitrary: zero them first so 2**y cannot overflow there.
    return torch.where(mask, torch.exp2(torch.where(mask, labels, 0)) - 1, 0)


def _linear(labels: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, labels, 0)


def _mapping_gain(mapping: Mapping[float, float]) -> GainFn:
    items = [(float(k), float(v)) for k, v in mapping.items()]

    def gain(labels: Tensor, mask: Tensor) -> Tensor:
        out = torch.zeros_like(labels)
        known = torch.zeros_like(mask)
        # A handful of grades: one comparison per grade, vectorised over the batch.
        for grade, value in items:
            hit = labels == grade
            out = torch.where(hit, torch.as_tensor(value, dtype=out.dtype, device=out.device), out)
            known = known | hit
        unknown = mask & ~known
        if bool(unknown.any()):
            bad = sorted({float(v) for v in labels[unknown].tolist()})[:10]
            raise ValueError(
                f"labels contain values not in the gain mapping at {int(unknown.sum())} real "
                f"positions: {bad}; mapping keys are {sorted(k for k, _ in items)}"
            )
        return torch.where(mask, out, 0)

    return gain


def resolve_gain(gain: GainSpec) -> GainFn:
    """Return ``fn(labels, mask) -> gains`` (zero at padded positions) for a gain spec.

    Args:
        gain: ``"exp2"``, ``"linear"`` or a mapping ``{grade: gain}``.

    Returns:
        A function of ``(labels [B, L], mask [B, L])`` giving gains of the labels' dtype.

    Raises:
        ValueError: for an unknown name or a mapping with non-numeric or negative gains.
    """
    if isinstance(gain, str):
        if gain == "exp2":
            return _exp2
        if gain == "linear":
            return _linear
        raise ValueError(f"unknown gain {gain!r}; expected one of {GAIN_NAMES} or a mapping")
    if isinstance(gain, Mapping):
        if not gain:
            raise ValueError("gain mapping is empty")
        try:
            pairs = [(float(k), float(v)) for k, v in gain.items()]
        except (TypeError, ValueError) as err:
            raise ValueError(f"gain mapping must map numbers to numbers, got {gain!r}") from err
        if any(v < 0 for _, v in pairs):
            raise ValueError(f"gain mapping has negative gains: {gain!r}")
        return _mapping_gain(gain)
    raise ValueError(f"gain must be one of {GAIN_NAMES} or a mapping, got {type(gain).__name__}")


def validated_gains(gain: GainSpec, labels: Tensor, mask: Tensor) -> Tensor:
    """Gains of labels already validated by the losses (0 at padded positions, finite, >= 0).

    Same values as ``resolve_gain(gain)(labels, mask)``; the named gains skip the masking, which
    validated labels do not need (``2**0 - 1 = 0``), since the losses call this on every step.
    """
    if gain == "linear":
        return labels
    if gain == "exp2":
        return torch.exp2(labels) - 1
    return resolve_gain(gain)(labels, mask)
