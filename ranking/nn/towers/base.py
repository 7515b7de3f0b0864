"""What every tower shares: the output type, the MLP helper, input checks and the region mask."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from torch import Tensor, nn

from ranking.nn.towers._checks import check_region_ids, positive_int
from ranking.nn.towers.region_mask import build_region_mask


class TowerOutput(NamedTuple):
    """What a tower returns for N packed (query, product) items.

    Attributes:
        scores: ``[N, K]`` logits, column k = k-th task of ``tasks.order``.
        aux_loss: Scalar to add to the training loss (already weighted; 0 when the tower has none).
        extras: Tensors for logging only, e.g. ``gates [N, K, E]``, ``region_mask [N, D]``.
    """

    scores: Tensor
    aux_loss: Tensor
    extras: dict[str, Tensor]


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int | None, dropout: float) -> nn.Module:
    """``[Dropout -> Linear -> ReLU] * len(hidden_dims)`` then ``Dropout -> Linear(out_dim)``.

    Dropout sits before every linear layer (as BERT's classifier head puts it before its linear
    layer), so ``hidden_dims=()`` is exactly the linear head used before towers existed. With
    ``out_dim=None`` the stack ends after the last ReLU (an expert's representation).
    """
    layers: list[nn.Module] = []
    width = in_dim
    for dim in hidden_dims:
        layers += [nn.Dropout(dropout), nn.Linear(width, dim), nn.ReLU()]
        width = dim
    if out_dim is not None:
        layers += [nn.Dropout(dropout), nn.Linear(width, out_dim)]
    return nn.Sequential(*layers)


class Tower(nn.Module):
    """Base class: checks inputs, applies the optional MD region mask, then calls :meth:`score`.

    ``forward(h [N, H], region [N], region_features [N, F] | None) -> TowerOutput`` with
    ``scores [N, K]``. Subclasses implement :meth:`score` on the (masked) representation.

    Args:
        hidden_size: H, width of the encoder's pooled representation.
        num_tasks: K, number of scores per item.
        num_regions: Number of region ids; an id outside ``[0, num_regions)`` raises
            ``ValueError`` naming it (no silent fallback).
        region_mask: ``None`` / ``{"name": "none"}``, or ``{"name": "feature", **options}`` for
            :class:`~ranking.nn.towers.region_mask.FeatureRegionMask`, applied to ``h`` first.
    """

    def __init__(
        self,
        hidden_size: int,
        num_tasks: int,
        num_regions: int,
        region_mask: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__()
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.num_tasks = positive_int(num_tasks, "num_tasks")
        self.num_regions = positive_int(num_regions, "num_regions")
        self.region_mask = build_region_mask(region_mask, self.hidden_size, self.num_regions)

    def forward(
        self, h: Tensor, region: Tensor, region_features: Tensor | None = None
    ) -> TowerOutput:
        """Score N items.

        Args:
            h: ``[N, H]`` pooled encoder output of the real items (packed, no padding).
            region: ``[N]`` integer region ids in ``[0, num_regions)``.
            region_features: ``[N, F]`` region feature columns for the region mask; ignored when
                the tower has no mask.

        Returns:
            :class:`TowerOutput` with ``scores [N, K]``; ``extras["region_mask"]`` when masked.

        Raises:
            ValueError: region id outside ``[0, num_regions)`` (names it), or a shape mismatch.
        """
        if h.ndim != 2 or h.shape[1] != self.hidden_size:
            raise ValueError(f"h must be [N, {self.hidden_size}], got {list(h.shape)}")
        if region.shape != h.shape[:1]:
            raise ValueError(f"region must be [N={h.shape[0]}], got {list(region.shape)}")
        extras: dict[str, Tensor] = {}
        if self.region_mask is None:
            check_region_ids(region, self.num_regions)  # the mask checks them itself
        else:
            h, extras["region_mask"] = self.region_mask(h, region, region_features)
        out = self.score(h)
        return out._replace(extras={**extras, **out.extras})

    def score(self, h: Tensor) -> TowerOutput:
        """Tower-specific scoring of the (masked) representation ``h [N, H]``."""
        raise NotImplementedError
