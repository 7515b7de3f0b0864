"""Parameters of the engagement simulator and their validation (config typos -> ConfigError).

Every message names the full config key (``data.engagement.regions.jp.eta``), because the
parameters normally come from ``conf/data/engagement/pbm_cascade.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from data_modules.errors import ConfigError

#: Prefix of every key in error messages (where Hydra puts these parameters).
CONFIG_KEY = "data.engagement"
#: Name of the region entry used for regions without their own entry.
DEFAULT_REGION = "default"


@dataclass(frozen=True)
class RegionParams:
    """Behaviour of the shoppers of one region (market).

    With the relevance gain ``g`` in [0, 1], ``u = g ** relevance_power`` and display position
    ``p`` (1-based)::

        P(E | p)    = (1 / p) ** eta                                      examination (PBM)
        P(C | E, g) = click_low + (click_high - click_low) * u             attractiveness
        P(A | C, g) = add_to_cart_low + (add_to_cart_high - add_to_cart_low) * u
        P(B | A, g) = purchase_low + (purchase_high - purchase_low) * u

    ``relevance_power`` > 1 concentrates engagement on the most relevant items: on data whose
    gains sit in a narrow band (Home Depot: 97% of the items are rated relevant, most gains in
    [0.5, 1]) a linear ``u = g`` makes a good and a perfect item nearly equally attractive, so
    position decides most engagement; with a power of 3 a gain of 0.5 keeps 1/8 of a perfect
    item's attractiveness (README, "Simulated engagement": how much relevance explains).

    ``click_low`` is the click noise on irrelevant items (epsilon-minus) and ``click_high`` the
    click probability of a perfect, examined item (epsilon-plus), as in the simulations of
    Joachims et al. 2017 and Ai et al. 2018 (see :mod:`data_modules.engagement`).

    Attributes:
        eta: Position-bias exponent (>= 0); 0 means every position is examined.
        click_low: ``P(C | E)`` at relevance 0.
        click_high: ``P(C | E)`` at relevance 1 (>= ``click_low``).
        add_to_cart_low: ``P(A | C)`` at relevance 0.
        add_to_cart_high: ``P(A | C)`` at relevance 1 (>= ``add_to_cart_low``).
        purchase_low: ``P(B | A)`` at relevance 0.
        purchase_high: ``P(B | A)`` at relevance 1 (>= ``purchase_low``).
        relevance_power: Exponent ``> 0`` applied to the gain before the stage probabilities
            (1: linear in the gain).
    """

    eta: float = 0.5
    click_low: float = 0.05
    click_high: float = 0.6
    add_to_cart_low: float = 0.02
    add_to_cart_high: float = 0.4
    purchase_low: float = 0.05
    purchase_high: float = 0.6
    relevance_power: float = 1.0


REGION_KEYS: tuple[str, ...] = tuple(f.name for f in fields(RegionParams))
STAGES: tuple[str, ...] = ("click", "add_to_cart", "purchase")


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be finite, got {value}")
    return value


def _check_region(params: RegionParams, key: str) -> RegionParams:
    if params.eta < 0:
        raise ConfigError(f"{key}.eta must be >= 0, got {params.eta}")
    if params.relevance_power <= 0:
        raise ConfigError(f"{key}.relevance_power must be > 0, got {params.relevance_power}")
    for stage in STAGES:
        low, high = getattr(params, f"{stage}_low"), getattr(params, f"{stage}_high")
        for end, value in (("low", low), ("high", high)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"{key}.{stage}_{end} must be a probability in [0, 1], got {value}"
                )
        if low > high:
            raise ConfigError(
                f"{key}.{stage}_low ({low}) > {key}.{stage}_high ({high}): "
                "probabilities must rise with relevance"
            )
    return params


def _region_from_mapping(values: Any, base: RegionParams, key: str) -> RegionParams:
    if values is None:
        return base
    if not isinstance(values, Mapping):
        raise ConfigError(f"{key} must be a mapping of {', '.join(REGION_KEYS)}; got {values!r}")
    unknown = sorted(str(k) for k in values if k not in REGION_KEYS)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key; valid keys: {', '.join(REGION_KEYS)}")
    numbers = {k: _number(v, f"{key}.{k}") for k, v in values.items()}
    return _check_region(replace(base, **numbers), key)


def resolve_regions(regions: Mapping[str, Any] | None) -> dict[str, RegionParams]:
    """Per-region parameters with overrides applied.

    Each field is resolved as: the :class:`RegionParams` default, overridden by the ``default``
    entry, overridden by the region's own entry. Regions absent from the mapping use the
    ``default`` entry.

    Args:
        regions: ``{region: {field: value}}``, e.g. from ``data.engagement.regions``; ``None``
            gives the built-in defaults only.

    Returns:
        ``{region: RegionParams}``, always with a ``"default"`` entry.

    Raises:
        ConfigError: A non-mapping entry, an unknown field, a non-number, a probability outside
            [0, 1], ``*_low > *_high`` or a negative ``eta``, naming the full key.
    """
    key = f"{CONFIG_KEY}.regions"
    if regions is None:
        regions = {}
    if not isinstance(regions, Mapping):
        raise ConfigError(f"{key} must be a mapping {{region: {{field: value}}}}; got {regions!r}")
    default = _region_from_mapping(
        regions.get(DEFAULT_REGION), _check_region(RegionParams(), key), f"{key}.{DEFAULT_REGION}"
    )
    resolved = {DEFAULT_REGION: default}
    for name, values in regions.items():
        if name != DEFAULT_REGION:
            resolved[str(name)] = _region_from_mapping(values, default, f"{key}.{name}")
    return resolved


def check_seed(seed: Any) -> int:
    """The seed as a non-negative int (numpy's ``SeedSequence`` takes no negative entropy)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{CONFIG_KEY}.seed must be a non-negative integer, got {seed!r}")
    return seed


def check_noise(noise: Any) -> float:
    """The logging-policy noise std as a float >= 0."""
    value = _number(noise, f"{CONFIG_KEY}.logging_noise")
    if value < 0:
        raise ConfigError(f"{CONFIG_KEY}.logging_noise must be >= 0, got {value}")
    return value
