"""``train(cfg)`` and ``evaluate(cfg)``: plain functions behind the thin Hydra entry points."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import polars as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from data_modules.splits import SPLIT_FILE, write_split
from experiments.workflows.config import build_datamodule, build_module, plain, task_list
from experiments.workflows.fit import (
    finishing_wandb,
    fit_model,
    resume_checkpoint,
    start_run,
    traced_trainer,
    write_run_config,
)
from experiments.workflows.run_dir import is_rank_zero
from experiments.workflows.wandb_run import log_result_tables, log_run_results
from ranking.analysis.rankings import sample_rankings
from ranking.analysis.report import print_tables, write_json
from ranking.metrics.monitor import check_monitor, check_monitor_form
from ranking.metrics.per_query import ScoreFn, per_query_metrics, summarize, write_per_query
from ranking.modules.cross_encoder import RankingModule
from ranking.modules.ranker import SPLIT_CHECKPOINT_KEY
from ranking.nn.encoders import check_max_length, load_tokenizer
from ranking.nn.inference import inference_options
from ranking.scorers.baselines import random_scorer
from ranking.scorers.prior_features import attach_prior_features
from ranking.serving.checkpoints import check_checkpoint
from ranking.serving.trec import cross_check, pair_frame, write_trec_files

log = logging.getLogger(__name__)

TABLE_METRICS = ("ndcg@10",)
RANDOM_DRAWS = 20  # the random baseline is the mean over this many random rankings of each list


def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix)}


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


class _ScoreRecorder:
    """A score function that also keeps the scores it returns, by pair row.

    The per-query pass scores every test list once; recording it gives the TREC run files at no
    extra cost (``rows [N]`` and ``scores [N, K]`` of the real items, in scoring order).
    """

    def __init__(self, score: ScoreFn) -> None:
        self.score = score
        self.rows: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []

    def __call__(self, batch: dict[str, Any]) -> torch.Tensor:
        scores = self.score(batch)
        mask = batch["mask"].cpu()
        self.rows.append(batch["rows"].cpu()[mask].numpy())
        self.scores.append(scores[mask].float().numpy())
        return scores

    def result(self, num_tasks: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.rows:
            return np.zeros(0, np.int64), np.zeros((0, num_tasks), np.float32)
        return np.concatenate(self.rows), np.concatenate(self.scores)


def _baseline_scorers(
    names: Sequence[str], datamodule: Any, split: str, num_tasks: int, seed: int
) -> dict[str, tuple[ScoreFn, int]]:
    """``{name: (score_fn, draws)}`` for the configured ``baselines``."""
    from ranking.scorers.text_baselines import build_text_baseline, lookup_scorer

    scorers: dict[str, tuple[ScoreFn, int]] = {}
    # LambdaMART reads the zero-shot cosine of every pair row (all splits): computed once (or
    # taken from a score prior that already computed it), it also serves as the minilm_zero_shot
    # baseline (each text is embedded on its own, so the split's rows get the same values).
    cosine = None
    if "minilm_cosine" in getattr(datamodule, "pair_feature_names", []):
        index = datamodule.pair_feature_names.index("minilm_cosine")
        cosine = np.ascontiguousarray(datamodule.pair_features[:, index])
    elif "lambdamart" in names:
        from ranking.scorers.prior_features import compute_prior_features

        cached = compute_prior_features(
            ["minilm_cosine"], datamodule.pair_texts, datamodule.cache_dir
        )
        cosine = cached[:, 0]
    for name in names:
        if name == "random":
            scorers[name] = (random_scorer(num_tasks, seed), RANDOM_DRAWS)
        elif name == "lambdamart":  # learns from the training split, early-stops on validation
            from ranking.scorers.lambdamart import lambdamart_scorer

            score = lambdamart_scorer(datamodule, num_tasks, seed=seed, cosine=cosine)
            scorers[name] = (score, 1)
        elif name == "minilm_zero_shot" and cosine is not None:
            scorers[name] = (lookup_scorer(torch.from_numpy(cosine), num_tasks, name), 1)
        else:
            # Text outside the split is blanked: an encoder baseline then embeds only this split.
            in_split = np.zeros(datamodule.pair_texts.height, dtype=bool)
            for rows in datamodule.lists[split].rows:
                in_split[rows] = True
            texts = datamodule.pair_texts.with_columns(
                pl.when(pl.Series(in_split)).then(pl.col(c)).otherwise(pl.lit("")).alias(c)
                for c in ("query", "product")
            )
            scorers[name] = (build_text_baseline(name, texts, num_tasks), 1)
    return scorers


def _test_and_report(
    trainer: L.Trainer,
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
    model_score = _model_scorer(module)
    recorder = _ScoreRecorder(model_score)
    scorers = {
        "model": (recorder, 1),
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
            per_query.filter(pl.col("scorer") == name),
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
        model_score,
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
    trec = _write_trec(cfg, module, datamodule, recorder, output_dir, model_metrics, metric_specs)
    payload = {
        "split": split,
        "test": model_metrics,
        "baselines": baselines,
        "regions": datamodule.region_names,
        "tasks": module.task_names,
        "dropped": datamodule.drop_report.dropped if datamodule.drop_report else {},
        **trec,
        **(extra or {}),
    }
    write_json(output_dir / "metrics.json", payload)
    log.info("Metrics written to %s", output_dir / "metrics.json")
    log_run_results(trainer, output_dir, _best(extra), per_query)
    return payload


def _best(extra: dict[str, Any] | None) -> dict[str, Any]:
    """``{"best/<monitor>": value}`` for the W&B summary (empty without a monitor)."""
    monitor = (extra or {}).get("monitor")
    return {f"best/{monitor}": extra[monitor]} if monitor and monitor in extra else {}


def _write_trec(
    cfg: DictConfig,
    module: RankingModule,
    datamodule: Any,
    recorder: _ScoreRecorder,
    output_dir: Path,
    model_metrics: dict[str, float],
    metric_specs: list[str],
) -> dict[str, Any]:
    """``run.<task>.trec`` + ``qrels.<task>.txt`` of the scored test pairs; optional cross-check.

    ``cfg.trec_files`` (default true) turns the files off; ``cfg.cross_check`` (default false)
    evaluates them with ``ir_measures`` and records the agreement under ``cross_check``.
    """
    if not cfg.get("trec_files", True):
        return {}
    rows, scores = recorder.result(len(module.task_names))
    frame = pair_frame(datamodule, rows, scores, module.task_names, module.task_names)
    files = write_trec_files(output_dir, frame, module.task_names, module.task_names)
    out: dict[str, Any] = {
        "trec_files": {k: files[k] for k in ("runs", "qrels", "levels", "id_maps")}
    }
    if cfg.get("cross_check", False):
        out["cross_check"] = cross_check(files, metric_specs, model_metrics)
    return out


def _seen_in_training(
    module: RankingModule, datamodule: Any, split: str, requested: str
) -> dict[str, Any]:
    """How many lists of ``split`` the model trained on (``split=all`` scores them; it says so)."""
    record = module.data_split
    if record is None or split not in datamodule.lists:
        return {}
    trained = set(record["query_ids"].get("train", []))
    lists = datamodule.lists[split].query_ids
    seen = sum(query_id in trained for query_id in lists)
    if seen:
        log.warning(
            "%d of the %d lists scored (split=%s) are from the model's training split",
            seen,
            len(lists),
            requested,
        )
    return {"lists_from_training_split": seen, "model_split_sha256": record["sha256"]}


@finishing_wandb
def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit a ranking model, test its best checkpoint, and report it beside baselines.

    Writes into ``cfg.paths.output_dir``: ``config.yaml`` (resolved), ``checkpoints/``,
    ``metrics.json``, ``per_query.parquet``, ``sample_rankings.csv``. A W&B run, if any, is
    finished on return so that the next job of a multirun gets its own.

    Returns:
        ``(metrics, objects)``: the metrics payload (``metrics[cfg.monitor]`` is the best
        monitored value) and the datamodule, module and trainer.
    """
    # Everything that can be checked without data first: a bad value stops in seconds.
    output_dir = start_run(cfg)
    tasks = task_list(cfg)
    check_monitor_form(str(cfg.monitor), [t["name"] for t in tasks], list(cfg.model.metrics))
    check_max_length(cfg.data.max_length, plain(cfg.encoder), "data.max_length")
    # ckpt_path=last: the run's own last checkpoint, with a config that must match the run's;
    # read safely (weights_only) and of the right kind before any work; its split is kept.
    ckpt_path, start = resume_checkpoint(cfg, output_dir, "cross_encoder")

    inference_options(plain(cfg.get("inference")))  # a typo fails now, not after training
    tokenizer = load_tokenizer(plain(cfg.encoder))
    datamodule = build_datamodule(cfg, tokenizer, [t["label"] for t in tasks])
    if start is not None:
        datamodule.use_split(start.get(SPLIT_CHECKPOINT_KEY), str(ckpt_path))
    datamodule.setup("fit")
    log.info("Data (%s):\n%s", datamodule.source.name, datamodule.summary())
    module = build_module(cfg, datamodule.region_names, datamodule)
    attach_prior_features(module, datamodule)
    module.data_split = datamodule.split_record()
    check_monitor(
        str(cfg.monitor),
        module.fit_metric_names(datamodule.region_names),
        datamodule,
        {t["name"]: t["label"] for t in tasks},
    )
    write_run_config(output_dir, OmegaConf.to_yaml(cfg, resolve=True))
    if is_rank_zero():
        write_split(module.data_split, output_dir / SPLIT_FILE)
    trainer = traced_trainer(cfg, output_dir, "train")
    extra = {
        **fit_model(trainer, module, str(cfg.monitor), ckpt_path, datamodule=datamodule),
        "split_sha256": module.data_split["sha256"],
    }
    metrics: dict[str, Any] = extra
    if cfg.get("test_after_fit", True) and "test" in datamodule.lists:
        metrics = _test_and_report(
            trainer,
            module,
            datamodule,
            "test",
            output_dir,
            cfg,
            ckpt_path=extra["best_checkpoint"],
            extra=extra,
        )
    elif trainer.is_global_zero:
        write_json(output_dir / "metrics.json", extra)
        log_run_results(trainer, output_dir, _best(extra))
    return metrics, {"datamodule": datamodule, "module": module, "trainer": trainer}


@finishing_wandb
def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate a saved checkpoint on any data config (``split: all`` scores every list)."""
    output_dir = start_run(cfg, resumable=False)
    ckpt = Path(str(cfg.ckpt_path)).expanduser()
    check_checkpoint(ckpt, "ckpt_path", "cross_encoder")  # weights_only: no code from the file
    output_dir.mkdir(parents=True, exist_ok=True)
    module = RankingModule.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True)
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
    if cfg.split != "all":  # the model's own split: its training queries never count as test
        datamodule.use_split(module.data_split, str(ckpt))
    datamodule.setup("test")
    attach_prior_features(module, datamodule)
    extra = {"checkpoint": str(ckpt), **_seen_in_training(module, datamodule, split, cfg.split)}
    trainer = traced_trainer(cfg, output_dir, "evaluate")
    metrics = _test_and_report(trainer, module, datamodule, split, output_dir, cfg, extra=extra)
    return metrics, {"datamodule": datamodule, "module": module, "trainer": trainer}
