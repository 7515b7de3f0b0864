"""A tiny pair of files in the ESCI parquet layout, to try the adapter without the download.

The real files (github.com/amazon-science/esci-data) are large and not on every machine; tests
and quick checks write this sample instead. Columns and dtypes follow the published files:
examples ``example_id (int64), query (str), query_id (int64), product_id (str, ASIN),
product_locale (str), esci_label (str), small_version (int64), large_version (int64),
split (str)``; products ``product_id, product_title, product_description,
product_bullet_point, product_brand, product_color, product_locale`` (str, nullable).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import polars as pl

from data_modules.adapters.esci import EXAMPLES_FILE, PRODUCTS_FILE

_WORDS = {
    "us": ["red", "running", "shoes", "usb", "cable", "desk", "lamp", "wool", "socks", "mug"],
    "es": ["zapatos", "rojos", "cable", "lampara", "mesa", "calcetines", "taza", "funda"],
    "jp": ["靴", "赤", "ケーブル", "ランプ", "机", "靴下", "マグ", "ケース"],
}
_LABELS = np.array(["E", "S", "C", "I"])


def write_esci_sample(
    folder: str | Path,
    queries_per_locale: int = 8,
    products_per_query: int = 6,
    test_share: float = 0.3,
    seed: int = 0,
) -> Path:
    """Write ``shopping_queries_dataset_{examples,products}.parquet`` into ``folder``.

    Every query has ``products_per_query`` judged products with labels cycling E, S, C, I (so
    every query has an E); query texts are distinct within a locale; the last query of the us
    and es locales is large-version only (``small_version == 0``); the first
    ``round(test_share * queries_per_locale)`` queries of each locale are ``test``.

    Returns:
        ``folder``.
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    examples, products = [], []
    query_id = 0
    for locale, words in _WORDS.items():
        pairs = list(combinations(words, 2))
        order = rng.permutation(len(pairs))
        for q in range(queries_per_locale):
            # Distinct query texts within a locale: a text names one query, as in ESCI.
            query_words = list(pairs[order[q % len(pairs)]])
            query = " ".join(query_words) + (f" {q // len(pairs)}" if q >= len(pairs) else "")
            split = "test" if q < round(test_share * queries_per_locale) else "train"
            small = int(not (q == queries_per_locale - 1 and locale != "jp"))
            for p in range(products_per_query):
                label = str(_LABELS[p % 4])
                asin = f"B{locale.upper()}{query_id:04d}{p:02d}"
                examples.append(
                    {
                        "example_id": len(examples),
                        "query": query,
                        "query_id": query_id,
                        "product_id": asin,
                        "product_locale": locale,
                        "esci_label": label,
                        "small_version": small,
                        "large_version": 1,
                        "split": split,
                    }
                )
                title_words = query_words if label in "ES" else list(rng.choice(words, size=2))
                products.append(
                    {
                        "product_id": asin,
                        "product_title": " ".join([*title_words, f"model {p}"]),
                        "product_description": None if p % 3 == 0 else f"about {query}",
                        "product_bullet_point": f"- {title_words[0]}\n- size {p}",
                        "product_brand": None if p % 2 else f"brand{p}",
                        "product_color": ["black", "white", None][p % 3],
                        "product_locale": locale,
                    }
                )
            query_id += 1
    pl.DataFrame(examples).write_parquet(folder / EXAMPLES_FILE)
    pl.DataFrame(products, schema_overrides={c: pl.Utf8 for c in products[0] if c}).write_parquet(
        folder / PRODUCTS_FILE
    )
    return folder
