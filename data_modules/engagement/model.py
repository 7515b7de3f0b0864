"""The user model as pure functions: logging policy, PBM examination, engagement cascade.

Nothing here draws random numbers except through arguments, so tests can check exact values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from data_modules.engagement.params import DEFAULT_REGION, REGION_KEYS, RegionParams


def examination_probability(position: np.ndarray, eta: np.ndarray | float) -> np.ndarray:
    """Position-based examination ``P(E | p) = (1 / p) ** eta`` for 1-based positions.

    The examination hypothesis of Richardson et al. 2007 and the position-based model (PBM) of
    Craswell et al. 2008, with the power-law propensity of Joachims et al. 2017.

    Args:
        position: 1-based positions, any shape.
        eta: Exponent, a scalar or an array broadcastable to ``position``.

    Returns:
        Float64 array of ``position``'s shape; 1.0 at position 1.
    """
    return np.power(np.asarray(position, dtype=np.float64), -np.asarray(eta, dtype=np.float64))


def stage_probability(
    relevance: np.ndarray, low: np.ndarray | float, high: np.ndarray | float
) -> np.ndarray:
    """Probability of one cascade stage given the previous: ``low + (high - low) * relevance``.

    Linear in the gain, so it rises with relevance whenever ``high >= low`` (the click-noise
    model ``eps- + (eps+ - eps-) * gain`` of Ai et al. 2018, with the gain already in [0, 1]).
    """
    low = np.asarray(low, dtype=np.float64)
    return low + (np.asarray(high, dtype=np.float64) - low) * np.asarray(relevance, np.float64)


@dataclass(frozen=True)
class EngagementProbabilities:
    """Per-row probabilities of the cascade; arrays of one shape.

    Attributes:
        examination: ``P(E | position)``.
        click_given_examination: ``P(C | E, relevance)`` (attractiveness).
        add_to_cart_given_click: ``P(A | C, relevance)``.
        purchase_given_add_to_cart: ``P(B | A, relevance)``.
    """

    examination: np.ndarray
    click_given_examination: np.ndarray
    add_to_cart_given_click: np.ndarray
    purchase_given_add_to_cart: np.ndarray

    @property
    def click(self) -> np.ndarray:
        """Marginal ``P(C) = P(E) * P(C | E)``."""
        return self.examination * self.click_given_examination

    @property
    def add_to_cart(self) -> np.ndarray:
        """Marginal ``P(A) = P(C) * P(A | C)``."""
        return self.click * self.add_to_cart_given_click

    @property
    def purchase(self) -> np.ndarray:
        """Marginal ``P(B) = P(A) * P(B | A)``."""
        return self.add_to_cart * self.purchase_given_add_to_cart


def region_parameter_arrays(
    region: np.ndarray, regions: Mapping[str, RegionParams]
) -> dict[str, np.ndarray]:
    """Each :class:`RegionParams` field as a per-row array (unknown regions use ``default``).

    Args:
        region: Region name per row, shape ``[N]``.
        regions: ``{region: RegionParams}`` with a ``"default"`` entry.

    Returns:
        ``{field: float64 array [N]}``.
    """
    unique, inverse = np.unique(np.asarray(region, dtype=object).astype(str), return_inverse=True)
    table = [regions.get(name, regions[DEFAULT_REGION]) for name in unique.tolist()]
    return {
        key: np.array([getattr(p, key) for p in table], dtype=np.float64)[inverse.reshape(-1)]
        for key in REGION_KEYS
    }


def engagement_probabilities(
    position: np.ndarray,
    relevance: np.ndarray,
    region: np.ndarray,
    regions: Mapping[str, RegionParams],
) -> EngagementProbabilities:
    """Exact per-row probabilities of examination and of each engagement stage.

    ``P(E) = (1/p)**eta_r``; ``P(C|E) = cl_r + (ch_r - cl_r) u``;
    ``P(A|C) = al_r + (ah_r - al_r) u``; ``P(B|A) = bl_r + (bh_r - bl_r) u``, with ``r`` the
    row's region (``default`` when it has no entry), ``g`` its relevance gain and
    ``u = g ** relevance_power_r``.

    Args:
        position: 1-based display positions, shape ``[N]``.
        relevance: Gains in [0, 1], shape ``[N]``.
        region: Region names, shape ``[N]``.
        regions: ``{region: RegionParams}`` with a ``"default"`` entry (see
            :func:`~data_modules.engagement.params.resolve_regions`).

    Returns:
        The four conditional probabilities (and, as properties, the marginals).

    Example:
        >>> from data_modules.engagement.params import RegionParams
        >>> p = engagement_probabilities(
        ...     np.array([1, 4]), np.array([1.0, 0.0]), np.array(["x", "x"]),
        ...     {"default": RegionParams(eta=0.5, click_low=0.1, click_high=0.9)})
        >>> p.examination.tolist(), p.click.tolist()
        ([1.0, 0.5], [0.9, 0.05])
    """
    per_row = region_parameter_arrays(region, regions)
    relevance = np.asarray(relevance, dtype=np.float64) ** per_row["relevance_power"]
    return EngagementProbabilities(
        examination=examination_probability(position, per_row["eta"]),
        click_given_examination=stage_probability(
            relevance, per_row["click_low"], per_row["click_high"]
        ),
        add_to_cart_given_click=stage_probability(
            relevance, per_row["add_to_cart_low"], per_row["add_to_cart_high"]
        ),
        purchase_given_add_to_cart=stage_probability(
            relevance, per_row["purchase_low"], per_row["purchase_high"]
        ),
    )


def logging_positions(group: np.ndarray, score: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
    """1-based display positions: each group's rows sorted by ``score`` descending.

    Args:
        group: Integer group (query) code per row, shape ``[N]``.
        score: Logging-policy score per row (higher is shown first), shape ``[N]``.
        tie_break: Order among equal scores (lower first), shape ``[N]``; makes ties
            deterministic (e.g. the item's rank by product id).

    Returns:
        Int64 array ``[N]``; within each group a permutation of ``1..group size``.
    """
    group = np.asarray(group)
    order = np.lexsort((tie_break, -np.asarray(score, dtype=np.float64), group))
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    positions = np.empty(len(order), dtype=np.int64)
    positions[order] = np.arange(len(order)) - first + 1
    return positions
