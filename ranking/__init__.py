"""shoprank's model library. ``from ranking import Ranker`` is the Python API
(ranking/serving/api.py)."""

from __future__ import annotations

from typing import Any

__all__ = ["Ranked", "Ranker", "TextOptions"]


def __getattr__(name: str) -> Any:
    # Lazy: `import ranking.losses` (and every entry point) must not pay for torch models here.
    if name in __all__:
        from ranking.serving import api

        return getattr(api, name)
    raise AttributeError(f"module 'ranking' has no attribute {name!r}")
