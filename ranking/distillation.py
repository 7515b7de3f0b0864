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
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ranking.errors import ConfigError
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


# ---------------------------------------------------------------------------------------- run
def _teacher_path(cfg: Any) -> Path:
    from omegaconf.errors import MissingMandatoryValue

    try:
        value = cfg.teacher_ckpt
    except MissingMandatoryValue:
        value = None
    if value in (None, "", "???"):
        raise ConfigError(
            "teacher_ckpt is not set: pass teacher_ckpt=<cross-encoder checkpoint>, e.g. "
            "logs/train/runs/<run>/checkpoints/last.ckpt"
        )
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ConfigError(f"teacher_ckpt: checkpoint {path} does not exist")
    return path


def _ratios(student: Mapping[str, float], teacher: Mapping[str, float]) -> dict[str, float]:
    """``student / teacher`` for every metric both have (counts left out)."""
    return {
        name: student[name] / teacher[name]
        for name in student
        if name in teacher
        and not name.endswith("/lists")
        and teacher[name] > 0
        and not math.isnan(student[name])
    }


def distill(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train a bi-encoder student on a cross-encoder teacher's cached scores, test both.

    Steps: load the teacher (``cfg.teacher_ckpt``) -> build the data with the teacher's tokenizer
    and max length -> teacher scores of the training rows (cached) -> the student
    (``cfg.student``, encoder ``cfg.encoder``, the teacher's tasks) -> fit -> test the best
    student, the teacher and a random ranking on the same test lists -> ``metrics.json``.

    Logs to the configured loggers like ``train`` (W&B: named by the job's overrides, grouped
    by sweep, job type ``distill``, the run closed on return).

    Returns:
        ``(metrics, objects)`` like :func:`ranking.pipeline.train`; ``metrics["test"]`` is the
        student's, ``metrics["teacher"]`` the teacher's.
    """
    from callbacks.wandb_report import finish_wandb

    try:
        return _distill(cfg)
    finally:
        finish_wandb()


def _distill(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    ckpt = _teacher_path(cfg)  # before the heavy imports: a missing checkpoint fails at once
    import lightning.pytorch as pl
    import polars
    from omegaconf import OmegaConf, open_dict

    from callbacks.resume import prepare_resume
    from callbacks.wandb_report import (
        log_resolved_config,
        log_result_tables,
        log_run_results,
        record_run_id,
    )
    from data_modules.splits import SPLIT_FILE, write_split
    from ranking.baselines import random_scorer
    from ranking.bi_encoder import StudentDataModule, student_train_metric_names
    from ranking.checkpoints import check_checkpoint
    from ranking.config import (
        build_datamodule,
        build_trainer,
        check_config_values,
        instantiate,
        plain,
    )
    from ranking.encoders import check_max_length, load_tokenizer
    from ranking.metric_set import metric_names
    from ranking.monitor import check_monitor, check_monitor_form
    from ranking.per_query import per_query_metrics, summarize, write_per_query
    from ranking.pipeline import RANDOM_DRAWS, _model_scorer, _scalars
    from ranking.report import print_tables, write_json
    from ranking.run_dir import guard_output_dir, is_rank_zero
    from ranking.serving import load_checkpoint

    check_config_values(cfg)
    output_dir = Path(cfg.paths.output_dir)
    guard_output_dir(output_dir, resume=str(cfg.get("ckpt_path")) == "last")
    pl.seed_everything(cfg.seed, workers=True)
    teacher = load_checkpoint(ckpt, key="teacher_ckpt", expect="cross_encoder")
    check_monitor_form(str(cfg.monitor), teacher.task_names, list(cfg.student.metrics))
    bi_options = plain(cfg.student.get("bi_encoder")) or {}
    for side in ("query_max_length", "product_max_length"):
        if side in bi_options:
            check_max_length(bi_options[side], plain(cfg.encoder), f"student.bi_encoder.{side}")
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = prepare_resume(
        cfg.get("ckpt_path"), output_dir, OmegaConf.to_container(cfg, resolve=True)
    )
    if ckpt_path:  # resuming the student: read safely and of the right kind before any work
        check_checkpoint(ckpt_path, "ckpt_path", "bi_encoder")
    config_text = OmegaConf.to_yaml(cfg, resolve=True)  # as given (a resume compares with it)

    with open_dict(cfg):  # the teacher reads pairs at the length it was trained with
        cfg.data.max_length = int(teacher.hparams.encoder.get("max_length", cfg.data.max_length))
    datamodule = build_datamodule(
        cfg, load_tokenizer(teacher.hparams.encoder), teacher.label_columns
    )
    # The teacher's split: the student never trains on a query the teacher was tested on, and
    # is tested on the teacher's test queries, whatever data.seed says.
    datamodule.use_split(teacher.data_split, str(ckpt))
    datamodule.setup("fit")
    attach_prior_features(teacher, datamodule)  # a teacher with a score prior reads it per pair
    log.info("Data (%s):\n%s", datamodule.source.name, datamodule.describe())
    distillation = {**DISTILLATION_DEFAULTS, **(plain(cfg.student.get("distillation")) or {})}
    check_monitor(  # before the teacher scores anything
        str(cfg.monitor),
        [
            *student_train_metric_names(float(distillation["alpha"])),
            "val/loss",
            *metric_names(
                "val", teacher.task_names, datamodule.region_names, list(cfg.student.metrics)
            ),
        ],
        datamodule,
        {t["name"]: t["label"] for t in teacher.tasks},
    )
    if is_rank_zero():  # every check has passed: from here on the directory holds a run
        (output_dir / "config.yaml").write_text(config_text)
    scoring = plain(cfg.get("teacher_scores")) or {}
    device = scoring.get("device", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cached = cached_teacher_scores(
        teacher,
        datamodule,
        ckpt,
        cfg.paths.cache_dir if scoring.get("cache", True) else None,
        splits=list(scoring.get("splits", ["train"])),
        device=device,
        progress=bool(scoring.get("progress", True)),
    )
    teacher.cpu()

    student = instantiate(
        cfg.student,
        "student",
        encoder=plain(cfg.encoder),
        tasks=[dict(t) for t in teacher.hparams.tasks],
        loss=plain(cfg.loss) if cfg.get("loss") else dict(teacher.hparams.loss),
        bi_encoder={
            **(plain(cfg.student.get("bi_encoder")) or {}),
            "query_region_prefix": bool(datamodule.region_in_query),
        },
        region_names=list(datamodule.region_names),
        teacher={"path": str(ckpt), "scores_key": cached.key},
    )
    student.data_split = datamodule.split_record()
    if is_rank_zero():
        write_split(student.data_split, output_dir / SPLIT_FILE)
    student_data = StudentDataModule(
        datamodule, student.build_texts(datamodule), student.pad_token_id, cached.scores
    )
    trainer = build_trainer(cfg, job_type="distill")
    log_resolved_config(trainer, OmegaConf.to_container(cfg, resolve=True))
    record_run_id(trainer, output_dir)
    trainer.fit(student, datamodule=student_data, ckpt_path=ckpt_path)

    checkpoint = trainer.checkpoint_callback
    best_path = getattr(checkpoint, "best_model_path", "") or None
    best_score = getattr(checkpoint, "best_model_score", None)
    monitor_value = (
        float(best_score)
        if best_score is not None
        else float(trainer.callback_metrics.get(cfg.monitor, math.nan))
    )
    extra = {
        "monitor": cfg.monitor,
        cfg.monitor: monitor_value,
        "best_checkpoint": best_path,
        "teacher_ckpt": str(ckpt),
        "split_sha256": student.data_split["sha256"],
        "teacher_scores": {"key": cached.key, "path": str(cached.path), "hit": cached.from_cache},
    }
    best = {f"best/{cfg.monitor}": monitor_value}
    if not cfg.get("test_after_fit", True) or "test" not in datamodule.lists:
        write_json(output_dir / "metrics.json", extra)
        log_run_results(trainer, output_dir, best)
        return extra, {"datamodule": datamodule, "module": student, "trainer": trainer}

    student.use_data_regions(datamodule.region_names)
    test_loader = student_data.test_dataloader()
    trainer.test(student, dataloaders=test_loader, ckpt_path=best_path, verbose=False)
    student_metrics = _scalars(trainer.callback_metrics, "test/")
    metrics = list(student.hparams.metrics)
    teacher.eval().use_data_regions(datamodule.region_names)
    # One scoring pass per scorer gives both the per-list values (for paired comparisons,
    # experiments.compare --with teacher,random) and the aggregates: the student and random rows
    # come from the student's loader, the teacher's from its own pairs; both loaders hold the
    # same test lists under the same list indices.
    query_ids = datamodule.lists["test"].query_ids
    per_query = polars.concat(
        [
            per_query_metrics(
                test_loader,
                {
                    "model": (_model_scorer(student), 1),
                    "random": (random_scorer(len(student.task_names), cfg.seed), RANDOM_DRAWS),
                },
                student.task_names,
                datamodule.region_names,
                metrics,
                query_ids,
            ),
            per_query_metrics(
                datamodule.eval_dataloader("test"),
                {"teacher": (_model_scorer(teacher), 1)},
                teacher.task_names,
                datamodule.region_names,
                metrics,
                query_ids,
            ),
        ]
    )
    teacher_metrics, random_metrics = (
        summarize(
            per_query.filter(polars.col("scorer") == name),
            "test",
            student.task_names,
            datamodule.region_names,
            metrics,
        )
        for name in ("teacher", "random")
    )
    write_per_query(per_query, output_dir / "per_query.parquet")
    results = {"student": student_metrics, "teacher": teacher_metrics, "random": random_metrics}
    print_tables(
        results,
        "test",
        student.task_names,
        datamodule.region_names,
        [m for m in ("ndcg@10",) if m in metrics] or metrics[:1],
    )
    log_result_tables(
        trainer, results, "test", student.task_names, datamodule.region_names, metrics
    )
    payload = {
        "split": "test",
        "test": student_metrics,
        "teacher": teacher_metrics,
        "baselines": {"random": random_metrics},
        "student_over_teacher": _ratios(student_metrics, teacher_metrics),
        "regions": datamodule.region_names,
        "tasks": student.task_names,
        "dropped": datamodule.drop_report.dropped if datamodule.drop_report else {},
        **extra,
    }
    write_json(output_dir / "metrics.json", payload)
    log.info("Metrics written to %s", output_dir / "metrics.json")
    log_run_results(trainer, output_dir, best, per_query)
    return payload, {"datamodule": datamodule, "module": student, "trainer": trainer}
