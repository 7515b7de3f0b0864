"""Synthetic multi-region e-commerce search logs with graded relevance and engagement.

A deterministic generator of the canonical table (``data_modules/schema.py``) for tests and
experiments: a templated product catalogue, attribute queries shared across regions, graded
relevance 0..3, and a click -> add-to-cart -> purchase cascade under a position-based
examination model (Richardson et al. 2007; Craswell et al. 2008) whose conversion stages follow
region-specific brand, price and colour preferences (the multi-distribution setting of SEQ+MD).

Example:
    >>> from data_modules.synthetic import SyntheticConfig, generate_synthetic
    >>> table = generate_synthetic(SyntheticConfig(num_queries=30, seed=1))
    >>> table.height
    600
"""

from data_modules.synthetic.config import SyntheticConfig
from data_modules.synthetic.engagement import (
    StageProbabilities,
    examination_probability,
    expected_purchase_probability,
    stage_probabilities,
)
from data_modules.synthetic.generator import COLUMNS, generate_synthetic, summarise, write_synthetic
from data_modules.synthetic.regions import PRICE_BANDS, RegionProfile, default_regions

__all__ = [
    "COLUMNS",
    "PRICE_BANDS",
    "RegionProfile",
    "StageProbabilities",
    "SyntheticConfig",
    "default_regions",
    "examination_probability",
    "expected_purchase_probability",
    "generate_synthetic",
    "stage_probabilities",
    "summarise",
    "write_synthetic",
]
