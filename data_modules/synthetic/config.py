"""Configuration of the synthetic generator: sizes, seed, regions and behaviour knobs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from data_modules.synthetic.regions import RegionProfile, default_regions, resolve_region


@dataclass(frozen=True)
class SyntheticConfig:
    """All sizes and knobs of :func:`~data_modules.synthetic.generate_synthetic`.

    The defaults give 900 queries (300 per region) x 20 candidates = 18,000 rows over 1,500
    products, small enough for a cross-encoder run of a few minutes on 2 CPU cores, generated in
    well under a second. With them the overall label rates land in these (tested) ranges: click
    20-30 % of rows, add-to-cart 8-12 %, purchase 4-6 %, and at least 60 % of queries have a
    purchase (seed 0: 23.8 %, 9.2 %, 5.4 %, 70 %).

    Engagement (see :mod:`data_modules.synthetic.engagement`): an item at display rank ``r`` is
    examined with ``r ** -eta_region * continue_after_purchase ** (purchases above it)``; an
    examined item goes through logistic stages (logits indexed by relevance 0..3)::

        P(click | examined)  = sigmoid(click_logits[rel] + click_affinity_weight * brand_aff)
        P(cart | click)      = sigmoid(cart_logits[rel] + brand_aff + band_aff + color_aff)
        P(purchase | cart)   = sigmoid(purchase_logits[rel] + purchase_affinity_weight * brand_aff
                                       - price_sensitivity * log(price / category base price))

    where the affinities and the sensitivity come from the row's :class:`RegionProfile`.

    Attributes:
        num_products: Catalogue size.
        num_queries: Total number of queries, split evenly over the regions.
        list_size: Candidates (rows) per query.
        seed: Seed; equal configs give identical tables.
        regions: Region profiles. Entries may also be default region names (``"na"``, ``"eu"``,
            ``"apac"``) or mappings of :class:`RegionProfile` fields (e.g. from Hydra).
        candidate_mix: Expected fractions of candidates that are exact matches (relevance 3),
            near matches (2), same-category weak matches (1), related-category products (1) and
            unrelated products (0).
        logging_noise: Std of the Gaussian noise added to relevance by the logging policy that
            sets display positions (0: perfect ranking by relevance).
        click_logits: Attractiveness log-odds per relevance grade.
        click_affinity_weight: Share of the brand affinity that reaches clicks (small: click is
            mostly relevance and position, conversion is where regions differ).
        cart_logits: Add-to-cart log-odds per relevance grade.
        purchase_logits: Purchase log-odds (given add-to-cart) per relevance grade.
        purchase_affinity_weight: Share of the brand affinity that reaches the purchase stage.
        anchor_affinity_weight: How much a region's brand and price-band affinities tilt which
            products its queries are built around (markets search for what they like; 0 makes the
            query mix depend on the region only through ``category_weights``).
        continue_after_purchase: Factor on the examination probability of every item below a
            purchase, per purchase (1: pure position-based model; smaller: fewer queries with
            several purchases, more queries with one).
    """

    num_products: int = 1500
    num_queries: int = 900
    list_size: int = 20
    seed: int = 0
    regions: tuple[RegionProfile, ...] = field(default_factory=default_regions)
    candidate_mix: tuple[float, float, float, float, float] = (0.25, 0.2, 0.2, 0.1, 0.25)
    logging_noise: float = 1.0
    click_logits: tuple[float, float, float, float] = (-1.5, 0.2, 1.6, 3.0)
    click_affinity_weight: float = 0.2
    cart_logits: tuple[float, float, float, float] = (-3.8, -2.1, -0.9, 0.0)
    purchase_logits: tuple[float, float, float, float] = (-2.8, -1.8, -0.7, -0.1)
    purchase_affinity_weight: float = 1.0
    anchor_affinity_weight: float = 0.3
    continue_after_purchase: float = 0.6

    def __post_init__(self) -> None:
        regions = self.regions
        if isinstance(regions, (str, Mapping, RegionProfile)):
            regions = (regions,)
        resolved = tuple(resolve_region(r) for r in regions)
        object.__setattr__(self, "regions", resolved)
        for name in ("candidate_mix", "click_logits", "cart_logits", "purchase_logits"):
            object.__setattr__(self, name, tuple(float(x) for x in getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        names = self.region_names
        if not names:
            raise ValueError("at least one region is required")
        if len(set(names)) != len(names):
            raise ValueError(f"region names must be unique, got {names}")
        if self.list_size < 2:
            raise ValueError(f"list_size must be >= 2, got {self.list_size}")
        if self.num_products < 2 * self.list_size:
            raise ValueError(
                f"num_products ({self.num_products}) must be >= 2 * list_size ({self.list_size})"
            )
        if self.num_queries < len(names):
            raise ValueError(f"num_queries ({self.num_queries}) must be >= number of regions")
        if len(self.candidate_mix) != 5 or min(self.candidate_mix) < 0:
            raise ValueError("candidate_mix must be 5 non-negative fractions")
        if sum(self.candidate_mix) <= 0:
            raise ValueError("candidate_mix must not be all zero")
        for name in ("click_logits", "cart_logits", "purchase_logits"):
            if len(getattr(self, name)) != 4:
                raise ValueError(f"{name} needs one value per relevance grade 0..3")
        if not 0.0 <= self.continue_after_purchase <= 1.0:
            raise ValueError("continue_after_purchase must be in [0, 1]")
        if self.logging_noise < 0:
            raise ValueError("logging_noise must be >= 0")

    @property
    def region_names(self) -> tuple[str, ...]:
        """Names of the configured regions, in order."""
        return tuple(r.name for r in self.regions)

    def region(self, name: str) -> RegionProfile:
        """The profile of region ``name``.

        Raises:
            KeyError: If the region is not configured.
        """
        for profile in self.regions:
            if profile.name == name:
                return profile
        raise KeyError(f"region {name!r} not in {self.region_names}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SyntheticConfig:
        """Builds a config from a plain mapping (e.g. ``OmegaConf.to_container(cfg)``)."""
        return cls(**dict(data))
