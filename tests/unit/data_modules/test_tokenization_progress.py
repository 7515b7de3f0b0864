"""The tokenisation progress bar: when it shows, what it prints, and that it changes nothing."""

from __future__ import annotations

import io

import numpy as np
import pytest

from data_modules import tokenization
from data_modules.tokenization import (
    PROGRESS_ENV,
    PROGRESS_MIN_PAIRS,
    show_progress,
    tokenize_pairs,
)


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("pairs", "tty", "env", "rank", "expected"),
    [
        (PROGRESS_MIN_PAIRS + 1, True, None, "0", True),  # many pairs, a terminal
        (PROGRESS_MIN_PAIRS, True, None, "0", False),  # few pairs
        (PROGRESS_MIN_PAIRS + 1, False, None, "0", False),  # CI log: never by default
        (PROGRESS_MIN_PAIRS + 1, True, None, "1", False),  # DDP rank 1
        (10, False, "1", "0", True),  # forced
        (PROGRESS_MIN_PAIRS + 1, True, "0", "0", False),  # turned off
    ],
)
def test_progress_shows_for_many_pairs_on_a_terminal_or_when_forced(
    monkeypatch: pytest.MonkeyPatch, pairs: int, tty: bool, env: str | None, rank: str, expected
) -> None:
    monkeypatch.setattr("sys.stderr", _Stream(tty))
    monkeypatch.setenv("RANK", rank)
    if env is None:
        monkeypatch.delenv(PROGRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(PROGRESS_ENV, env)
    assert show_progress(pairs) is expected
    assert show_progress(pairs, progress=not expected) is (not expected)  # an argument decides


def test_progress_bar_counts_pairs_and_changes_no_token(
    tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokenization, "_CHUNK", 2)  # several chunks: the bar advances per chunk
    queries = ["red shoes", "blue bag", "green hat", "tent", "boots"]
    products = ["red running shoe", "leather bag", "wool hat", "two person tent", "hiking boot"]
    stream = _Stream(tty=False)
    monkeypatch.setattr("sys.stderr", stream)
    quiet = tokenize_pairs(tokenizer, queries, products, 16, None, progress=False)
    assert stream.getvalue() == ""
    shown = tokenize_pairs(tokenizer, queries, products, 16, None, progress=True)
    # Not a terminal: rich prints the finished bar once (no refresh lines in a log).
    assert stream.getvalue().count("Tokenising pairs") == 1
    assert "5/5" in stream.getvalue()
    for name in ("ids", "type_ids", "offsets"):
        np.testing.assert_array_equal(getattr(shown, name), getattr(quiet, name))
