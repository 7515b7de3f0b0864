"""``train(cfg)`` and ``evaluate(cfg)``: plain functions behind the thin Hydra entry points."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from ranking.baselines import evaluate_scorer, random_scorer
from ranking.config import build_datamodule, build_module, build_trainer, plain, task_list
from ranking.encoders import load_tokenizer
from ranking.errors import ConfigError
from ranking.module import RankingModule
from ranking.report import print_tables, write_json

log = logging.getLogger(__name__)

TABLE_METRICS = ("ndcg@10",)
RANDOM_DRAWS = 20  # the random baseline is the mean over this many random rankings of each list


def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix)}


def _test_and_report(
    trainer: pl.Trainer,
    module: RankingModule,
    datamodule: Any,
    split: str,
    output_dir: Path,
    seed: int,
    ckpt_path: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Test the model on ``split``, score the same lists at random, print and save both."""
    loader = datamodule.eval_dataloader(split)
    module.use_data_regions(datamodule.region_names)
    trainer.test(module, dataloaders=loader, ckpt_path=ckpt_path, verbose=False)
    model_metrics = _scalars(trainer.callback_metrics, "test/")
    random_metrics = evaluate_scorer(
        loader,
        random_scorer(len(module.task_names), seed),
        module.task_names,
        datamodule.region_names,
        list(module.hparams.metrics),
        stage="test",
        draws=RANDOM_DRAWS,
    )
    results = {"model": model_metrics, "random": random_metrics}
    metrics_in_table = [m for m in TABLE_METRICS if m in module.hparams.metrics] or [
        module.hparams.metrics[0]
    ]
    print_tables(results, "test", module.task_names, datamodule.region_names, metrics_in_table)
    payload = {
        "split": split,
        "test": model_metrics,
        "baselines": {"random": random_metrics},
        "regions": datamodule.region_names,
        "tasks": module.task_names,
        "dropped": datamodule.drop_report.dropped if datamodule.drop_report else {},
        **(extra or {}),
    }
    write_json(output_dir / "metrics.json", payload)
    log.info("Metrics written to %s", output_dir / "metrics.json")
    return payload


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit a ranking model, test its best checkpoint, and report it beside a random baseline.

    Writes into ``cfg.paths.output_dir``: ``config.yaml`` (resolved), ``checkpoints/``,
    ``metrics.json``.

    Returns:
        ``(metrics, objects)``: the metrics payload (``metrics[cfg.monitor]`` is the best
        monitored value) and the datamodule, module and trainer.
    """
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    tasks = task_list(cfg)
    tokenizer = load_tokenizer(plain(cfg.encoder))
    datamodule = build_datamodule(cfg, tokenizer, [t["label"] for t in tasks])
    datamodule.setup("fit")
    log.info("Data (%s):\n%s", datamodule.source.name, datamodule.describe())
    module = build_module(cfg, datamodule.region_names)
    trainer = build_trainer(cfg)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
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
            cfg.seed,
            ckpt_path="best" if best_path else None,
            extra=extra,
        )
    else:
        write_json(output_dir / "metrics.json", extra)
    return metrics, {"datamodule": datamodule, "module": module, "trainer": trainer}


def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate a saved checkpoint on any data config (``split: all`` scores every list)."""
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
        split = "test"
    tokenizer = load_tokenizer(module.hparams.encoder)
    datamodule = build_datamodule(cfg, tokenizer, module.label_columns)
    datamodule.setup("test")
    trainer = build_trainer(cfg)
    metrics = _test_and_report(
        trainer, module, datamodule, split, output_dir, cfg.seed, extra={"checkpoint": str(ckpt)}
    )
    return metrics, {"datamodule": datamodule, "module": module, "trainer": trainer}
