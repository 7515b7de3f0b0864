"""Adapters: one :class:`data_modules.sources.TableSource` per real dataset layout.

Each produces the canonical table of :mod:`data_modules.schema`:

=============== =========================================================================
``EsciSource``  Amazon Shopping Queries (ESCI) parquet files; locale -> region, E/S/C/I gains
``HomeDepotSource`` Home Depot search relevance ``train.csv``; ratings 1..3 -> gains
``CrowdFlowerSource`` CrowdFlower search relevance ``train.csv``; ratings 1..4 -> gains
``LogsSource``  a generic engagement log (click, add_to_cart, purchase, position)
``MixSource``   several sources at once, one region each (multi-distribution data)
=============== =========================================================================
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Adapter": "data_modules.adapters.base",
    "CrowdFlowerSource": "data_modules.adapters.crowdflower",
    "EsciSource": "data_modules.adapters.esci",
    "HomeDepotSource": "data_modules.adapters.homedepot",
    "LogsSource": "data_modules.adapters.logs",
    "MixSource": "data_modules.adapters.mix",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'data_modules.adapters' has no attribute {name!r}")
