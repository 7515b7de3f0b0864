"""Queries, graded relevance and candidate lists.

A query is built around an *anchor* product: the region picks a category (by its
``category_weights``), an anchor product of that category is drawn (leaning towards the region's
favoured brands and price bands), and a template states a subset
of the anchor's attributes (brand, colour, size, price band), e.g. ``"red running shoes"``,
``"kuma backpack 20L"``, ``"cheap coffee maker"``. So every query has at least one exact match.
The vocabulary is the same in every region.

Relevance (0..3) depends only on the query and the product, never on the region:

* 3 -- same category and every stated attribute matches;
* 2 -- same category and at least half (but not all) of the stated attributes match;
* 1 -- same category with fewer matches, or a related category (see ``RELATED_CATEGORIES``);
* 0 -- unrelated.

A candidate list mixes exact matches (3), near matches (2), same-category weak matches (1), related
categories (1) and unrelated products (0) in proportions drawn around
``SyntheticConfig.candidate_mix``, in random order. A pool too small for its share hands the
remaining slots to the next pool (near -> weak -> related -> unrelated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_modules.synthetic.catalogue import (
    BRANDS,
    CATEGORIES,
    CATEGORY_NAMES,
    COLORS,
    RELATED_CATEGORIES,
    SIZES,
    Catalogue,
)
from data_modules.synthetic.regions import PRICE_BANDS, RegionProfile

_BAND_WORDS = {"budget": ("cheap", "budget", "affordable"), "premium": ("premium", "high-end")}

# (stated attributes, text templates, relative frequency)
_QUERY_TEMPLATES: tuple[tuple[tuple[str, ...], tuple[str, ...], float], ...] = (
    ((), ("{category}",), 0.04),
    (("color",), ("{color} {category}", "{category} in {color}"), 0.16),
    (("brand",), ("{brand} {category}", "{category} by {brand}"), 0.16),
    (("size",), ("{category} {size}",), 0.08),
    (("band",), ("{band} {category}",), 0.12),
    (("brand", "color"), ("{brand} {color} {category}", "{color} {category} by {brand}"), 0.12),
    (("color", "size"), ("{color} {category} {size}",), 0.08),
    (("band", "color"), ("{band} {color} {category}",), 0.08),
    (("brand", "size"), ("{brand} {category} {size}",), 0.06),
    (("brand", "color", "size"), ("{brand} {color} {category} {size}",), 0.05),
    (("band", "size"), ("{band} {category} {size}",), 0.05),
)
_MID = PRICE_BANDS.index("mid")


def _related_matrix() -> np.ndarray:
    related = np.zeros((len(CATEGORIES), len(CATEGORIES)), dtype=bool)
    for a, b in RELATED_CATEGORIES:
        i, j = CATEGORY_NAMES.index(a), CATEGORY_NAMES.index(b)
        related[i, j] = related[j, i] = True
    return related


RELATED = _related_matrix()


@dataclass(frozen=True)
class QueryAttributes:
    """Parsed query intent as integer codes (``-1``: attribute not stated).

    Codes index ``CATEGORY_NAMES``, ``BRANDS``, ``COLORS``, ``SIZES`` and ``PRICE_BANDS``.
    Arrays are parallel (one entry per query, or per row after indexing).
    """

    category: np.ndarray
    brand: np.ndarray
    color: np.ndarray
    size: np.ndarray
    band: np.ndarray

    def take(self, index: np.ndarray) -> QueryAttributes:
        """Returns the attributes of the queries at ``index``."""
        return QueryAttributes(
            self.category[index], self.brand[index], self.color[index], self.size[index],
            self.band[index],
        )  # fmt: skip


def grade_relevance(
    query: QueryAttributes, catalogue: Catalogue, products: np.ndarray
) -> np.ndarray:
    """Graded relevance 0..3 of ``products`` for ``query`` (broadcast elementwise).

    Args:
        query: Query attributes, one entry per pair (or scalar arrays broadcast to all products).
        catalogue: The catalogue.
        products: Product indices, one per pair.

    Returns:
        Integer relevance per pair.
    """
    stated = [query.brand >= 0, query.color >= 0, query.size >= 0, query.band >= 0]
    matches = [
        query.brand == catalogue.brand[products],
        query.color == catalogue.color[products],
        query.size == catalogue.size[products],
        query.band == catalogue.band[products],
    ]
    n_stated = sum(s.astype(np.int64) for s in stated)
    n_matched = sum((s & m).astype(np.int64) for s, m in zip(stated, matches, strict=True))
    p_cat = catalogue.category[products]
    same = query.category == p_cat
    within = np.where(
        n_matched == n_stated, 3, np.where((n_matched >= 1) & (2 * n_matched >= n_stated), 2, 1)
    )
    return np.where(same, within, RELATED[query.category, p_cat].astype(np.int64))


@dataclass(frozen=True)
class QuerySet:
    """Generated queries and their candidate lists.

    Attributes:
        query_id: Query ids, ``"<region>-<number>"``.
        text: Query text.
        region: Index into ``SyntheticConfig.regions`` per query.
        attributes: Parsed intent per query.
        candidates: Product indices, shape ``[num_queries, list_size]``, in random order.
    """

    query_id: np.ndarray
    text: np.ndarray
    region: np.ndarray
    attributes: QueryAttributes
    candidates: np.ndarray


def _queries_per_region(num_queries: int, num_regions: int) -> np.ndarray:
    counts = np.full(num_regions, num_queries // num_regions)
    counts[: num_queries % num_regions] += 1
    return counts


def _pick_template(has_size: bool, mid_band: bool, rng: np.random.Generator) -> int:
    weights = np.array(
        [
            w * (not ("size" in attrs and not has_size)) * (not ("band" in attrs and mid_band))
            for attrs, _, w in _QUERY_TEMPLATES
        ]
    )
    return int(rng.choice(len(weights), p=weights / weights.sum()))


def _sample_candidates(
    query: QueryAttributes,
    catalogue: Catalogue,
    list_size: int,
    mix: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    everything = np.arange(len(catalogue))
    rel = grade_relevance(query, catalogue, everything)
    same = catalogue.category == query.category
    pools = [
        np.flatnonzero(rel == 3),
        np.flatnonzero(rel == 2),
        np.flatnonzero(same & (rel == 1)),
        np.flatnonzero(~same & (rel == 1)),
        np.flatnonzero(rel == 0),
    ]
    counts = rng.multinomial(list_size, mix)
    if counts[0] == 0:  # every list holds at least one exact match (the anchor's kind)
        counts[0] = 1
        counts[int(np.argmax(counts[1:])) + 1] -= 1
    chosen: list[np.ndarray] = []
    carry = 0
    for pool, count in zip(pools, counts, strict=True):
        take = min(int(count) + carry, len(pool))
        carry = int(count) + carry - take  # a short pool hands its slots to the next one
        chosen.append(rng.choice(pool, size=take, replace=False))
    picked = np.concatenate(chosen)
    if carry:  # only in tiny catalogues: fill from whatever is left
        rest = np.setdiff1d(everything, picked)
        picked = np.concatenate([picked, rng.choice(rest, size=carry, replace=False)])
    return rng.permutation(picked)


def build_queries(
    catalogue: Catalogue,
    regions: tuple[RegionProfile, ...],
    num_queries: int,
    list_size: int,
    candidate_mix: tuple[float, ...],
    rng: np.random.Generator,
    anchor_affinity_weight: float = 0.0,
) -> QuerySet:
    """Draws queries for every region and a candidate list for each.

    Args:
        catalogue: The products.
        regions: Region profiles; queries are split evenly over them (earlier regions get the
            remainder).
        num_queries: Total number of queries.
        list_size: Candidates per query.
        candidate_mix: Expected fractions of (exact, near, weak, related, unrelated) candidates.
        rng: Random generator.
        anchor_affinity_weight: How strongly a region's brand and price-band affinities tilt the
            choice of anchor products (0: uniform within the category).

    Returns:
        The query set; ``candidates`` has shape ``[num_queries, list_size]``.
    """
    mix = np.asarray(candidate_mix, dtype=float)
    mix = mix / mix.sum()
    present = np.bincount(catalogue.category, minlength=len(CATEGORIES)) > 0
    by_category = [np.flatnonzero(catalogue.category == c) for c in range(len(CATEGORIES))]
    per_region = _queries_per_region(num_queries, len(regions))

    ids: list[str] = []
    texts: list[str] = []
    region_idx = np.repeat(np.arange(len(regions)), per_region)
    attrs = {k: np.full(num_queries, -1, dtype=np.int64) for k in ("c", "b", "o", "s", "p")}
    candidates = np.empty((num_queries, list_size), dtype=np.int64)
    q = 0
    for r, profile in enumerate(regions):
        weights = np.array([profile.category_weights.get(n, 1.0) for n in CATEGORY_NAMES]) * present
        cats = rng.choice(len(CATEGORIES), size=per_region[r], p=weights / weights.sum())
        # Shoppers search for what their market likes: anchors lean towards the region's
        # favoured brands and price bands (covariate shift that matches the preferences).
        lean = anchor_affinity_weight * (
            np.array([profile.brand_affinity.get(b, 0.0) for b in BRANDS])[catalogue.brand]
            + np.array([profile.price_band_affinity.get(b, 0.0) for b in PRICE_BANDS])[
                catalogue.band
            ]
        )
        for j, c in enumerate(cats):
            pool = by_category[c]
            tilt = np.exp(lean[pool] - lean[pool].max())
            anchor = int(rng.choice(pool, p=tilt / tilt.sum()))
            spec = CATEGORIES[c]
            band = int(catalogue.band[anchor])
            t = _pick_template(bool(spec.sizes), band == _MID, rng)
            stated, templates, _ = _QUERY_TEMPLATES[t]
            attrs["c"][q] = c
            if "brand" in stated:
                attrs["b"][q] = catalogue.brand[anchor]
            if "color" in stated:
                attrs["o"][q] = catalogue.color[anchor]
            if "size" in stated:
                attrs["s"][q] = catalogue.size[anchor]
            if "band" in stated:
                attrs["p"][q] = band
            size = int(catalogue.size[anchor])
            band_words = _BAND_WORDS.get(PRICE_BANDS[band], ("",))
            text = templates[int(rng.integers(len(templates)))].format(
                category=spec.name,
                brand=BRANDS[catalogue.brand[anchor]].lower(),
                color=COLORS[catalogue.color[anchor]],
                size=spec.size_text(SIZES[size]) if size >= 0 else "",
                band=band_words[int(rng.integers(len(band_words)))],
            )
            ids.append(f"{profile.name}-{j:05d}")
            texts.append(text)
            query = QueryAttributes(*(attrs[k][q] for k in ("c", "b", "o", "s", "p")))
            candidates[q] = _sample_candidates(query, catalogue, list_size, mix, rng)
            q += 1

    return QuerySet(
        query_id=np.array(ids, dtype=object),
        text=np.array(texts, dtype=object),
        region=region_idx,
        attributes=QueryAttributes(attrs["c"], attrs["b"], attrs["o"], attrs["s"], attrs["p"]),
        candidates=candidates,
    )
