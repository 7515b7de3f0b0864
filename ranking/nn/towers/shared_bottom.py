"""Shared-bottom multi-task tower: the encoder is shared, each task has its own MLP head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ranking.nn.towers._checks import layer_dims
from ranking.nn.towers.base import Tower, TowerOutput, mlp


class SharedBottomTower(Tower):
    """Hard parameter sharing (Caruana, "Multitask Learning", Machine Learning 28, 1997).

    The shared bottom is the encoder (plus the optional region mask); each task k reads it with its
    own head::

        s_k = head_k(h')                  head_k = MLP(H -> hidden_dims -> 1),  scores [N, K]

    ``hidden_dims=()`` makes each head ``Dropout -> Linear(H, 1)``, i.e. the linear multi-task head
    of :class:`ranking.nn.cross_encoder.CrossEncoder`.

    Args:
        hidden_size: H.
        num_tasks: K.
        num_regions: Number of region ids.
        region_mask: Region mask spec (see :class:`~ranking.nn.towers.base.Tower`).
        hidden_dims: Hidden widths of each task head.
        dropout: Dropout before every linear layer of the heads.
    """

    def __init__(
        self,
        hidden_size: int,
        num_tasks: int,
        num_regions: int,
        region_mask: Mapping[str, object] | None = None,
        hidden_dims: Sequence[int] = (64,),
        dropout: float = 0.1,
    ) -> None:
        super().__init__(hidden_size, num_tasks, num_regions, region_mask)
        dims = layer_dims(hidden_dims, "hidden_dims")
        self.heads = nn.ModuleList(
            mlp(self.hidden_size, dims, 1, dropout) for _ in range(self.num_tasks)
        )

    def score(self, h: Tensor) -> TowerOutput:
        scores = torch.cat([head(h) for head in self.heads], dim=-1)
        return TowerOutput(scores, h.new_zeros(()), {})
