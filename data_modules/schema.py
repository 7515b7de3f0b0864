"""Canonical log schema: the one table every data adapter produces.

One row is one (query, product) impression. Columns:

==================== ======== ========== =====================================================
column               dtype    required   meaning
==================== ======== ========== =====================================================
query_id             Utf8     yes        identifier of the query (list key; splits never cut it)
query                Utf8     yes        query text, non-empty
product_id           Utf8     yes        identifier of the product
product_title        Utf8     yes        product title, non-empty
product_description  Utf8     no         free text ("" when absent)
product_brand        Utf8     no         brand ("" when absent)
product_color        Utf8     no         colour ("" when absent)
region               Utf8     yes        market / distribution the impression comes from
position             Int64    no         1-based display position under the logging policy
relevance            Float64  no         graded relevance (0 .. MAX_RELEVANCE = 31)
click                Int64    no         1 if clicked, else 0
add_to_cart          Int64    no         1 if added to cart, else 0 (implies click)
purchase             Int64    no         1 if purchased, else 0 (implies add_to_cart)
==================== ======== ========== =====================================================

Any other column (category, price band, region features) is carried through untouched.
At least one label column must be present for training.

Adapters (:mod:`data_modules.adapters`) produce this table from published layouts and add a few
such columns of their own: ``rating`` (the raw Home Depot / CrowdFlower rating behind
``relevance``), ``grade``, ``esci_label``, ``split`` and ``product_bullet_point`` (ESCI), and
``source_region`` (the region a source had before :class:`~data_modules.adapters.MixSource`
named the region after the source). Graded ``relevance`` from an adapter is always a gain in
[0, 1] (the engagement simulator, ``data.engagement``, needs that).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

KEY_COLUMNS: tuple[str, ...] = ("query_id", "query", "product_id", "product_title", "region")
TEXT_COLUMNS: tuple[str, ...] = ("product_description", "product_brand", "product_color")
ENGAGEMENT_LABELS: tuple[str, ...] = ("click", "add_to_cart", "purchase")
LABEL_COLUMNS: tuple[str, ...] = ("relevance", *ENGAGEMENT_LABELS)
POSITION_COLUMN = "position"
# Largest graded relevance accepted. Metrics and several losses use the gain 2^y - 1: in float32
# it is exact up to y = 24, coarse beyond and infinite from y = 128, where NDCG becomes NaN. Real
# scales are grades 0..4 or gains in [0, 1]; a value above this is almost surely another column
# (a count, a price) mapped onto relevance by mistake.
MAX_RELEVANCE = 31.0

# The product side of a (query, product) pair when the config names no fields.
DEFAULT_PRODUCT_FIELDS: tuple[str, ...] = ("product_title", "product_brand", "product_color")


def product_text_expr(fields: Sequence[str]) -> pl.Expr:
    """The product side of a pair: ``fields`` joined by " ; ", empty ones left out."""
    return (
        pl.concat_str([pl.col(c).fill_null("") for c in fields], separator=" ; ")
        .str.replace_all(r"( ; )+$", "")
        .str.replace_all(r"( ; ){2,}", " ; ")
    )
