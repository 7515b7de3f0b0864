"""Engagement model: logging policy, examination, and the click -> cart -> purchase cascade.

The user model is a position-based model (PBM; Richardson et al. 2007, "Predicting clicks";
Craswell et al. 2008, "An experimental comparison of click position-bias models") extended with a
conversion cascade, in the multi-distribution setting of Wang et al., "SEQ+MD: Learning
Multi-Task as a SEQuence with Multi-Distribution Data" (Etsy): click behaviour is much the same
across regions, conversion is where they differ.

1. A logging policy shows the candidates ranked by ``relevance + N(0, logging_noise^2)``.
2. The item at rank ``r`` is examined with ``P(E | r) = (1 / r) ** eta_region``, damped by
   ``continue_after_purchase`` for every purchase made higher up the list (satisfied shoppers
   tend to stop: the cascade idea of Craswell et al. 2008).
3. An examined item is clicked with its attractiveness ``P(C | E)`` (relevance, and a little
   brand affinity).
4. A clicked item goes to the cart with ``P(A | C)`` (relevance + region brand, price-band and
   colour affinity).
5. A carted item is bought with ``P(B | A)`` (relevance + region brand affinity and price
   sensitivity).

Each stage only fires if the previous one did, so purchase <= add_to_cart <= click per row by
construction. Stages 3-5 depend only on columns of the output table, so the generating
probabilities can be recomputed from the table: :func:`stage_probabilities` and
:func:`expected_purchase_probability` are the ground truth that the generator itself uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from data_modules.synthetic.catalogue import BASE_PRICE
from data_modules.synthetic.config import SyntheticConfig
from data_modules.synthetic.regions import RegionProfile


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _lookup(values: np.ndarray, mapping: Mapping[str, float], default: float = 0.0) -> np.ndarray:
    """Maps each string in ``values`` through ``mapping`` (vectorised over unique values)."""
    unique, inverse = np.unique(values, return_inverse=True)
    table = np.array([float(mapping.get(str(u), default)) for u in unique], dtype=np.float64)
    return table[inverse.reshape(-1)] if len(unique) else np.zeros(0)


def examination_probability(position: np.ndarray, eta: np.ndarray | float) -> np.ndarray:
    """PBM examination probability ``(1 / position) ** eta`` for 1-based positions."""
    return np.power(np.asarray(position, dtype=np.float64), -np.asarray(eta, dtype=np.float64))


def logging_positions(relevance: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Display positions from a noisy relevance ranking.

    Args:
        relevance: Relevance, shape ``[num_queries, list_size]``.
        noise: Std of the Gaussian noise added to relevance before sorting.
        rng: Random generator.

    Returns:
        1-based positions of the same shape; each row is a permutation of ``1..list_size``.
    """
    score = relevance + rng.normal(0.0, noise, size=relevance.shape)
    order = np.argsort(-score, axis=1, kind="stable")
    positions = np.empty_like(order)
    np.put_along_axis(positions, order, np.arange(1, relevance.shape[1] + 1)[None, :], axis=1)
    return positions


@dataclass(frozen=True)
class StageProbabilities:
    """Per-row probabilities of the position-independent stages of the cascade.

    Attributes:
        click: Attractiveness, ``P(click | examined)``.
        add_to_cart: ``P(add_to_cart | click)``.
        purchase: ``P(purchase | add_to_cart)``.
    """

    click: np.ndarray
    add_to_cart: np.ndarray
    purchase: np.ndarray

    @property
    def purchase_given_examined(self) -> np.ndarray:
        """``P(purchase | examined)`` = attractiveness x cart rate x purchase rate."""
        return self.click * self.add_to_cart * self.purchase


def _stages_for_region(
    table: pl.DataFrame, config: SyntheticConfig, profile: RegionProfile
) -> StageProbabilities:
    rel = np.clip(np.rint(table["relevance"].to_numpy()), 0, 3).astype(np.int64)
    brand_aff = _lookup(table["product_brand"].to_numpy(), profile.brand_affinity)
    band_aff = _lookup(table["price_band"].to_numpy(), profile.price_band_affinity)
    color_aff = _lookup(table["product_color"].to_numpy(), profile.color_affinity)
    base = _lookup(table["product_category"].to_numpy(), BASE_PRICE, default=np.nan)
    rel_log_price = np.log(table["price"].to_numpy() / base)
    if np.isnan(rel_log_price).any():
        raise ValueError("stage_probabilities: unknown product_category or invalid price")

    click = _sigmoid(
        np.asarray(config.click_logits)[rel] + config.click_affinity_weight * brand_aff
    )
    cart = _sigmoid(np.asarray(config.cart_logits)[rel] + brand_aff + band_aff + color_aff)
    purchase = _sigmoid(
        np.asarray(config.purchase_logits)[rel]
        + config.purchase_affinity_weight * brand_aff
        - profile.price_sensitivity * rel_log_price
    )
    return StageProbabilities(click=click, add_to_cart=cart, purchase=purchase)


def stage_probabilities(
    table: pl.DataFrame, config: SyntheticConfig, region: str | None = None
) -> StageProbabilities:
    """True stage probabilities per row, as the generator draws them.

    Args:
        table: A synthetic table (needs relevance, product_brand, product_color, price_band,
            product_category, price and, unless ``region`` is given, region).
        config: The config the table was generated with.
        region: Evaluate every row as if it came from this region; ``None`` uses each row's own.

    Returns:
        The three stage probabilities per row.

    Raises:
        ValueError: If a row's region is not configured.
    """
    if region is not None:
        return _stages_for_region(table, config, config.region(region))
    regions = table["region"].to_numpy()
    unknown = set(np.unique(regions).tolist()) - set(config.region_names)
    if unknown:
        raise ValueError(f"rows from regions {sorted(unknown)} not in config.regions")
    out = {k: np.zeros(table.height) for k in ("click", "add_to_cart", "purchase")}
    for profile in config.regions:
        mask = regions == profile.name
        if not mask.any():
            continue
        part = _stages_for_region(table.filter(pl.Series(mask)), config, profile)
        for key in out:
            out[key][mask] = getattr(part, key)
    return StageProbabilities(**out)


def expected_purchase_probability(
    table: pl.DataFrame, config: SyntheticConfig, region_aware: bool = True
) -> np.ndarray:
    """Ground-truth ``P(purchase | examined)`` per row (position-independent).

    This is attractiveness x P(cart | click) x P(purchase | cart): what an ideal ranker of
    purchases should sort by once position bias is removed.

    Args:
        table: A synthetic table.
        config: The config it was generated with.
        region_aware: If True, use each row's own region profile (the region-aware oracle). If
            False, average the probability over all configured regions with equal weight (a
            region-blind oracle that knows everything except the market).

    Returns:
        Float64 array, one value per row.
    """
    if region_aware:
        return stage_probabilities(table, config).purchase_given_examined
    per_region = [
        _stages_for_region(table, config, profile).purchase_given_examined
        for profile in config.regions
    ]
    return np.mean(per_region, axis=0)


def simulate_engagement(
    table: pl.DataFrame, config: SyntheticConfig, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Draws click, add_to_cart and purchase for every row of ``table``.

    Users scan each list in display order. The item at rank ``r`` is examined with the PBM
    probability ``r ** -eta``, times ``continue_after_purchase ** k`` once the user has bought
    ``k`` items higher up (a satisfied shopper tends to stop, as in the cascade model of Craswell
    et al. 2008 and the DBN of Chapelle & Zhang 2009); examined items go through the
    click -> cart -> purchase stages of :func:`stage_probabilities`.

    Args:
        table: Rows with ``query_id``, ``position`` (unique within a query) and the columns
            :func:`stage_probabilities` needs.
        config: Generator config (region profiles and stage logits).
        rng: Random generator.

    Returns:
        ``{"click", "add_to_cart", "purchase"}`` -> int64 0/1 arrays, nested by construction.
    """
    n = table.height
    eta = _lookup(table["region"].to_numpy(), {r.name: r.examination_eta for r in config.regions})
    base_exam = examination_probability(table["position"].to_numpy(), eta)
    stages = stage_probabilities(table, config)
    u_exam, u_click, u_cart, u_buy = rng.random((4, n))
    click = np.zeros(n, dtype=bool)
    cart = np.zeros(n, dtype=bool)
    purchase = np.zeros(n, dtype=bool)

    _, query = np.unique(table["query_id"].to_numpy(), return_inverse=True)
    bought = np.zeros(query.max() + 1 if n else 0, dtype=np.int64)
    position = table["position"].to_numpy()
    order = np.argsort(position, kind="stable")
    starts = np.flatnonzero(np.diff(position[order], prepend=np.nan) != 0)
    for rows in np.split(order, starts[1:]):  # one rank at a time, all queries at once
        q = query[rows]
        satiety = np.power(config.continue_after_purchase, bought[q])
        examined = u_exam[rows] < base_exam[rows] * satiety
        click[rows] = examined & (u_click[rows] < stages.click[rows])
        cart[rows] = click[rows] & (u_cart[rows] < stages.add_to_cart[rows])
        purchase[rows] = cart[rows] & (u_buy[rows] < stages.purchase[rows])
        np.add.at(bought, q, purchase[rows].astype(np.int64))
    return {
        "click": click.astype(np.int64),
        "add_to_cart": cart.astype(np.int64),
        "purchase": purchase.astype(np.int64),
    }
