"""Name -> tower registry and ``build_tower``, which checks options at build time."""

from __future__ import annotations

from collections.abc import Mapping

from data_modules.errors import ConfigError
from ranking.nn.towers._checks import check_options, constructor_options
from ranking.nn.towers.base import Tower
from ranking.nn.towers.mmoe import MMoETower
from ranking.nn.towers.seq import SeqTower
from ranking.nn.towers.shared_bottom import SharedBottomTower

TOWERS: dict[str, type[Tower]] = {
    "shared_bottom": SharedBottomTower,
    "mmoe": MMoETower,
    "seq": SeqTower,
}

_FIXED = ("hidden_size", "num_tasks", "num_regions", "region_mask")


def _lookup(name: str) -> type[Tower]:
    if name not in TOWERS:
        raise ConfigError(f"unknown tower {name!r}; valid names: {sorted(TOWERS)}")
    return TOWERS[name]


def tower_options(name: str) -> dict[str, object]:
    """The options of a registered tower with their defaults."""
    return constructor_options(_lookup(name), _FIXED)


def build_tower(
    name: str,
    hidden_size: int,
    num_tasks: int,
    num_regions: int,
    region_mask: Mapping[str, object] | None = None,
    **options: object,
) -> Tower:
    """Build a registered tower, optionally behind the MD region mask.

    Args:
        name: One of ``TOWERS``: ``shared_bottom``, ``mmoe``, ``seq``.
        hidden_size: H, width of the encoder's pooled output.
        num_tasks: K, number of tasks in ``tasks.order``.
        num_regions: Number of region ids.
        region_mask: ``None`` / ``{"name": "none"}`` or ``{"name": "feature", **options}``.
        **options: Keyword options of the tower's constructor (see its docstring).

    Raises:
        ConfigError: (a ``ValueError``) naming an unknown tower, an unknown option of the tower or
            of the region mask, or an invalid value.

    Example:
        >>> import torch
        >>> tower = build_tower("mmoe", 16, 3, 2, region_mask={"name": "feature"}, num_experts=2)
        >>> out = tower(torch.randn(5, 16), torch.tensor([0, 1, 1, 0, 1]))
        >>> tuple(out.scores.shape), tuple(out.extras["gates"].shape)
        ((5, 3), (5, 3, 2))
    """
    cls = _lookup(name)
    check_options(cls, options, f"tower {name!r}", _FIXED)
    return cls(
        hidden_size=hidden_size,
        num_tasks=num_tasks,
        num_regions=num_regions,
        region_mask=region_mask,
        **options,  # type: ignore[arg-type]
    )
