"""How per-task losses combine into one training loss: static weights or learned uncertainty.

Both take the per-task losses ``[K]`` (each already reduced over lists) and return a scalar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from data_modules.errors import ConfigError

# Per-list minimum of losses that are negated metrics (-NDCG in [-1, 0]). Kendall et al.'s
# weighting assumes a loss >= 0 (a negative log-likelihood): with a negative loss exp(-s) * L
# rewards s -> -inf without bound. Those losses are shifted by this bound, which changes no
# gradient of the scores.
_LOWER_BOUNDS = {"approx_ndcg": -1.0, "neural_ndcg": -1.0}


class StaticWeighting(nn.Module):
    """``L = sum_k w_k * L_k`` with fixed weights ``w_k`` (``tasks.catalog.<task>.weight``).

    Args:
        weights: ``[K]`` task weights.
    """

    def __init__(self, weights: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("weights", torch.tensor([float(w) for w in weights]), persistent=False)

    def forward(self, per_task: Tensor) -> Tensor:
        """Weighted sum of ``per_task [K]``."""
        return (self.weights.to(per_task.dtype) * per_task).sum()

    def log_values(self) -> dict[str, Tensor]:
        return {}


class UncertaintyWeighting(nn.Module):
    r"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using
    Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018).

    Each task k has a learned log-variance ``s_k = log sigma_k^2``:

    .. math::
        L = \sum_k \tfrac12 e^{-s_k} \, w_k (L_k - b_k) + \tfrac12 s_k

    At the optimum ``e^{s_k} = w_k (L_k - b_k)``: a task with a large (noisy) loss gets a small
    weight. ``b_k`` is the loss's lower bound (-1 for ApproxNDCG/NeuralNDCG, which are -NDCG; 0
    otherwise), so every weighted term is >= 0 as the derivation requires; the shift changes no
    gradient of the scores. The static weights ``w_k`` still apply (1 keeps the paper's form).

    Args:
        weights: ``[K]`` static task weights.
        loss_specs: ``[K]`` loss specs ``{name, **options}`` (for the lower bounds).
        init_log_variance: Initial ``s_k`` (0: every task starts at weight 1/2).
    """

    def __init__(
        self,
        weights: Sequence[float],
        loss_specs: Sequence[Mapping[str, Any]],
        init_log_variance: float = 0.0,
    ) -> None:
        super().__init__()
        bounds = []
        for spec in loss_specs:
            bound = _LOWER_BOUNDS.get(spec["name"], 0.0)
            if bound and spec.get("reduction", "mean") != "mean":
                raise ConfigError(
                    f"loss_weighting=uncertainty needs reduction=mean for loss '{spec['name']}' "
                    "(a summed -NDCG has no fixed lower bound)"
                )
            bounds.append(bound)
        self.register_buffer("weights", torch.tensor([float(w) for w in weights]), persistent=False)
        self.register_buffer("lower_bounds", torch.tensor(bounds), persistent=False)
        self.log_variance = nn.Parameter(torch.full((len(bounds),), float(init_log_variance)))

    def forward(self, per_task: Tensor) -> Tensor:
        """``per_task [K]`` -> scalar loss (see class docstring)."""
        dtype = per_task.dtype
        s = self.log_variance.to(dtype)
        shifted = self.weights.to(dtype) * (per_task - self.lower_bounds.to(dtype))
        return (0.5 * torch.exp(-s) * shifted + 0.5 * s).sum()

    def log_values(self) -> dict[str, Tensor]:
        """Effective weights ``0.5 * exp(-s_k)``, for logging."""
        return {"weight": 0.5 * torch.exp(-self.log_variance.detach())}


def build_loss_weighting(
    spec: Mapping[str, Any] | None,
    weights: Sequence[float],
    loss_specs: Sequence[Mapping[str, Any]],
) -> StaticWeighting | UncertaintyWeighting:
    """``{name: static}`` (default) or ``{name: uncertainty, init_log_variance}``."""
    options = dict(spec or {"name": "static"})
    name = options.pop("name", "static")
    if name == "static":
        if options:
            raise ConfigError(
                f"model.loss_weighting: static takes no options, got {sorted(options)}"
            )
        return StaticWeighting(weights)
    if name == "uncertainty":
        unknown = set(options) - {"init_log_variance"}
        if unknown:
            raise ConfigError(
                f"model.loss_weighting: unknown option(s) {sorted(unknown)} for uncertainty; "
                "valid: ['init_log_variance']"
            )
        return UncertaintyWeighting(weights, loss_specs, **options)
    raise ConfigError(f"model.loss_weighting.name must be 'static' or 'uncertainty', got {name!r}")
