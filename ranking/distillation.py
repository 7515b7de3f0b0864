"""Cross-encoder -> bi-encoder distillation: losses, the teacher-score cache and ``distill(cfg)``.

ListBERT (Kumar et al., 2022) distils its listwise cross-encoder into a bi-encoder for serving
with a listwise loss between the teacher's and the student's score distributions over each
query's list. Here:

* :func:`listnet_kl` - ``T^2 * KL(softmax(t / T) || softmax(s / T))`` per list (ListNet's top-one
  distributions, Cao et al. 2007, with Hinton et al. 2015's temperature and ``T^2`` factor);
* :func:`margin_mse` - Margin-MSE (Hofstätter et al., 2020, "Improving Efficient Neural Ranking
  Models with Cross-Architecture Knowledge Distillation"), over every pair of a list.

The teacher scores every training pair row once; the scores ``[num_pairs, K]`` are cached on disk
(keyed by the checkpoint file's sha256 and the data) and looked up by the batch's ``rows``, so they
follow the items whatever lists the training loader samples or caps in an epoch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from data_modules.errors import ConfigError
from ranking.losses._pipeline import large_negative, log_softmax, reduce_lists
from ranking.prior import attach_prior_features

log = logging.getLogger(__name__)

DISTILLATION_DEFAULTS: dict[str, Any] = {
    "alpha": 0.5,  # weight of the distillation loss; 1 - alpha weighs the ground-truth loss
    "loss": "listnet_kl",
    "temperature": 1.0,
}
_CACHE_VERSION = 1


# ---------------------------------------------------------------------------------------- losses
def _check(student: Tensor, teacher: Tensor, mask: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Shapes ``[B, L]``, a bool mask, finite scores at real positions; padding zeroed."""
    if student.dim() != 2 or teacher.shape != student.shape or mask.shape != student.shape:
        raise ValueError(
            f"{name}: student, teacher and mask must share shape [batch, list]; got "
            f"{tuple(student.shape)}, {tuple(teacher.shape)}, {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"{name}: mask must be a bool tensor (True = real item), got {mask.dtype}")
    teacher = teacher.to(student.dtype)
    bad = (~torch.isfinite(student.detach()) | ~torch.isfinite(teacher)) & mask
    if bool(bad.any()):
        raise ValueError(f"{name}: non-finite student or teacher scores at {int(bad.sum())} items")
    zero = torch.zeros((), dtype=student.dtype, device=student.device)
    return torch.where(mask, student, zero), torch.where(mask, teacher, zero)


def listnet_kl(
    student: Tensor,
    teacher: Tensor,
    mask: Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Listwise distillation: KL divergence between teacher and student top-one distributions.

    Per list, over its real items: with :math:`p = \mathrm{softmax}(t / T)` and
    :math:`q = \mathrm{softmax}(s / T)`,
    :math:`\ell = T^2 \sum_i p_i (\log p_i - \log q_i)`. It is ListNet's cross-entropy with the
    teacher's distribution as target, minus the target's entropy, so it is 0 exactly when the
    student's scores equal the teacher's up to a per-list shift. The ``T^2`` factor keeps gradient
    magnitudes comparable across temperatures (Hinton et al., 2015). Lists with fewer than two
    real items carry no ranking information and get weight 0.

    Args:
        student: ``[B, L]`` student logits.
        teacher: ``[B, L]`` teacher logits.
        mask: ``[B, L]`` bool, True for real items.
        temperature: ``T > 0``.
        reduction: ``"mean"`` over lists with >= 2 items, or ``"sum"``.

    Returns:
        Scalar loss.

    Example:
        >>> s = torch.tensor([[0.0, 0.0]]); t = torch.tensor([[1.0, 0.0]])
        >>> round(float(listnet_kl(s, t, torch.ones_like(s, dtype=torch.bool))), 4)
        0.1109
    """
    if not temperature > 0:
        raise ValueError(f"listnet_kl: temperature must be > 0, got {temperature}")
    student, teacher = _check(student, teacher, mask, "listnet_kl")
    neg = large_negative(student.dtype)
    log_q = log_softmax(torch.where(mask, student / temperature, neg), dim=-1)
    log_p = log_softmax(torch.where(mask, teacher / temperature, neg), dim=-1)
    per_item = torch.where(mask, log_p.exp() * (log_p - log_q), 0)
    per_list = per_item.sum(-1) * temperature**2
    weights = (mask.sum(-1) >= 2).to(student.dtype)
    return reduce_lists(per_list, weights, reduction, "listnet_kl")


def margin_mse(
    student: Tensor, teacher: Tensor, mask: Tensor, *, reduction: str = "mean"
) -> Tensor:
    r"""Margin-MSE (Hofstätter et al., 2020) over every pair of real items in a list.

    Per list: :math:`\ell = \frac{1}{|P|} \sum_{(i, j) \in P} \big((s_i - s_j) - (t_i - t_j)\big)^2`
    over ordered pairs :math:`i \ne j` of real items. The paper uses one (query, positive,
    negative) triple; a list gives all its pairs. Only score *differences* are matched, so the
    student may differ from the teacher by a per-list shift, but, unlike :func:`listnet_kl`, it
    must match the teacher's scale.

    Args:
        student: ``[B, L]`` student logits.
        teacher: ``[B, L]`` teacher logits.
        mask: ``[B, L]`` bool, True for real items.
        reduction: ``"mean"`` over lists with >= 2 items, or ``"sum"``.

    Example:
        >>> s = torch.tensor([[0.0, 0.0]]); t = torch.tensor([[1.0, 0.0]])
        >>> float(margin_mse(s, t, torch.ones_like(s, dtype=torch.bool)))
        1.0
    """
    student, teacher = _check(student, teacher, mask, "margin_mse")
    d = student - teacher  # (s_i - s_j) - (t_i - t_j) = d_i - d_j
    eye = torch.eye(mask.shape[-1], dtype=torch.bool, device=mask.device)
    pairs = mask.unsqueeze(-1) & mask.unsqueeze(-2) & ~eye
    squared = (d.unsqueeze(-1) - d.unsqueeze(-2)).square()
    count = pairs.sum((-1, -2))
    per_list = torch.where(pairs, squared, 0).sum((-1, -2)) / count.clamp_min(1)
    return reduce_lists(per_list, (count > 0).to(student.dtype), reduction, "margin_mse")


DISTILLATION_LOSSES: dict[str, Callable[..., Tensor]] = {
    "listnet_kl": listnet_kl,
    "margin_mse": margin_mse,
}


def build_distillation_loss(name: str, temperature: float = 1.0) -> Callable[..., Tensor]:
    """``fn(student [B, L], teacher [B, L], mask [B, L]) -> scalar`` for a named loss.

    Raises:
        ConfigError: Unknown name (lists the valid ones), a temperature <= 0, or a temperature
            other than 1 for ``margin_mse`` (its value does not depend on one).
    """
    if name not in DISTILLATION_LOSSES:
        raise ConfigError(
            f"student.distillation.loss: unknown loss {name!r}; "
            f"valid: {sorted(DISTILLATION_LOSSES)}"
        )
    temperature = float(temperature)
    if not temperature > 0:
        raise ConfigError(f"student.distillation.temperature must be > 0, got {temperature}")
    if name == "margin_mse":
        if temperature != 1.0:
            raise ConfigError("student.distillation.temperature has no effect on margin_mse: set 1")
        return margin_mse
    return functools.partial(listnet_kl, temperature=temperature)  # picklable (ddp_spawn)


# ---------------------------------------------------------------------------------------- cache
def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes (a checkpoint's identity, whatever its name)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        teacher: A :class:`ranking.module.RankingModule` (its forward gives ``[B, L, K]``).
        datamodule: A set-up listwise datamodule tokenised with the teacher's tokenizer.
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
