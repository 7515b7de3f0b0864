"""Per-group means of per-list metric values, DDP-safe through sum/count states."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric


class GroupedMean(Metric):
    """Mean of per-list values overall and per group (e.g. per region).

    States ``sum`` and ``count`` (``[num_groups]``) are summed across processes
    (``dist_reduce_fx="sum"``), so the result under DDP equals the single-process one, and
    ``overall`` is the micro average over all lists (not the mean of group means).

    Args:
        num_groups: number of groups; group ids must lie in ``[0, num_groups)``.
        **kwargs: forwarded to ``torchmetrics.Metric``.

    Example:
        >>> m = GroupedMean(num_groups=2)
        >>> m.update(torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0, 0, 1]))
        >>> out = m.compute()
        >>> out["per_group"], out["overall"]
        (tensor([0.5000, 0.5000]), tensor(0.5000))
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    sum: Tensor
    count: Tensor

    def __init__(self, num_groups: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(f"num_groups must be a positive int, got {num_groups!r}")
        self.num_groups = num_groups
        self.add_state("sum", default=torch.zeros(num_groups), dist_reduce_fx="sum")
        self.add_state(
            "count", default=torch.zeros(num_groups, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, values: Tensor, groups: Tensor) -> None:
        """Add per-list ``values`` ``[B]`` to their ``groups`` ``[B]`` (int ids).

        Raises:
            ValueError: on shape mismatch, non-integer or out-of-range group ids, or non-finite
                values (never dropped silently: a NaN metric is a bug upstream).
        """
        values = values.detach()
        if values.dim() != 1 or groups.shape != values.shape:
            raise ValueError(
                f"values and groups must be 1-D of equal length, got {tuple(values.shape)} and "
                f"{tuple(groups.shape)}"
            )
        if groups.is_floating_point() or groups.dtype == torch.bool:
            raise ValueError(f"groups must be an integer tensor, got {groups.dtype}")
        bad = ~torch.isfinite(values)
        if bool(bad.any()):
            raise ValueError(
                f"values must be finite; got {int(bad.sum())} non-finite of {values.numel()}"
            )
        if values.numel() and (int(groups.min()) < 0 or int(groups.max()) >= self.num_groups):
            raise ValueError(
                f"group ids must lie in [0, {self.num_groups}), got min {int(groups.min())} "
                f"and max {int(groups.max())}"
            )
        groups = groups.to(device=self.sum.device, dtype=torch.long)
        self.sum = self.sum.index_add(0, groups, values.to(self.sum))
        self.count = self.count.index_add(0, groups, torch.ones_like(groups))

    def compute(self) -> dict[str, Tensor]:
        """``{"per_group": Tensor[num_groups] (NaN for empty groups), "overall": Tensor[]}``.

        ``overall`` is NaN when no value was added at all. Note that torchmetrics' ``compute``
        wrapper squeezes one-element tensors: with ``num_groups=1`` callers receive a 0-d
        ``per_group`` and must reshape it to ``[num_groups]``.
        """
        count = self.count.to(self.sum.dtype)
        nan = torch.full_like(self.sum, float("nan"))
        per_group = torch.where(count > 0, self.sum / count.clamp(min=1), nan)
        total = count.sum()
        overall = torch.where(total > 0, self.sum.sum() / total.clamp(min=1), nan[0])
        return {"per_group": per_group, "overall": overall}
