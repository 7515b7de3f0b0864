"""Tokenise (query, product) pairs once and keep the result on disk.

The cache key is ``sha256(tokenizer definition, max_length, the pair texts)``, so a change of
tokenizer, length or data builds a new entry and an unchanged run reuses the old one. Token ids are
stored ragged (flat ids + offsets) as ``.npy`` files and memory-mapped on load, so a large corpus is
not held in RAM and every DDP rank reads the same files. Each entry's ``manifest.json`` records the
size and sha256 of its files; a cache hit checks them, and a truncated or corrupted entry is
rebuilt (with a warning) instead of feeding wrong tokens to the model.

Tokenising many pairs (more than :data:`PROGRESS_MIN_PAIRS`) shows a rich progress bar on stderr
when stderr is a terminal; ``SHOPRANK_PROGRESS=1`` (or ``progress=True``) forces it, e.g. in a log
file, where it prints once when done; ``SHOPRANK_PROGRESS=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# 2: entries carry a MANIFEST with each file's size and sha256, checked on every cache hit.
_FORMAT_VERSION = 2
_FILES = ("ids.npy", "type_ids.npy", "offsets.npy")
MANIFEST = "manifest.json"
_CHUNK = 4096
PROGRESS_MIN_PAIRS = 20_000  # fewer pairs tokenise in about a second: no bar
PROGRESS_ENV = "SHOPRANK_PROGRESS"


@dataclass(frozen=True)
class TokenizedPairs:
    """Ragged token ids of N pairs: pair ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    ids: np.ndarray  # [total_tokens] int32
    type_ids: np.ndarray  # [total_tokens] int8 (0 = query segment, 1 = product segment)
    offsets: np.ndarray  # [N + 1] int64
    key: str
    from_cache: bool

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        return self.offsets[rows + 1] - self.offsets[rows]


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of everything that decides the tokenizer's output."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        # Truncation and padding are call-time state the tokenizer keeps from its last call.
        definition.pop("truncation", None)
        definition.pop("padding", None)
    else:
        definition = tokenizer.get_vocab()
    text = json.dumps(definition, sort_keys=True)
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{text}".encode()).hexdigest()


def cache_key(
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    queries: Sequence[str],
    products: Sequence[str],
) -> str:
    digest = hashlib.sha256()
    digest.update(f"v{_FORMAT_VERSION}|{tokenizer_fingerprint(tokenizer)}|{max_length}|".encode())
    for start in range(0, len(queries), 65536):
        block = "\x1e".join(
            f"{q}\x1f{p}"
            for q, p in zip(
                queries[start : start + 65536], products[start : start + 65536], strict=True
            )
        )
        digest.update(block.encode())
    return digest.hexdigest()[:24]


def show_progress(num_pairs: int, progress: bool | None = None) -> bool:
    """Whether tokenising ``num_pairs`` pairs shows a progress bar.

    ``progress`` True/False decides; ``None`` reads ``$SHOPRANK_PROGRESS`` (``1``/``0``) and
    otherwise shows it for more than :data:`PROGRESS_MIN_PAIRS` pairs when stderr is a terminal,
    on DDP rank 0 only (CI logs and other ranks stay quiet).
    """
    if progress is None:
        setting = os.environ.get(PROGRESS_ENV, "").strip().lower()
        if setting in ("1", "true", "yes", "on"):
            progress = True
        elif setting in ("0", "false", "no", "off"):
            progress = False
        else:
            rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
            return num_pairs > PROGRESS_MIN_PAIRS and rank == 0 and _stderr_is_terminal()
    return progress


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


def _tokenize(
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    queries: Sequence[str],
    products: Sequence[str],
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids_parts, type_parts, lengths = [], [], []
    bar = _progress_bar() if progress else None
    task = bar.add_task("Tokenising pairs", total=len(queries)) if bar else None
    with bar or contextlib.nullcontext():
        for start in range(0, len(queries), _CHUNK):
            encoded = tokenizer(
                list(queries[start : start + _CHUNK]),
                list(products[start : start + _CHUNK]),
                truncation="longest_first",
                max_length=max_length,
                return_attention_mask=False,
                return_token_type_ids=True,
            )
            for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"], strict=True):
                ids_parts.append(np.asarray(ids, dtype=np.int32))
                type_parts.append(np.asarray(types, dtype=np.int8))
                lengths.append(len(ids))
            if bar is not None:
                bar.advance(task, len(encoded["input_ids"]))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return np.concatenate(ids_parts), np.concatenate(type_parts), offsets


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase,
    queries: Sequence[str],
    products: Sequence[str],
    max_length: int,
    cache_dir: str | Path | None,
    progress: bool | None = None,
) -> TokenizedPairs:
    """Tokenise pairs as ``[CLS] query [SEP] product [SEP]``, truncated to ``max_length``.

    Args:
        tokenizer: A Hugging Face tokenizer.
        queries: N query texts.
        products: N product texts.
        max_length: Maximum tokens per pair (longest part truncated first).
        cache_dir: Where cache entries live; ``None`` disables the cache.
        progress: Show a progress bar while tokenising (``None``: see :func:`show_progress`).

    Returns:
        The ragged token ids, memory-mapped when they come from the cache.
    """
    key = cache_key(tokenizer, max_length, queries, products)
    progress = show_progress(len(queries), progress)
    if cache_dir is None:
        ids, types, offsets = _tokenize(tokenizer, max_length, queries, products, progress)
        return TokenizedPairs(ids, types, offsets, key, from_cache=False)

    entry = Path(cache_dir) / "tokens" / key
    problem = check_cache_entry(entry, _FILES) if entry.exists() else None
    if problem is not None:
        log.warning("Token cache entry %s is damaged (%s): rebuilding it", entry, problem)
        _discard(entry)
    if not (entry / MANIFEST).is_file():
        log.info("Tokenising %d pairs (cache entry %s)", len(queries), entry)
        ids, types, offsets = _tokenize(tokenizer, max_length, queries, products, progress)
        entry.parent.mkdir(parents=True, exist_ok=True)
        # Write into a private directory and rename it into place: concurrent builders (DDP ranks,
        # parallel sweep jobs) never see a half-written entry.
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=entry.parent))
        np.save(staging / "ids.npy", ids)
        np.save(staging / "type_ids.npy", types)
        np.save(staging / "offsets.npy", offsets)
        write_manifest(staging, _FILES)  # last: its presence marks a complete entry
        try:
            os.rename(staging, entry)
        except OSError:  # another process won the race; its entry is identical
            shutil.rmtree(staging, ignore_errors=True)
        from_cache = False
    else:
        log.info("Token cache hit: %s", entry)
        from_cache = True
    return TokenizedPairs(
        ids=np.load(entry / "ids.npy", mmap_mode="r"),
        type_ids=np.load(entry / "type_ids.npy", mmap_mode="r"),
        offsets=np.load(entry / "offsets.npy"),
        key=key,
        from_cache=from_cache,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, files: Sequence[str]) -> None:
    """Write ``MANIFEST`` (``{file: {bytes, sha256}}``) of ``files`` in ``directory``."""
    manifest = {
        name: {"bytes": (directory / name).stat().st_size, "sha256": _sha256(directory / name)}
        for name in files
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def check_cache_entry(directory: Path, files: Sequence[str]) -> str | None:
    """What is wrong with a cache entry against its ``MANIFEST``, or ``None`` if it is whole.

    Every file must exist with the recorded size (a truncated copy) and sha256 (bytes changed
    on disk). Hashing reads the files once (about 1 s per GB).
    """
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        return f"{MANIFEST} unreadable: {err}"
    for name in files:
        path, expected = directory / name, manifest.get(name)
        if expected is None:
            return f"{name} not in {MANIFEST}"
        if not path.is_file():
            return f"{name} missing"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return f"{name} has {size} bytes, {expected['bytes']} expected"
        if _sha256(path) != expected["sha256"]:
            return f"{name} checksum differs"
    return None


def _discard(entry: Path) -> None:
    """Move a damaged entry aside (atomically) and delete it; another process may race us."""
    aside = entry.with_name(f".{entry.name}.damaged-{os.getpid()}")
    try:
        entry.rename(aside)
    except OSError:
        return  # already moved by another process
    shutil.rmtree(aside, ignore_errors=True)
