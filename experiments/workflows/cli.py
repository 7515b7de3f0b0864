"""Run an entry point's function and turn user errors into one clear line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from data_modules.errors import ShoprankError


def run_or_exit(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; on a :class:`ShoprankError` print ``error: <message>`` and exit with code 2."""
    try:
        return fn(*args)
    except ShoprankError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
