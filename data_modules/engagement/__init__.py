"""Engagement simulator: click, add-to-cart and purchase labels for graded-relevance datasets.

Home Depot, CrowdFlower and ESCI carry graded relevance only. :class:`EngagementSimulator`
turns each relevance gain ``g`` in [0, 1] into engagement under an explicit user model, so the
multi-task (click -> add-to-cart -> purchase) and multi-region machinery can run on them:

1. **Logging policy.** A noisy relevance ranker orders each query's rows:
   ``score = g + logging_noise * z``, ``z ~ N(0, 1)``, shown by descending score (ties by the
   item key, e.g. product id); ``position`` is the 1-based rank. As in the unbiased-LTR
   simulations of Joachims et al. 2017, the logged ranking is good but imperfect, so position
   and relevance are correlated without being the same signal.
2. **Examination (position-based model).** ``P(E | p) = (1 / p) ** eta_r`` (examination
   hypothesis: Richardson et al. 2007; PBM: Craswell et al. 2008; power-law propensity:
   Joachims et al. 2017), with the exponent ``eta_r`` of the row's region ``r``.
3. **Click given examination.** ``P(C | E) = click_low_r + (click_high_r - click_low_r) * g``:
   click noise ``eps-`` on irrelevant items and ``eps+`` on perfect ones, the click model of
   the unbiased-LTR literature (Joachims et al. 2017; Ai et al. 2018), i.e. the attractiveness
   parameter of PBM/cascade click models (Chuklin, Markov & de Rijke 2015).
4. **Conversion cascade.** ``P(A | C) = add_to_cart_low_r + (.._high_r - .._low_r) * g`` and
   ``P(B | A) = purchase_low_r + (.._high_r - .._low_r) * g``: each stage is reached only
   through the previous one, as the satisfaction stage of the DBN cascade (Chapelle & Zhang
   2009) and the click -> cart -> purchase sequence of SEQ+MD (Wang et al.), where conversion
   is what differs most between regions. Hence ``purchase <= add_to_cart <= click`` per row.

Every draw comes from a numpy generator seeded by ``(seed, BLAKE2b(query_id))``
(:mod:`data_modules.engagement.draws`), so a query's labels do not depend on other queries or
on row order. The examination probabilities do not depend on other rows' clicks (PBM, not the
cascade model's "stop after a click"), which keeps the per-row probabilities exact and
testable: :func:`engagement_probabilities` gives them, and
:meth:`EngagementSimulator.probabilities` gives them for a table.

References:
    Richardson, Dominowska, Ragno. Predicting clicks: estimating the click-through rate for new
    ads. WWW 2007. -- Craswell, Zoeter, Taylor, Ramsey. An experimental comparison of click
    position-bias models. WSDM 2008. -- Chapelle, Zhang. A dynamic Bayesian network click model
    for web search ranking. WWW 2009. -- Chuklin, Markov, de Rijke. Click Models for Web Search.
    Morgan & Claypool 2015. -- Joachims, Swaminathan, Schnabel. Unbiased learning-to-rank with
    biased feedback. WSDM 2017. -- Ai, Bi, Luo, Guo, Croft. Unbiased learning to rank with
    unbiased propensity estimation. SIGIR 2018.

Example:
    >>> import polars as pl
    >>> from data_modules.engagement import EngagementSimulator
    >>> table = pl.DataFrame({"query_id": ["q1"] * 3, "product_id": ["a", "b", "c"],
    ...                       "region": ["jp"] * 3, "relevance": [1.0, 0.1, 0.0]})
    >>> simulator = EngagementSimulator(seed=0, logging_noise=0.0)
    >>> expected = simulator.probabilities(table, "demo")
    >>> expected["position"].to_list(), expected["p_examination"].round(3).to_list()
    ([1, 2, 3], [1.0, 0.707, 0.577])
    >>> labels = simulator.apply(table, "demo")  # adds position, click, add_to_cart, purchase
"""

from data_modules.engagement.model import (
    EngagementProbabilities,
    engagement_probabilities,
    examination_probability,
    logging_positions,
    stage_probability,
)
from data_modules.engagement.params import RegionParams, resolve_regions
from data_modules.engagement.simulator import OUTPUT_COLUMNS, EngagementSimulator

__all__ = [
    "OUTPUT_COLUMNS",
    "EngagementProbabilities",
    "EngagementSimulator",
    "RegionParams",
    "engagement_probabilities",
    "examination_probability",
    "logging_positions",
    "resolve_regions",
    "stage_probability",
]
