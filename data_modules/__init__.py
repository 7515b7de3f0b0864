"""Data adapters, validation, synthetic data and listwise DataModules.

Imports are lazy so that light users (the synthetic generator's CLI, validation) do not pay for
importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CrowdFlowerSource": "data_modules.adapters",
    "EsciSource": "data_modules.adapters",
    "HomeDepotSource": "data_modules.adapters",
    "LogsSource": "data_modules.adapters",
    "MixSource": "data_modules.adapters",
    "FileDataModule": "data_modules.datamodule",
    "ListwiseDataModule": "data_modules.datamodule",
    "SyntheticDataModule": "data_modules.datamodule",
    "FileSource": "data_modules.sources",
    "SyntheticSource": "data_modules.sources",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'data_modules' has no attribute {name!r}")
