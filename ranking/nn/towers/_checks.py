"""Argument checks shared by the towers and the region mask (one place for the error wording)."""

from __future__ import annotations

import inspect
from collections.abc import Collection, Iterable, Mapping

import torch
from torch import Tensor

from data_modules.errors import ConfigError


def constructor_options(cls: type, fixed: Collection[str]) -> dict[str, object]:
    """Keyword options of ``cls.__init__`` with their defaults, minus the ``fixed`` arguments."""
    params = inspect.signature(cls.__init__).parameters
    return {
        name: p.default
        for name, p in params.items()
        if name != "self" and name not in fixed and p.kind is not p.VAR_KEYWORD
    }


def check_options(cls: type, options: Mapping[str, object], what: str, fixed: Collection[str]):
    """Raise :class:`ConfigError` (a ``ValueError``) naming the first option ``cls`` does not take.

    Checked at build time so that a typo in a config fails before any data is read.
    """
    valid = constructor_options(cls, fixed)
    for option in options:
        if option not in valid:
            raise ConfigError(
                f"unknown option {option!r} for {what}; valid options: {sorted(valid)}"
            )


def positive_int(value: object, name: str) -> int:
    """``value`` as an int >= 1, or :class:`ConfigError` naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def non_negative_int(value: object, name: str) -> int:
    """``value`` as an int >= 0, or :class:`ConfigError` naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def layer_dims(dims: Iterable[object] | None, name: str) -> tuple[int, ...]:
    """Hidden-layer widths as a tuple of positive ints (accepts lists and OmegaConf ListConfig)."""
    if dims is None:
        return ()
    if isinstance(dims, (int, str)):
        raise ConfigError(f"{name} must be a list of layer widths, got {dims!r}")
    return tuple(positive_int(d, f"{name}[{i}]") for i, d in enumerate(dims))


def check_region_ids(region: Tensor, num_regions: int) -> None:
    """Raise ``ValueError`` naming the region ids outside ``[0, num_regions)``.

    No silent fallback (e.g. clamping to a default region): an unknown id means the data and the
    model disagree on the region vocabulary, which would otherwise mis-route items quietly. The
    check costs one device synchronisation per call.
    """
    if region.dtype in (torch.bool,) or region.dtype.is_floating_point or region.is_complex():
        raise ValueError(f"region must hold integer ids, got dtype {region.dtype}")
    bad = (region < 0) | (region >= num_regions)
    if bool(bad.any()):
        ids = region[bad].unique().tolist()
        shown = ", ".join(str(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise ValueError(
            f"region id(s) {shown} outside [0, {num_regions}) (num_regions={num_regions}); "
            "the data's region vocabulary does not match the model's num_regions"
        )
