"""``train(cfg)`` and ``evaluate(cfg)``: plain functions behind the thin Hydra entry points."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import polars
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from callbacks.resume import prepare_resume
from callbacks.wandb_report import finish_wandb, log_resolved_config, log_result_tables
from ranking.baselines import ScoreFn, random_scorer
from ranking.config import build_datamodule, build_module, build_trainer, plain, task_list
from ranking.encoders import load_tokenizer
from ranking.errors import ConfigError
from ranking.inference import inference_options
from ranking.module import RankingModule
from ranking.per_query import per_query_metrics, summarize, write_per_query
from ranking.rankings import sample_rankings
from ranking.report import print_tables, write_json

log = logging.getLogger(__name__)

TABLE_METRICS = ("ndcg@10",)
RANDOM_DRAWS = 20  # the random baseline is the mean over this many random rankings of each list


def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix)}


def _is_rank_zero() -> bool:
    """Before the Trainer exists: rank from the environment Lightning gives DDP children."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def _model_scorer(module: RankingModule) -> ScoreFn:
    """The trained model as a score function (eval mode, no autograd, on the module's device)."""

    def score(batch: dict[str, Any]) -> torch.Tensor:
        module.eval()
        on_device = {
            k: v.to(module.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
        }
        with torch.inference_mode():
            return module(on_device).float().cpu()

    return score


def _baseline_scorers(
    names: Sequence[str], datamodule: Any, split: str, num_tasks: int, seed: int
) -> dict[str, tuple[ScoreFn, int]]:
    """``{name: (score_fn, draws)}`` for the configured ``baselines``."""
    scorers: dict[str, tuple[ScoreFn, int]] = {}
    for name in names:
        if name == "random":
            scorers[name] = (random_scorer(num_tasks, seed), RANDOM_DRAWS)
            continue
        from ranking.text_baselines import build_text_baseline

        # Text outside the split is blanked: an encoder baseline then embeds only this split.
        in_split = np.zeros(datamodule.pair_texts.height, dtype=bool)
        for rows in datamodule.lists[split].rows:
            in_split[rows] = True
        texts = datamodule.pair_texts.with_columns(
            polars.when(polars.Series(in_split))
            .then(polars.col(c))
            .otherwise(polars.lit(""))
            .alias(c)
            for c in ("query", "product")
        )
        scorers[name] = (build_text_baseline(name, texts, num_tasks), 1)
    return scorers


def _test_and_report(
    trainer: pl.Trainer,
    module: RankingModule,
    datamodule: Any,
    split: str,
    output_dir: Path,
    cfg: DictConfig,
    ckpt_path: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Test the model on ``split``; score the same lists with the baselines; print and save.

    Writes ``metrics.json`` (aggregates) and ``per_query.parquet`` (the value of every list for
    the model and every baseline: the input of bootstrap intervals in ``experiments.compare``).
    """
    loader = datamodule.eval_dataloader(split)
    module.use_data_regions(datamodule.region_names)
    # the fast scorer (inference.mode) is built at test start, after the weights to test load
    module.use_inference(**inference_options(plain(cfg.get("inference"))))
    trainer.test(module, dataloaders=loader, ckpt_path=ckpt_path, verbose=False)
    model_metrics = _scalars(trainer.callback_metrics, "test/")
    if not trainer.is_global_zero:  # DDP: metrics above are synced; rank 0 alone reports
        return {"split": split, "test": model_metrics, **(extra or {})}
    metric_specs = list(module.hparams.metrics)
    scorers = {
        "model": (_model_scorer(module), 1),
        **_baseline_scorers(
            list(cfg.get("baselines") or []),
            datamodule,
            split,
            len(module.task_names),
            cfg.seed,
        ),
    }
    per_query = per_query_metrics(
        loader,
        scorers,
        module.task_names,
        datamodule.region_names,
        metric_specs,
        datamodule.lists[split].query_ids,
    )
    write_per_query(per_query, output_dir / "per_query.parquet")
    baselines = {
        name: summarize(
            per_query.filter(polars.col("scorer") == name),
            "test",
            module.task_names,
            datamodule.region_names,
            metric_specs,
        )
        for name in scorers
        if name != "model"
    }
    results = {"model": model_metrics, **baselines}
    metrics_in_table = [m for m in TABLE_METRICS if m in metric_specs] or [metric_specs[0]]
    print_tables(results, "test", module.task_names, datamodule.region_names, metrics_in_table)
    report = cfg.get("report") or {}
    rankings = sample_rankings(
        scorers["model"][0],
        datamodule,
        split,
        module.task_names,
        num_queries=int(report.get("sample_queries", 8)),
        top_k=int(report.get("top_k", 10)),
        seed=cfg.seed,
    )
    rankings.write_csv(output_dir / "sample_rankings.csv")
    log_result_tables(
        trainer,
        results,
        "test",
        module.task_names,
        datamodule.region_names,
        metric_specs,
        rankings,
    )
    payload = {
        "split": split,
        "test": model_metrics,
        "baselines": baselines,
        "regions": datamodule.region_names,
        "tasks": module.task_names,
        "dropped": datamodule.drop_report.dropped if datamodule.drop_report else {},
        **(extra or {}),
    }
    write_json(output_dir / "metrics.json", payload)
    log.info("Metrics written to %s", output_dir / "metrics.json")
    return payload


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit a ranking model, test its best checkpoint, and report it beside baselines.

    Writes into ``cfg.paths.output_dir``: ``config.yaml`` (resolved), ``checkpoints/``,
    ``metrics.json``, ``per_query.parquet``, ``sample_rankings.csv``. A W&B run, if any, is
    finished on return so that the next job of a multirun gets its own.

    Returns:
        ``(metrics, objects)``: the metrics payload (``metrics[cfg.monitor]`` is the best
        monitored value) and the datamodule, module and trainer.
    """
    try:
        return _train(cfg)
    finally:
        finish_wandb()


def _train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # ckpt_path=last: the run's own last checkpoint, with a config that must match the run's.
    ckpt_path = prepare_resume(
        cfg.get("ckpt_path"), output_dir, OmegaConf.to_container(cfg, resolve=True)
    )
    if _is_rank_zero():
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    inference_options(plain(cfg.get("inference")))  # a typo fails now, not after training
    tasks = task_list(cfg)
    tokenizer = load_tokenizer(plain(cfg.encoder))
    datamodule = build_datamodule(cfg, tokenizer, [t["label"] for t in tasks])
    datamodule.setup("fit")
    log.info("Data (%s):\n%s", datamodule.source.name, datamodule.summary())
    module = build_module(cfg, datamodule.region_names, datamodule)
    trainer = build_trainer(cfg, job_type="train")
    log_resolved_config(trainer, OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    checkpoint = trainer.checkpoint_callback
    best_path = getattr(checkpoint, "best_model_path", "") or None
    best_score = getattr(checkpoint, "best_model_score", None)
    if cfg.monitor not in trainer.callback_metrics and not trainer.sanity_checking:
        logged = sorted(k for k in trainer.callback_metrics if k.startswith("val/"))
        if logged and best_path is None:
            raise ConfigError(
                f"monitor '{cfg.monitor}' was never logged; logged: {logged[:12]} ..."
            )
    monitor_value = (
        float(best_score)
        if best_score is not None
        else float(trainer.callback_metrics.get(cfg.monitor, math.nan))
    )
    extra = {"monitor": cfg.monitor, cfg.monitor: monitor_value, "best_checkpoint": best_path}
    metrics: dict[str, Any] = extra
    if cfg.get("test_after_fit", True) and "test" in datamodule.lists:
        metrics = _test_and_report(
            trainer,
            module,
            datamodule,
            "test",
            output_dir,
            cfg,
            ckpt_path=best_path,
            extra=extra,
        )
    elif trainer.is_global_zero:
        write_json(output_dir / "metrics.json", extra)
    return metrics, {"datamodule": datamodule, "module": module, "trainer": trainer}


def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate a saved checkpoint on any data config (``split: all`` scores every list)."""
    try:
        return _evaluate(cfg)
    finally:
        finish_wandb()


def _evaluate(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    ckpt = Path(str(cfg.ckpt_path)).expanduser()
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path: checkpoint {ckpt} does not exist")
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    module = RankingModule.load_from_checkpoint(str(ckpt), map_location="cpu")
    split = cfg.split
    if split == "all":
        cfg.data.splits = {"test": 1.0}
        if "split_column" in cfg.data:  # a dataset's own split (ESCI) does not apply to "all"
            cfg.data.split_column = None
        split = "test"
    tokenizer = load_tokenizer(module.hparams.encoder)
    if "encoder" not in cfg:  # eval.yaml has no encoder group: pair length from the checkpoint
        with open_dict(cfg):
            cfg.data.max_length = int(module.hparams.encoder.get("max_length", 64))
    datamodule = build_datamodule(cfg, tokenizer, module.label_columns)
    datamodule.setup("test")
    trainer = build_trainer(cfg, job_type="evaluate")
    log_resolved_config(trainer, OmegaConf.to_container(cfg, resolve=True))
    metrics = _test_and_report(
        trainer, module, datamodule, split, output_dir, cfg, extra={"checkpoint": str(ckpt)}
    )
    return metrics, {"datamodule": datamodule, "module": module, "trainer": trainer}
