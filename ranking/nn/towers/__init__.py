"""Multi-task towers on the encoder's pooled output, with an optional MD region mask.

``build_tower(name, hidden_size, num_tasks, num_regions, region_mask=None, **options)`` returns an
``nn.Module`` whose ``forward(h [N, H], region [N], region_features [N, F] | None)`` returns a
:class:`TowerOutput` ``(scores [N, K] logits, aux_loss scalar, extras)``; column k is the k-th task
of ``tasks.order``. Towers: ``shared_bottom`` (Caruana 1997), ``mmoe`` (Ma et al., KDD 2018),
``seq`` (SEQ+MD, 2023, our interpretation; see :class:`SeqTower`). The region mask
(:class:`FeatureRegionMask`) gates the region-driven part of ``h`` in front of any tower.
"""

from ranking.nn.towers.base import Tower, TowerOutput, mlp
from ranking.nn.towers.mmoe import MMoETower
from ranking.nn.towers.region_mask import REGION_MASKS, FeatureRegionMask, build_region_mask
from ranking.nn.towers.registry import TOWERS, build_tower, tower_options
from ranking.nn.towers.seq import SeqTower, descending_penalty
from ranking.nn.towers.shared_bottom import SharedBottomTower

__all__ = [
    "REGION_MASKS",
    "TOWERS",
    "FeatureRegionMask",
    "MMoETower",
    "SeqTower",
    "SharedBottomTower",
    "Tower",
    "TowerOutput",
    "build_region_mask",
    "build_tower",
    "descending_penalty",
    "mlp",
    "tower_options",
]
