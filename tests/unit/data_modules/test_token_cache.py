"""A damaged token-cache entry is found (size and sha256 in its manifest), said and rebuilt."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from data_modules.tokenization import MANIFEST, tokenize_pairs

QUERIES = ["red shoes", "blue bag", "green hat"] * 4
PRODUCTS = ["red running shoe", "tote bag in blue", "a hat"] * 4


def _entry(tokenizer, tmp_path):
    tokens = tokenize_pairs(tokenizer, QUERIES, PRODUCTS, 16, tmp_path, progress=False)
    return tmp_path / "tokens" / tokens.key, tokens


def test_an_entry_records_the_size_and_checksum_of_its_files(tokenizer, tmp_path) -> None:
    entry, _ = _entry(tokenizer, tmp_path)
    manifest = json.loads((entry / MANIFEST).read_text())
    assert sorted(manifest) == ["ids.npy", "offsets.npy", "type_ids.npy"]
    for name, record in manifest.items():
        assert record["bytes"] == (entry / name).stat().st_size
        assert len(record["sha256"]) == 64


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-8]), "has {n} bytes"),  # truncated
        (lambda p: p.write_bytes(p.read_bytes()[:-4] + b"\xff\xff\xff\x7f"), "checksum differs"),
        (lambda p: p.unlink(), "missing"),
    ],
    ids=["truncated", "corrupted", "missing"],
)
def test_a_damaged_entry_is_rebuilt_with_a_warning(tokenizer, tmp_path, caplog, damage, said):
    entry, clean = _entry(tokenizer, tmp_path)
    clean_ids = np.array(clean.ids)
    target = entry / "ids.npy"
    damage(target)
    size = target.stat().st_size if target.exists() else 0
    with caplog.at_level(logging.WARNING):
        again = tokenize_pairs(tokenizer, QUERIES, PRODUCTS, 16, tmp_path, progress=False)
    assert not again.from_cache
    assert f"Token cache entry {entry} is damaged (ids.npy " in caplog.text
    assert said.format(n=size) in caplog.text and "rebuilding it" in caplog.text
    np.testing.assert_array_equal(np.array(again.ids), clean_ids)
    # The rebuilt entry is whole again: the next run hits it without a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = tokenize_pairs(tokenizer, QUERIES, PRODUCTS, 16, tmp_path, progress=False)
    assert third.from_cache and "damaged" not in caplog.text


def test_an_entry_without_manifest_is_rebuilt(tokenizer, tmp_path, caplog) -> None:
    entry, _ = _entry(tokenizer, tmp_path)
    (entry / MANIFEST).unlink()
    with caplog.at_level(logging.WARNING):
        again = tokenize_pairs(tokenizer, QUERIES, PRODUCTS, 16, tmp_path, progress=False)
    assert not again.from_cache and "manifest.json unreadable" in caplog.text
    assert (entry / MANIFEST).is_file()
