"""Errors a user can act on. Entry points print them as one line instead of a traceback."""

from __future__ import annotations


class ShoprankError(Exception):
    """Base class of every error caused by the user's input (config, data, paths)."""


class ConfigError(ShoprankError, ValueError):
    """A config value is missing, misspelt or inconsistent; the message names the key."""


class DataValidationError(ShoprankError, ValueError):
    """Input data breaks the canonical schema; the message names the file, column and row."""


class EncoderLoadError(ShoprankError, FileNotFoundError):
    """An encoder directory is missing or incomplete; the message names what is missing."""
