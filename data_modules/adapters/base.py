"""Base class of the dataset adapters: read -> canonical table, optional query subsample, report."""

from __future__ import annotations

import polars as pl

from data_modules.adapters._common import sample_queries
from data_modules.validation import DropReport


class Adapter:
    """A :class:`data_modules.sources.TableSource` for one dataset layout.

    Subclasses implement :meth:`_read` (file(s) -> canonical table, recording merged or removed
    rows in ``self.report``); :meth:`load` adds the optional query subsample.

    Args:
        name: Source name quoted in messages and reports.
        max_queries: Keep this many query_ids, chosen at random with ``seed`` (``None``: all);
            for quick experiments on a slice of a large dataset.
        seed: Seed of that choice.
    """

    def __init__(self, name: str, max_queries: int | None = None, seed: int = 0) -> None:
        self.name = name
        self.max_queries = max_queries
        self.seed = seed
        self.report = DropReport(name)

    def load(self) -> pl.DataFrame:
        """The canonical table (see :mod:`data_modules.schema`)."""
        self.report = DropReport(self.name)
        table = self._read()
        return sample_queries(
            table, self.max_queries, self.seed, self.report, "data.source.max_queries"
        )

    def _read(self) -> pl.DataFrame:
        raise NotImplementedError
