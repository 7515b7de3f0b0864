"""``EngagementSimulator``: adds position, click, add_to_cart and purchase to a graded table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from data_modules.engagement.draws import draw_per_query
from data_modules.engagement.model import (
    EngagementProbabilities,
    engagement_probabilities,
    logging_positions,
)
from data_modules.engagement.params import (
    CONFIG_KEY,
    RegionParams,
    check_noise,
    check_seed,
    resolve_regions,
)
from data_modules.errors import ConfigError, DataValidationError
from data_modules.validation import cast_column

#: Columns the simulator writes, in this order.
OUTPUT_COLUMNS: tuple[str, ...] = ("position", "click", "add_to_cart", "purchase")
_VALID_KEYS = ("seed", "logging_noise", "regions", "item_key", "overwrite")
_ROW = "__engagement_row"


@dataclass(frozen=True)
class _Simulation:
    """Everything drawn for one table, in the table's own row order."""

    position: np.ndarray
    probabilities: EngagementProbabilities
    uniform: np.ndarray  # [4, N]: examination, click, add-to-cart, purchase


class EngagementSimulator:
    """Simulated click -> add-to-cart -> purchase labels for tables with graded relevance only.

    For each query: a noisy logging ranker orders the rows (display ``position``), a
    position-based model decides which are examined, and examined rows pass a
    click -> add-to-cart -> purchase cascade whose probabilities rise with relevance and differ by
    region (formulas in :class:`~data_modules.engagement.params.RegionParams`, literature in
    :mod:`data_modules.engagement`). A row's labels depend only on ``(seed, query_id)`` and the
    query's own rows.

    Args:
        seed: Non-negative seed (``${seed}`` in the config).
        logging_noise: Std of the Gaussian noise added to relevance by the logging ranker
            (``score = relevance + logging_noise * N(0, 1)``); 0 ranks by relevance exactly.
        regions: ``{region: {field: value}}`` overrides of :class:`RegionParams`; the
            ``default`` entry applies to every region without its own entry.
        item_key: Column that identifies an item within a query (``product_id``); a query's
            draws are assigned in this column's order and logging ties broken by it, so shuffling
            rows leaves every row's labels unchanged (rows with equal keys keep their row
            order). ``None``: row order within the query.
        overwrite: Replace existing ``position``/``click``/``add_to_cart``/``purchase``
            columns instead of stopping with an error.
        **unknown: Rejected with a :class:`ConfigError` naming ``data.engagement.<key>``.

    Raises:
        ConfigError: An unknown key or an invalid value, naming its config key.

    Example:
        >>> import polars as pl
        >>> table = pl.DataFrame({"query_id": ["q1", "q1"], "product_id": ["a", "b"],
        ...                       "region": ["us", "us"], "relevance": [1.0, 0.0]})
        >>> out = EngagementSimulator(seed=0).apply(table, "demo")
        >>> out.columns[-4:], out["position"].to_list()
        (['position', 'click', 'add_to_cart', 'purchase'], [1, 2])
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        logging_noise: float = 0.1,
        regions: Mapping[str, Any] | None = None,
        item_key: str | None = "product_id",
        overwrite: bool = False,
        **unknown: Any,
    ) -> None:
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(
                f"{CONFIG_KEY}.{key}: unknown key; valid keys: {', '.join(sorted(_VALID_KEYS))}"
            )
        self.seed = check_seed(seed)
        self.logging_noise = check_noise(logging_noise)
        self.regions: dict[str, RegionParams] = resolve_regions(regions)
        if item_key is not None and (not isinstance(item_key, str) or not item_key):
            raise ConfigError(
                f"{CONFIG_KEY}.item_key must be a column name or null, got {item_key!r}"
            )
        self.item_key = item_key
        if not isinstance(overwrite, bool):
            raise ConfigError(f"{CONFIG_KEY}.overwrite must be true or false, got {overwrite!r}")
        self.overwrite = overwrite

    def __repr__(self) -> str:
        return (
            f"EngagementSimulator(seed={self.seed}, logging_noise={self.logging_noise}, "
            f"item_key={self.item_key!r}, regions={sorted(self.regions)})"
        )

    def apply(self, table: pl.DataFrame, name: str) -> pl.DataFrame:
        """Returns ``table`` (same rows, same order) with simulated engagement columns.

        Args:
            table: Needs ``query_id``, ``region``, ``relevance`` (gain in [0, 1]) and, unless
                ``item_key`` is None, the item key column. Other columns pass through.
            name: Source name (file or dataset) quoted in every error message.

        Returns:
            The table plus Int64 ``position`` (1-based), ``click``, ``add_to_cart`` and
            ``purchase`` (0/1, with purchase <= add_to_cart <= click per row).

        Raises:
            DataValidationError: Empty table, missing column, null/NaN/out-of-range value, or
                an output column that exists while ``overwrite`` is false.
        """
        existing = [c for c in OUTPUT_COLUMNS if c in table.columns]
        if existing and not self.overwrite:
            names = ", ".join(f"'{c}'" for c in existing)
            raise DataValidationError(
                f"{name}: column(s) {names} already exist; the engagement simulator would replace "
                f"them: set {CONFIG_KEY}.overwrite=true, or choose data/engagement=none"
            )
        sim = self._simulate(table, name)
        p, u = sim.probabilities, sim.uniform
        # Each stage fires only if the previous one did: nested labels by construction.
        examined = u[0] < p.examination
        click = examined & (u[1] < p.click_given_examination)
        cart = click & (u[2] < p.add_to_cart_given_click)
        purchase = cart & (u[3] < p.purchase_given_add_to_cart)
        values = (sim.position, click, cart, purchase)
        return table.with_columns(
            pl.Series(column, v.astype(np.int64), dtype=pl.Int64)
            for column, v in zip(OUTPUT_COLUMNS, values, strict=True)
        )

    def probabilities(self, table: pl.DataFrame, name: str) -> pl.DataFrame:
        """The exact probabilities behind :meth:`apply`'s labels, one row per input row.

        Args:
            table: As for :meth:`apply` (existing output columns are ignored).
            name: Source name quoted in error messages.

        Returns:
            ``position`` (the same as :meth:`apply` draws), ``p_examination`` and the marginal
            ``p_click``, ``p_add_to_cart``, ``p_purchase`` (Float64), in the table's row order.
        """
        sim = self._simulate(table, name)
        p = sim.probabilities
        return pl.DataFrame(
            {
                "position": pl.Series(sim.position, dtype=pl.Int64),
                "p_examination": p.examination,
                "p_click": p.click,
                "p_add_to_cart": p.add_to_cart,
                "p_purchase": p.purchase,
            }
        )

    def _simulate(self, table: pl.DataFrame, name: str) -> _Simulation:
        work = self._validated(table, name)
        # Canonical layout: query by query, items in item-key order, independent of row order.
        work = work.sort(["query_id", "item", _ROW])
        runs = work.get_column("query_id").rle()
        normal, uniform = draw_per_query(
            self.seed,
            runs.struct.field("value").to_list(),
            runs.struct.field("len").to_numpy(),
            num_uniform=4,
        )
        relevance = work.get_column("relevance").to_numpy()
        group = work.get_column("query_id").rle_id().to_numpy()
        score = relevance + self.logging_noise * normal
        position = logging_positions(group, score, tie_break=np.arange(work.height))
        probs = engagement_probabilities(
            position, relevance, work.get_column("region").to_numpy(), self.regions
        )
        # Back to the caller's row order.
        inverse = np.empty(work.height, dtype=np.int64)
        inverse[work.get_column(_ROW).to_numpy()] = np.arange(work.height)
        return _Simulation(
            position=position[inverse],
            probabilities=EngagementProbabilities(
                examination=probs.examination[inverse],
                click_given_examination=probs.click_given_examination[inverse],
                add_to_cart_given_click=probs.add_to_cart_given_click[inverse],
                purchase_given_add_to_cart=probs.purchase_given_add_to_cart[inverse],
            ),
            uniform=uniform[:, inverse],
        )

    def _validated(self, table: pl.DataFrame, name: str) -> pl.DataFrame:
        """``query_id``/``region``/``item`` as text, ``relevance`` as Float64, plus a row index."""
        if table.height == 0:
            raise DataValidationError(f"{name}: the table is empty; nothing to simulate")
        required = ["query_id", "region", "relevance"]
        if self.item_key is not None:
            required.append(self.item_key)
        missing = [c for c in required if c not in table.columns]
        if missing:
            hint = f" (or set {CONFIG_KEY}.item_key)" if self.item_key in missing else ""
            raise DataValidationError(
                f"{name}: the engagement simulator needs column(s) "
                f"{', '.join(repr(c) for c in missing)}{hint}; "
                f"columns found: {', '.join(table.columns)}"
            )
        sources = {"query_id": "query_id", "region": "region", "item": self.item_key}
        work = pl.DataFrame(
            {
                _ROW: np.arange(table.height, dtype=np.int64),
                **{
                    alias: cast_column(table, name, column, pl.Utf8)
                    if column is not None
                    else pl.Series([""] * table.height)
                    for alias, column in sources.items()
                },
                "relevance": cast_column(table, name, "relevance", pl.Float64),
            }
        )
        for column in ("query_id", "region", "item"):
            shown = self.item_key if column == "item" else column
            _check(work, name, shown, pl.col(column).is_null(), "missing values")
        relevance = pl.col("relevance")
        _check(work, name, "relevance", relevance.is_null() | relevance.is_nan(), "null or NaN")
        outside = (relevance < 0) | (relevance > 1)
        _check(work, name, "relevance", outside, "values outside [0, 1] (a gain is needed)")
        return work


def _check(work: pl.DataFrame, name: str, column: str, bad: pl.Expr, what: str) -> None:
    """Raises a DataValidationError naming ``column`` and the first rows where ``bad`` holds."""
    count = work.select(bad.sum()).item()
    if count:
        rows = work.filter(bad).get_column(_ROW)[:3].to_list()
        raise DataValidationError(
            f"{name}: column '{column}' has {count} {what} (first at row "
            f"{', '.join(map(str, rows))})"
        )
