"""The teacher's scores of every training pair row, computed once and cached on disk.

The teacher scores every training pair row once; the scores ``[num_pairs, K]`` are cached on disk
(keyed by the checkpoint file's sha256 and the data) and looked up by the batch's ``rows``, so they
follow the items whatever lists the training loader samples or caps in an epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_modules.errors import ConfigError
from ranking.scorers.prior_features import attach_prior_features
from ranking.serving.checkpoints import file_sha256

log = logging.getLogger(__name__)

_CACHE_VERSION = 1


@dataclass(frozen=True)
class TeacherScores:
    """Cached teacher scores ``[num_pairs, K]`` float32 (NaN at rows not scored)."""

    scores: np.ndarray
    task_names: list[str]
    key: str
    path: Path | None
    from_cache: bool


def teacher_score_key(
    checkpoint_sha256: str, datamodule: Any, splits: Sequence[str], task_names: Sequence[str]
) -> str:
    """Hash of everything that decides the teacher's scores of a datamodule's lists.

    The checkpoint's bytes, the tokenised pair texts (``datamodule.tokens.key``: tokenizer, max
    length, every pair's text), the region names and, per split scored, each list's rows and
    region.
    """
    digest = hashlib.sha256(
        f"v{_CACHE_VERSION}|{checkpoint_sha256}|{datamodule.tokens.key}|"
        f"{list(datamodule.region_names)}|{list(task_names)}|{list(splits)}".encode()
    )
    for split in splits:
        lists = datamodule.lists[split]
        digest.update(np.asarray(lists.regions, dtype=np.int64).tobytes())
        for rows in lists.rows:
            digest.update(np.asarray(rows, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()[:24]


@torch.no_grad()
def compute_teacher_scores(
    teacher: Any,
    datamodule: Any,
    splits: Sequence[str] = ("train",),
    device: str = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Score every pair row of ``splits`` with the teacher, once.

    Args:
        teacher: A :class:`ranking.modules.cross_encoder.RankingModule` (its forward gives ``[B, L,
        K]``). datamodule: A set-up listwise datamodule tokenised with the teacher's tokenizer.
        splits: Splits whose rows are scored (whole lists, no cap).
        device: Where the teacher runs.
        progress: Show a progress bar.

    Returns:
        ``[num_pairs, K]`` float32, NaN at rows outside ``splits``.
    """
    from rich.progress import track

    for split in splits:
        if split not in datamodule.lists:
            raise ConfigError(f"teacher_scores.splits: the data has no '{split}' split")
    teacher = teacher.to(device).eval()
    teacher.use_data_regions(datamodule.region_names)
    attach_prior_features(teacher, datamodule)  # a teacher with a score prior reads it per pair
    out = np.full((len(datamodule.labels), len(teacher.task_names)), np.nan, dtype=np.float32)
    start, pairs = time.perf_counter(), 0
    for split in splits:
        loader = datamodule.eval_dataloader(split)
        for batch in track(
            loader, description=f"Teacher scores ({split})", total=len(loader), disable=not progress
        ):
            batch = {k: v.to(device) for k, v in batch.items()}
            scores = teacher(batch)
            mask = batch["mask"]
            out[batch["rows"][mask].cpu().numpy()] = scores[mask].float().cpu().numpy()
            pairs += int(mask.sum())
    elapsed = time.perf_counter() - start
    log.info("Teacher scored %d pairs in %.1f s (%.0f pairs/s)", pairs, elapsed, pairs / elapsed)
    return out


def cached_teacher_scores(
    teacher: Any,
    datamodule: Any,
    checkpoint: str | Path,
    cache_dir: str | Path | None,
    splits: Sequence[str] = ("train",),
    device: str = "cpu",
    progress: bool = True,
) -> TeacherScores:
    """The teacher's scores of ``splits``, computed once per (checkpoint bytes, data) and cached.

    The entry is ``<cache_dir>/teacher_scores/<key>/scores.npy`` (+ ``meta.json``), written into a
    private directory and renamed into place, so parallel runs never read half an entry.

    Args:
        teacher: The cross-encoder.
        datamodule: A set-up listwise datamodule tokenised with the teacher's tokenizer.
        checkpoint: The teacher's checkpoint file (its sha256 is part of the key).
        cache_dir: Root of the cache; ``None`` computes without caching.
        splits: Splits scored.
        device: Where the teacher runs.
        progress: Show a progress bar while scoring.
    """
    task_names = list(teacher.task_names)
    key = teacher_score_key(file_sha256(checkpoint), datamodule, splits, task_names)
    if cache_dir is None:
        scores = compute_teacher_scores(teacher, datamodule, splits, device, progress)
        return TeacherScores(scores, task_names, key, None, from_cache=False)
    entry = Path(cache_dir) / "teacher_scores" / key
    if (entry / "scores.npy").is_file():
        log.info("Teacher-score cache hit: %s", entry)
        return TeacherScores(np.load(entry / "scores.npy"), task_names, key, entry, True)
    log.info("Teacher-score cache miss: scoring %s with %s", list(splits), checkpoint)
    scores = compute_teacher_scores(teacher, datamodule, splits, device, progress)
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=entry.parent))
    meta = {"checkpoint": str(checkpoint), "splits": list(splits), "tasks": task_names}
    (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    np.save(staging / "scores.npy", scores)
    try:
        os.rename(staging, entry)
    except OSError:  # another process won the race; its entry is identical
        shutil.rmtree(staging, ignore_errors=True)
    return TeacherScores(scores, task_names, key, entry, from_cache=False)
