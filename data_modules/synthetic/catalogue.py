"""Product catalogue: categories, brands, colours, sizes, price bands, and templated text.

Every product has a category, a brand from that category's brands, a colour and a size from
that category's lists, and a price band; its price is the category's base price times a band
multiplier times log-normal noise. Titles and descriptions come from several templates so that
the text of two products is rarely identical, yet every title names the category, brand, colour
and size (a text model can see every attribute that relevance and region preference use), and
every description hints at the price band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_modules.synthetic.regions import PRICE_BANDS


@dataclass(frozen=True)
class CategorySpec:
    """One product category.

    Attributes:
        name: Category words, as they appear in titles and queries (e.g. ``"running shoes"``).
        brands: Brands that sell in this category.
        colors: Colours the category comes in.
        sizes: Size values; empty when the category has no size.
        size_format: How a size is written in text, e.g. ``"size {}"`` or ``"{}"``.
        base_price: Typical mid-band price.
        features: Short feature phrases used in descriptions.
    """

    name: str
    brands: tuple[str, ...]
    colors: tuple[str, ...]
    sizes: tuple[str, ...]
    size_format: str
    base_price: float
    features: tuple[str, ...]

    def size_text(self, size: str) -> str:
        """Size as written in titles and queries (``""`` when the product has none)."""
        return self.size_format.format(size) if size else ""


_APPAREL_COLORS = ("black", "white", "red", "blue", "navy", "green", "grey", "pink", "beige")
_SHOE_COLORS = ("black", "white", "red", "blue", "grey", "pink", "green")
_TECH_COLORS = ("black", "white", "silver", "blue")
_APPAREL_SIZES = ("S", "M", "L", "XL")
_SHOE_SIZES = ("7", "8", "9", "10", "11", "12")

CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec(
        "running shoes",
        ("Stride", "Velocity", "Kuma", "Northpeak", "Trailhead"),
        _SHOE_COLORS,
        _SHOE_SIZES,
        "size {}",
        95.0,
        ("a cushioned midsole", "a breathable mesh upper", "a grippy outsole", "a light build"),
    ),
    CategorySpec(
        "sneakers",
        ("Stride", "Urbanfit", "Velocity", "Kuma", "Linea"),
        _SHOE_COLORS,
        _SHOE_SIZES,
        "size {}",
        75.0,
        ("a leather upper", "a classic low-top cut", "a padded collar", "a rubber cupsole"),
    ),
    CategorySpec(
        "t-shirt",
        ("Northpeak", "Linea", "Basico", "Urbanfit", "Kuma", "Stride"),
        _APPAREL_COLORS,
        _APPAREL_SIZES,
        "size {}",
        22.0,
        ("soft organic cotton", "a relaxed fit", "a crew neck", "a quick-dry fabric"),
    ),
    CategorySpec(
        "hoodie",
        ("Northpeak", "Linea", "Basico", "Urbanfit", "Stride", "Kuma"),
        _APPAREL_COLORS,
        _APPAREL_SIZES,
        "size {}",
        48.0,
        ("a brushed fleece lining", "a kangaroo pocket", "a drawstring hood", "ribbed cuffs"),
    ),
    CategorySpec(
        "jeans",
        ("Linea", "Basico", "Urbanfit", "Northpeak", "Kuma"),
        ("blue", "black", "grey", "navy", "white", "beige"),
        ("28", "30", "32", "34", "36"),
        "size {}",
        65.0,
        ("stretch denim", "a slim fit", "a straight leg", "five pockets"),
    ),
    CategorySpec(
        "rain jacket",
        ("Trailhead", "Northpeak", "Linea", "Kuma", "Velocity"),
        _APPAREL_COLORS,
        _APPAREL_SIZES,
        "size {}",
        110.0,
        ("taped seams", "a packable hood", "a waterproof shell", "zipped pockets"),
    ),
    CategorySpec(
        "backpack",
        ("Trailhead", "Northpeak", "Kuma", "Urbanfit", "Velocity"),
        ("black", "grey", "navy", "green", "red", "blue"),
        ("15L", "20L", "30L"),
        "{}",
        55.0,
        ("a padded laptop sleeve", "water-resistant fabric", "padded straps", "side pockets"),
    ),
    CategorySpec(
        "water bottle",
        ("Zenfit", "Trailhead", "Basico", "Casa", "Hikari"),
        ("blue", "green", "pink", "black", "white", "orange"),
        ("500ml", "750ml", "1L"),
        "{}",
        20.0,
        ("double-wall insulation", "a leak-proof lid", "BPA-free plastic", "a carry loop"),
    ),
    CategorySpec(
        "headphones",
        ("Sonique", "Volta", "Hikari", "Lumo"),
        _TECH_COLORS,
        (),
        "{}",
        130.0,
        ("active noise cancelling", "30-hour battery life", "a foldable design", "deep bass"),
    ),
    CategorySpec(
        "smartwatch",
        ("Volta", "Hikari", "Sonique", "Stride", "Lumo"),
        _TECH_COLORS,
        ("40mm", "44mm"),
        "{}",
        220.0,
        ("a heart-rate sensor", "built-in GPS", "a bright AMOLED screen", "sleep tracking"),
    ),
    CategorySpec(
        "coffee maker",
        ("Brewmaster", "Casa", "Hikari", "Volta", "Lumo"),
        ("black", "silver", "white", "red"),
        ("4-cup", "8-cup", "12-cup"),
        "{}",
        85.0,
        ("a programmable timer", "a thermal carafe", "a reusable filter", "a keep-warm plate"),
    ),
    CategorySpec(
        "desk lamp",
        ("Lumo", "Casa", "Hikari", "Basico"),
        ("black", "white", "silver", "green"),
        (),
        "{}",
        38.0,
        ("a dimmable LED", "an adjustable arm", "a USB charging port", "warm and cool light"),
    ),
)

#: Unordered pairs of categories that are substitutes or complements: graded 1 ("related").
RELATED_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("running shoes", "sneakers"),
    ("t-shirt", "hoodie"),
    ("hoodie", "rain jacket"),
    ("headphones", "smartwatch"),
    ("backpack", "water bottle"),
)

#: Brand -> price band the brand mostly sells in (products draw their band around it).
BRAND_TIERS: dict[str, str] = {
    "Stride": "premium",
    "Velocity": "premium",
    "Sonique": "premium",
    "Brewmaster": "premium",
    "Trailhead": "premium",
    "Northpeak": "mid",
    "Linea": "mid",
    "Urbanfit": "mid",
    "Volta": "mid",
    "Lumo": "mid",
    "Zenfit": "mid",
    "Kuma": "budget",
    "Basico": "budget",
    "Hikari": "budget",
    "Casa": "budget",
}

BRANDS: tuple[str, ...] = tuple(BRAND_TIERS)
COLORS: tuple[str, ...] = tuple(
    dict.fromkeys(c for spec in CATEGORIES for c in spec.colors)  # ordered, unique
)
SIZES: tuple[str, ...] = tuple(dict.fromkeys(s for spec in CATEGORIES for s in spec.sizes))
CATEGORY_NAMES: tuple[str, ...] = tuple(spec.name for spec in CATEGORIES)
BASE_PRICE: dict[str, float] = {spec.name: spec.base_price for spec in CATEGORIES}

_BAND_MULTIPLIER = np.array([0.55, 1.0, 1.9])  # budget, mid, premium
_BAND_PHRASES = {
    "budget": ("Great value.", "An affordable everyday pick.", "Budget-friendly."),
    "mid": (
        "Solid everyday quality.",
        "Good quality at a fair price.",
        "A reliable mid-range pick.",
    ),
    "premium": ("Premium materials throughout.", "A high-end choice.", "Top-tier craftsmanship."),
}
_MODELS = (
    "Trailblazer", "Aero", "Pulse", "Nova", "Flex", "Vista", "Orbit", "Drift", "Edge", "Prime",
    "Core", "Atlas", "Zephyr", "Echo", "Summit", "Breeze", "Metro", "Ridge", "Halo", "Swift",
    "Terra", "Luna", "Comet", "Glide", "Spark", "Arc", "Harbor", "Sierra", "Quest", "Nimbus",
)  # fmt: skip
_ADJECTIVES = ("Lightweight", "Durable", "Versatile", "Comfortable", "Sleek", "Practical")
_TITLE_TEMPLATES_SIZED = (
    "{brand} {model} {category}, {color}, {size}",
    "{brand} {category} {model} - {color}, {size}",
    "{model} {category} by {brand} ({color}, {size})",
    "{color} {brand} {model} {category}, {size}",
    "{brand} {model} {category} in {color} | {size}",
)
_TITLE_TEMPLATES_UNSIZED = (
    "{brand} {model} {category}, {color}",
    "{brand} {category} {model} - {color}",
    "{model} {category} by {brand} ({color})",
    "{color} {brand} {model} {category}",
    "{brand} {model} {category} in {color}",
)
_DESCRIPTION_TEMPLATES = (
    "{adj} {category} from {brand} with {feature}. {band}",
    "The {model} by {brand} combines {feature} and {feature2}. {band}",
    "{brand}'s {model} {category}: {feature}. Comes in {color}. {band}",
    "{band} This {color} {category} features {feature} and {feature2}.",
    "{adj} and ready for daily use: {feature}, {feature2}. {band}",
)


@dataclass(frozen=True)
class Catalogue:
    """The generated products, as parallel arrays (index = product number).

    Integer codes index :data:`CATEGORY_NAMES`, :data:`BRANDS`, :data:`COLORS`, :data:`SIZES`
    (``-1``: no size) and :data:`PRICE_BANDS`.
    """

    product_id: np.ndarray
    category: np.ndarray
    brand: np.ndarray
    color: np.ndarray
    size: np.ndarray
    band: np.ndarray
    price: np.ndarray
    title: np.ndarray
    description: np.ndarray

    def __len__(self) -> int:
        return len(self.product_id)


def build_catalogue(num_products: int, rng: np.random.Generator) -> Catalogue:
    """Draws ``num_products`` products, spread evenly over :data:`CATEGORIES`.

    Args:
        num_products: Number of products (at least one per category is recommended).
        rng: Random generator; the catalogue is a deterministic function of its state.

    Returns:
        The catalogue, products ordered by product number.
    """
    n = num_products
    category = np.arange(n) % len(CATEGORIES)
    rng.shuffle(category)
    brand = np.empty(n, dtype=np.int64)
    color = np.empty(n, dtype=np.int64)
    size = np.full(n, -1, dtype=np.int64)
    brand_code = {b: i for i, b in enumerate(BRANDS)}
    color_code = {c: i for i, c in enumerate(COLORS)}
    size_code = {s: i for i, s in enumerate(SIZES)}

    def draw(codes: list[int], count: int) -> np.ndarray:
        return np.array(codes)[rng.integers(len(codes), size=count)]

    for c, spec in enumerate(CATEGORIES):
        idx = np.flatnonzero(category == c)
        brand[idx] = draw([brand_code[b] for b in spec.brands], len(idx))
        color[idx] = draw([color_code[x] for x in spec.colors], len(idx))
        if spec.sizes:
            size[idx] = draw([size_code[s] for s in spec.sizes], len(idx))

    # Price band: 60% the brand's own tier, else uniform, so brand and price are correlated
    # (as in real catalogues) without being the same signal.
    tier = np.array([PRICE_BANDS.index(BRAND_TIERS[b]) for b in BRANDS])[brand]
    band = np.where(rng.random(n) < 0.6, tier, rng.integers(len(PRICE_BANDS), size=n))
    base = np.array([spec.base_price for spec in CATEGORIES])[category]
    price = base * _BAND_MULTIPLIER[band] * np.exp(rng.normal(0.0, 0.12, size=n))
    price = np.round(np.maximum(np.floor(price) + 0.99, 1.99), 2)

    model = rng.integers(len(_MODELS), size=n)
    title_tpl = rng.integers(len(_TITLE_TEMPLATES_SIZED), size=n)
    desc_tpl = rng.integers(len(_DESCRIPTION_TEMPLATES), size=n)
    adj = rng.integers(len(_ADJECTIVES), size=n)
    feat = rng.integers(4, size=(n, 2))
    feat[:, 1] = (feat[:, 0] + 1 + rng.integers(3, size=n)) % 4  # a different second feature
    phrase = rng.integers(3, size=n)

    titles: list[str] = []
    descriptions: list[str] = []
    for i in range(n):  # string formatting is per product; everything random is drawn above
        spec = CATEGORIES[category[i]]
        fields = {
            "brand": BRANDS[brand[i]],
            "model": _MODELS[model[i]],
            "category": spec.name,
            "color": COLORS[color[i]],
            "size": spec.size_text(SIZES[size[i]]) if size[i] >= 0 else "",
            "adj": _ADJECTIVES[adj[i]],
            "feature": spec.features[feat[i, 0]],
            "feature2": spec.features[feat[i, 1]],
            "band": _BAND_PHRASES[PRICE_BANDS[band[i]]][phrase[i]],
        }
        templates = _TITLE_TEMPLATES_SIZED if size[i] >= 0 else _TITLE_TEMPLATES_UNSIZED
        titles.append(templates[title_tpl[i]].format(**fields))
        descriptions.append(_DESCRIPTION_TEMPLATES[desc_tpl[i]].format(**fields))

    width = max(5, len(str(n - 1)))
    return Catalogue(
        product_id=np.array([f"P{i:0{width}d}" for i in range(n)], dtype=object),
        category=category,
        brand=brand,
        color=color,
        size=size,
        band=band,
        price=price,
        title=np.array(titles, dtype=object),
        description=np.array(descriptions, dtype=object),
    )
