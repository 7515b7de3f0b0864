"""``distill(cfg)``: train a bi-encoder student on a cross-encoder teacher's scores, test both.

The losses and the teacher-score cache are the library's (:mod:`ranking.losses.distillation`); this
is the workflow behind ``python -m experiments.distill``, on the shared fit routine
(:mod:`experiments.workflows.fit`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from data_modules.errors import ConfigError
from data_modules.splits import SPLIT_FILE, write_split
from data_modules.student import StudentDataModule
from experiments.workflows.config import build_datamodule, instantiate, plain
from experiments.workflows.fit import (
    finishing_wandb,
    fit_model,
    resume_checkpoint,
    start_run,
    traced_trainer,
    write_run_config,
)
from experiments.workflows.run_dir import is_rank_zero
from experiments.workflows.train import RANDOM_DRAWS, _model_scorer, _scalars
from experiments.workflows.wandb_run import log_result_tables, log_run_results
from ranking.analysis.report import print_tables, write_json
from ranking.losses.distillation import DISTILLATION_DEFAULTS
from ranking.metrics.metric_set import metric_names
from ranking.metrics.monitor import check_monitor, check_monitor_form
from ranking.metrics.per_query import per_query_metrics, summarize, write_per_query
from ranking.modules.bi_encoder import student_train_metric_names
from ranking.nn.encoders import check_max_length, load_tokenizer
from ranking.scorers.baselines import random_scorer
from ranking.scorers.prior_features import attach_prior_features
from ranking.serving.checkpoints import load_checkpoint
from ranking.serving.teacher_scores import cached_teacher_scores

log = logging.getLogger(__name__)


def _teacher_path(cfg: Any) -> Path:
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


@finishing_wandb
def distill(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train a bi-encoder student on a cross-encoder teacher's cached scores, test both.

    Steps: load the teacher (``cfg.teacher_ckpt``) -> build the data with the teacher's tokenizer
    and max length -> teacher scores of the training rows (cached) -> the student
    (``cfg.student``, encoder ``cfg.encoder``, the teacher's tasks) -> fit -> test the best
    student, the teacher and a random ranking on the same test lists -> ``metrics.json``.

    Logs to the configured loggers like ``train`` (W&B: named by the job's overrides, grouped
    by sweep, job type ``distill``, the run closed on return).

    Returns:
        ``(metrics, objects)`` like :func:`experiments.workflows.train.train`; ``metrics["test"]``
        is the student's, ``metrics["teacher"]`` the teacher's.
    """
    ckpt = _teacher_path(cfg)  # before anything else: a missing checkpoint fails at once
    output_dir = start_run(cfg)
    teacher = load_checkpoint(ckpt, key="teacher_ckpt", expect="cross_encoder")
    check_monitor_form(str(cfg.monitor), teacher.task_names, list(cfg.student.metrics))
    bi_options = plain(cfg.student.get("bi_encoder")) or {}
    if "query_region_prefix" in bi_options:  # it would be overwritten below: not a setting
        raise ConfigError(
            "student.bi_encoder.query_region_prefix is not a setting: the student reads queries "
            "as its data does (data.region_in_query); remove the key"
        )
    for side in ("query_max_length", "product_max_length"):
        if side in bi_options:
            check_max_length(bi_options[side], plain(cfg.encoder), f"student.bi_encoder.{side}")
    # Resuming the student: read safely and of the right kind before any work.
    ckpt_path, _ = resume_checkpoint(cfg, output_dir, "bi_encoder")
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
    write_run_config(output_dir, config_text)  # every check has passed: the dir holds a run
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
    trainer = traced_trainer(cfg, output_dir, "distill")
    fitted = fit_model(trainer, student, str(cfg.monitor), ckpt_path, datamodule=student_data)

    best_path, monitor_value = fitted["best_checkpoint"], fitted[cfg.monitor]
    extra = {
        **fitted,
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
    per_query = pl.concat(
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
            per_query.filter(pl.col("scorer") == name),
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
