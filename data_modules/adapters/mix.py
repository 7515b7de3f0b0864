"""Several sources as one multi-distribution table: each source becomes one region.

This is the multi-region (SEQ+MD) setting on real data: e.g. Home Depot and CrowdFlower, two
single-market datasets, trained together as two "regions" whose label distributions differ.

For every source key ``k``: ``region = k`` (the source's own region is kept in
``source_region``), and ``query_id``/``product_id`` become ``"k:<id>"`` so that ids from
different sources cannot collide. Query texts are left as they are, so a query text present in
two sources still lands in one split (splits are by query text). Columns one source lacks are
null for the other's rows (optional text columns become ""); a *label* column present in some
sources only is an error, since its missing values could not be told from negatives.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from data_modules.errors import ConfigError, DataValidationError
from data_modules.schema import LABEL_COLUMNS
from data_modules.sources import TableSource
from data_modules.validation import DropReport, require_columns


class MixSource:
    """Concatenation of several sources, one region per source.

    Args:
        sources: ``{key: source}``; the key becomes the region and the id prefix.
    """

    def __init__(self, sources: Mapping[str, TableSource]) -> None:
        if not sources:
            raise ConfigError("data.source.sources is empty: name at least one source")
        bad = [k for k in sources if not isinstance(k, str) or not k or ":" in k]
        if bad:
            raise ConfigError(
                f"data.source.sources keys must be non-empty names without ':', got {bad}"
            )
        self.sources = dict(sources)
        self.name = "mix(" + "+".join(self.sources) + ")"
        self.report = DropReport(self.name)

    def load(self) -> pl.DataFrame:
        self.report = DropReport(self.name)
        tables = {}
        for key, source in self.sources.items():
            table = source.load()
            require_columns(table, source.name, ["query_id", "product_id"])
            child = getattr(source, "report", None)
            for reason, (rows, queries) in (child.dropped if child else {}).items():
                self.report.add(f"{key}: {reason}", rows, queries)
            original = pl.col("region").cast(pl.Utf8) if "region" in table.columns else pl.lit(None)
            tables[key] = table.with_columns(
                original.alias("source_region"),
                pl.lit(key).alias("region"),
                # concat_str, not pl.format: polars 2.1's format(lit, column) panicked on
                # some filtered string columns ("assertion failed: i < self.len()").
                pl.concat_str([pl.lit(f"{key}:"), pl.col("query_id").cast(pl.Utf8)]).alias(
                    "query_id"
                ),
                pl.concat_str([pl.lit(f"{key}:"), pl.col("product_id").cast(pl.Utf8)]).alias(
                    "product_id"
                ),
            )
        for label in LABEL_COLUMNS:
            having = [k for k, t in tables.items() if label in t.columns]
            if having and len(having) < len(tables):
                lacking = [k for k in tables if k not in having]
                raise DataValidationError(
                    f"{self.name}: label column '{label}' is in source(s) {having} but not in "
                    f"{lacking}; give every source the same labels (or simulate engagement "
                    "after mixing with data.engagement)"
                )
        try:
            return pl.concat(list(tables.values()), how="diagonal_relaxed")
        except pl.exceptions.PolarsError as err:
            raise DataValidationError(f"{self.name}: sources cannot be stacked: {err}") from err
