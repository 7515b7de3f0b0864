"""Amazon Shopping Queries (ESCI, KDD Cup 2022) -> canonical table.

Layout (github.com/amazon-science/esci-data, ``shopping_queries_dataset/``, Apache-2.0):

* ``shopping_queries_dataset_examples.parquet``: ``example_id, query, query_id, product_id,
  product_locale, esci_label, small_version, large_version, split``
* ``shopping_queries_dataset_products.parquet``: ``product_id, product_locale, product_title,
  product_description, product_bullet_point, product_brand, product_color``

Mapping:
    * examples joined to products on ``(product_locale, product_id)`` (as the dataset's README
      does); ``region = product_locale`` (us, es, jp), ``query_id`` as text,
    * ``esci_label`` E/S/C/I -> ``relevance`` gains 1 / 0.1 / 0.01 / 0 (Reddy et al. 2022, the
      paper's gains) and ``grade`` 3 / 2 / 1 / 0,
    * product text: title, brand, colour and bullet points (``product_bullet_point`` is carried
      and named in ``conf/data/esci.yaml``'s ``product_text_fields``); the description is kept as
      ``product_description``,
    * ``small_version=True`` keeps the Task 1 ranking set (``small_version == 1``, 48,300 queries);
      ``False`` keeps every row (the large version, 130,652 queries),
    * ``split`` (train / test) is kept: with ``data.split_column: split`` the official test set is
      the test split and validation is carved out of the official train queries by query text
      with the seed (:func:`data_modules.splits.split_predefined`).

Scoring conventions (read before comparing with published numbers): the official scoring
(``ranking/prepare_trec_eval_files.py`` in esci-data, ``trec_eval -c -m ndcg.1=0,2=0.01,3=0.1,
4=1``) maps S to 2 and C to 3, so it scores **S with gain 0.01 and C with 0.1** (the paper's
gains swapped), and with ``-c`` it averages over every test query, scoring a query without any
relevant product **0**. shoprank uses the paper's gains (E 1, S 0.1, C 0.01, I 0; change them
with ``gains``) and its metrics leave a list without a positive label **out of the mean** (it
cannot be ranked better or worse). Our NDCG is therefore higher than the official one on the same
ranking by the share of all-irrelevant queries; pass ``gains: {E: 1, S: 0.01, C: 0.1, I: 0}``
to reproduce the official gains.

Products whose title is empty cannot be scored by a text model: their rows are removed and
counted in the drop report. An example whose product is absent from the products file is an
error (the files do not belong together).

Reference: Reddy et al., "Shopping Queries Dataset: A Large-Scale ESCI Benchmark for Improving
Product Search", arXiv:2206.06588, 2022.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from data_modules.adapters._common import fail, first_rows, with_file_rows
from data_modules.adapters.base import Adapter
from data_modules.errors import ConfigError, DataValidationError
from data_modules.sources import check_path, read_table
from data_modules.validation import require_columns

EXAMPLES_FILE = "shopping_queries_dataset_examples.parquet"
PRODUCTS_FILE = "shopping_queries_dataset_products.parquet"
EXAMPLE_COLUMNS = (
    "query",
    "query_id",
    "product_id",
    "product_locale",
    "esci_label",
    "small_version",
    "split",
)
PRODUCT_COLUMNS = ("product_id", "product_locale", "product_title")
PRODUCT_TEXT = ("product_description", "product_bullet_point", "product_brand", "product_color")
#: Gains of the paper (Reddy et al. 2022); the official trec_eval call swaps S and C.
ESCI_GAINS: dict[str, float] = {"E": 1.0, "S": 0.1, "C": 0.01, "I": 0.0}
ESCI_GRADES: dict[str, int] = {"E": 3, "S": 2, "C": 1, "I": 0}
SPLITS = ("train", "test")


class EsciSource(Adapter):
    """The ESCI examples and products parquet files as one canonical table.

    Args:
        path: Directory holding both files (``shopping_queries_dataset/``).
        examples: File name (or path) of the examples, relative to ``path``.
        products: File name (or path) of the products, relative to ``path``.
        small_version: Keep only the Task 1 ranking set (``small_version == 1``).
        locales: Keep these locales (``None``: all); each locale is one region.
        gains: ``{label: gain}`` for E, S, C, I (default: the paper's 1, 0.1, 0.01, 0).
        max_queries: Keep this many queries, chosen with ``seed`` (``None``: all).
        seed: Seed of that choice.
    """

    def __init__(
        self,
        path: str | Path,
        examples: str = EXAMPLES_FILE,
        products: str = PRODUCTS_FILE,
        small_version: bool = True,
        locales: Sequence[str] | None = None,
        gains: Mapping[str, float] | None = None,
        max_queries: int | None = None,
        seed: int = 0,
    ) -> None:
        root = check_path(path, "data.source.path")
        self.examples_path = root / examples
        self.products_path = root / products
        self.small_version = bool(small_version)
        self.locales = None if locales is None else [str(loc) for loc in locales]
        self.gains = dict(ESCI_GAINS if gains is None else gains)
        if sorted(self.gains) != sorted(ESCI_GAINS):
            raise ConfigError(
                "data.source.gains must give a gain for each of E, S, C, I; "
                f"got {sorted(self.gains)}"
            )
        bad = {k: v for k, v in self.gains.items() if not 0.0 <= float(v) <= 1.0}
        if bad:
            raise ConfigError(f"data.source.gains must lie in [0, 1]; got {bad}")
        super().__init__(f"esci({root})", max_queries, seed)

    def _examples(self) -> pl.DataFrame:
        source = str(self.examples_path)
        df = read_table(
            self.examples_path,
            key="data.source.path / data.source.examples",
            text_columns=("query", "query_id", "product_id", "product_locale"),
        )
        require_columns(df, source, EXAMPLE_COLUMNS)
        df = with_file_rows(df).with_columns(
            pl.col("esci_label").cast(pl.Utf8), pl.col("split").cast(pl.Utf8)
        )
        for column, allowed in (("esci_label", tuple(ESCI_GAINS)), ("split", SPLITS)):
            bad = pl.col(column).is_null() | ~pl.col(column).is_in(allowed)
            fail(source, column, f"values outside {list(allowed)}", df, bad)
        version = pl.col("small_version").cast(pl.Int64, strict=False)
        fail(
            source,
            "small_version",
            "values other than 0 or 1",
            df,
            ~version.fill_null(-1).is_in([0, 1]),
        )
        if self.small_version:
            df = df.filter(version == 1)
        if self.locales is not None:
            present = sorted(df.get_column("product_locale").unique().to_list())
            unknown = sorted(set(self.locales) - set(present))
            if unknown:
                raise ConfigError(
                    f"data.source.locales names locale(s) {unknown} absent from {source}; "
                    f"present: {present}"
                )
            df = df.filter(pl.col("product_locale").is_in(self.locales))
        return df

    def _products(self) -> pl.DataFrame:
        source = str(self.products_path)
        df = read_table(
            self.products_path,
            key="data.source.path / data.source.products",
            text_columns=("product_id", "product_locale", "product_title", *PRODUCT_TEXT),
        )
        require_columns(df, source, PRODUCT_COLUMNS)
        df = with_file_rows(df)
        fail(
            source,
            "product_id",
            "rows repeating a (product_id, product_locale) pair",
            df,
            pl.struct("product_id", "product_locale").is_duplicated(),
        )
        text = [c for c in PRODUCT_TEXT if c in df.columns]
        return df.select(
            "product_id",
            "product_locale",
            *[pl.col(c).cast(pl.Utf8).str.strip_chars() for c in ("product_title", *text)],
            *[pl.lit("").alias(c) for c in PRODUCT_TEXT if c not in df.columns],
        )

    def _read(self) -> pl.DataFrame:
        examples, products = self._examples(), self._products()
        joined = examples.join(
            products.with_columns(pl.lit(True).alias("__found")),
            on=["product_id", "product_locale"],
            how="left",
            maintain_order="left",
        )
        orphan = pl.col("__found").is_null()
        if (count := joined.select(orphan.sum()).item()) > 0:
            rows = ", ".join(map(str, first_rows(joined, orphan)))
            raise DataValidationError(
                f"{self.examples_path}: {count} examples have no (product_id, product_locale) "
                f"in {self.products_path} (first at row {rows}); the two files do not match"
            )
        untitled = pl.col("product_title").is_null() | (pl.col("product_title") == "")
        n_untitled = joined.select(untitled.sum()).item()
        self.report.add(
            "products without a title",
            n_untitled,
            joined.filter(untitled).get_column("query_id").n_unique(),
        )
        joined = joined.filter(~untitled)
        label = pl.col("esci_label")
        return joined.select(
            pl.col("query_id").cast(pl.Utf8),
            pl.col("query").cast(pl.Utf8),
            pl.col("product_id").cast(pl.Utf8),
            "product_title",
            *PRODUCT_TEXT,
            pl.col("product_locale").cast(pl.Utf8).alias("region"),
            label.replace_strict(self.gains, return_dtype=pl.Float64).alias("relevance"),
            label.replace_strict(ESCI_GRADES, return_dtype=pl.Int64).alias("grade"),
            "esci_label",
            "split",
            *[c for c in ("example_id",) if c in joined.columns],
        )
