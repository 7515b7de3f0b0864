"""Region (market) profiles: the knobs that make each region a different distribution.

Regions share one catalogue and one query vocabulary (they are markets, not languages), and
graded relevance is region-independent. What differs is *behaviour*, following the
multi-distribution setting of the SEQ+MD paper (click behaviour is similar across regions,
conversion differs):

* ``examination_eta`` -- how fast attention decays with display rank (position-based model);
* ``brand_affinity`` -- log-odds added to add-to-cart (and, scaled, purchase and click);
* ``price_band_affinity`` -- log-odds added to add-to-cart per price band ("price fit");
* ``price_sensitivity`` -- slope of purchase log-odds in log relative price (> 0: cheaper sells);
* ``color_affinity`` -- log-odds added to add-to-cart per colour;
* ``category_weights`` -- how often queries ask for each category (covariate shift).

In the default regions every brand, price band and colour preference sums to about zero over the
three regions, so a region-blind average of the preferences is nearly flat: whatever a ranker
gains from them, it gains only by knowing the region.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PRICE_BANDS: tuple[str, ...] = ("budget", "mid", "premium")


@dataclass(frozen=True)
class RegionProfile:
    """Behavioural profile of one region (market).

    Attributes:
        name: Region id written to the ``region`` column (e.g. ``"eu"``).
        examination_eta: Exponent of the position-based examination model,
            ``P(examine | rank r) = (1 / r) ** eta`` (Richardson et al. 2007; Craswell et al. 2008).
            Larger means users look at fewer results. Web search fits eta ~ 1; a 20-item product
            grid is browsed deeper, and with eta ~ 1 at most 18 % of a 20-item list could ever be
            clicked, so the defaults use 0.3-0.4.
        brand_affinity: Brand -> log-odds bonus (negative: the region avoids the brand). Unlisted
            brands get 0.
        price_band_affinity: Price band (``budget``/``mid``/``premium``) -> log-odds bonus on
            add-to-cart.
        price_sensitivity: Purchase log-odds change per unit of ``-log(price / category base
            price)``; positive means cheaper-than-usual products convert better, negative means the
            region favours expensive items.
        color_affinity: Colour -> log-odds bonus on add-to-cart.
        category_weights: Category -> relative frequency of queries for it (default 1.0).
    """

    name: str
    examination_eta: float = 0.4
    brand_affinity: Mapping[str, float] = field(default_factory=dict)
    price_band_affinity: Mapping[str, float] = field(default_factory=dict)
    price_sensitivity: float = 0.0
    color_affinity: Mapping[str, float] = field(default_factory=dict)
    category_weights: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("RegionProfile.name must be non-empty")
        if self.examination_eta <= 0:
            raise ValueError(f"region {self.name!r}: examination_eta must be > 0")
        unknown = set(self.price_band_affinity) - set(PRICE_BANDS)
        if unknown:
            raise ValueError(f"region {self.name!r}: unknown price bands {sorted(unknown)}")
        if any(w < 0 for w in self.category_weights.values()):
            raise ValueError(f"region {self.name!r}: category_weights must be >= 0")

    def __hash__(self) -> int:  # the mapping fields are dicts; hash their sorted items instead
        return hash(
            (
                self.name,
                self.examination_eta,
                self.price_sensitivity,
                *(
                    tuple(sorted(m.items()))
                    for m in (
                        self.brand_affinity,
                        self.price_band_affinity,
                        self.color_affinity,
                        self.category_weights,
                    )
                ),
            )
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegionProfile:
        """Builds a profile from a plain mapping (e.g. a Hydra/OmegaConf node)."""
        mappings = ("brand_affinity", "price_band_affinity", "color_affinity", "category_weights")
        kwargs = {k: (dict(v) if k in mappings else v) for k, v in dict(data).items()}
        return cls(**kwargs)


# Brand affinities (log-odds) per region. Each brand is the "home" favourite of one region and
# mildly avoided by the others, with each brand's values summing to ~0 over the regions, so that
# the region-averaged preference carries (almost) no brand signal: only a model that knows the
# region can use it.
_BRAND_AFFINITY: dict[str, tuple[float, float, float]] = {  # (na, eu, apac)
    "Stride": (1.6, -0.6, -1.0),
    "Velocity": (1.4, -0.8, -0.6),
    "Sonique": (1.4, -0.5, -0.9),
    "Brewmaster": (1.3, -0.4, -0.9),
    "Trailhead": (1.0, -0.3, -0.7),
    "Linea": (-0.7, 1.6, -0.9),
    "Northpeak": (-0.5, 1.5, -1.0),
    "Lumo": (-0.8, 1.4, -0.6),
    "Zenfit": (-0.4, 1.2, -0.8),
    "Urbanfit": (-0.6, 1.0, -0.4),
    "Hikari": (-0.9, -0.8, 1.7),
    "Kuma": (-1.0, -0.5, 1.5),
    "Casa": (-0.6, -0.7, 1.3),
    "Volta": (-0.5, -0.5, 1.0),
    "Basico": (-0.8, -0.2, 1.0),
}
_PRICE_BAND_AFFINITY: dict[str, tuple[float, float, float]] = {
    "budget": (-0.8, 0.0, 0.8),
    "mid": (-0.4, 0.8, -0.4),
    "premium": (0.9, -0.3, -0.6),
}
_COLOR_AFFINITY: dict[str, tuple[float, float, float]] = {
    "black": (0.4, -0.7, 0.3),
    "navy": (0.3, 0.3, -0.6),
    "beige": (-0.4, 0.8, -0.4),
    "green": (-0.3, 0.6, -0.3),
    "white": (-0.2, -0.3, 0.5),
    "pink": (-0.3, -0.2, 0.5),
    "grey": (0.2, -0.4, 0.2),
    "red": (0.3, -0.3, 0.0),
}


def _column(table: dict[str, tuple[float, float, float]], i: int) -> dict[str, float]:
    return {key: values[i] for key, values in table.items()}


def default_regions() -> tuple[RegionProfile, ...]:
    """The three default markets, deliberately different in what converts.

    * ``na``: premium buyers, loyal to Stride, Velocity, Sonique, Brewmaster, Trailhead; like black.
    * ``eu``: mid-range buyers of Linea, Northpeak, Lumo, Zenfit, Urbanfit; like beige and green.
    * ``apac``: price-sensitive buyers of Hikari, Kuma, Casa, Volta, Basico; scroll deepest.

    Click behaviour is close across regions (only the examination depth differs); add-to-cart and
    purchase differ strongly.
    """
    names = ("na", "eu", "apac")
    etas = (0.35, 0.4, 0.3)
    sensitivity = (-1.0, 0.0, 1.0)
    category_weights = (
        {"running shoes": 1.4, "headphones": 1.2, "coffee maker": 1.2},
        {"jeans": 1.4, "rain jacket": 1.4, "desk lamp": 1.2},
        {"smartwatch": 1.4, "headphones": 1.3, "t-shirt": 1.2},
    )
    return tuple(
        RegionProfile(
            name=names[i],
            examination_eta=etas[i],
            brand_affinity=_column(_BRAND_AFFINITY, i),
            price_band_affinity=_column(_PRICE_BAND_AFFINITY, i),
            price_sensitivity=sensitivity[i],
            color_affinity=_column(_COLOR_AFFINITY, i),
            category_weights=category_weights[i],
        )
        for i in range(len(names))
    )


def resolve_region(region: RegionProfile | str | Mapping[str, Any]) -> RegionProfile:
    """Turns a region given as a profile, a default region name or a mapping into a profile.

    Raises:
        ValueError: If a name is not one of the default regions.
    """
    if isinstance(region, RegionProfile):
        return region
    if isinstance(region, str):
        defaults = {r.name: r for r in default_regions()}
        if region not in defaults:
            raise ValueError(f"unknown region {region!r}; default regions are {sorted(defaults)}")
        return defaults[region]
    return RegionProfile.from_dict(region)
