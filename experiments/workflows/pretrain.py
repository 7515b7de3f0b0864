"""``pretrain(cfg)``: masked-LM domain pretraining of an encoder on the product corpus.

The corpus, tokenizer training, MLM model and LightningModule are the library's
(:mod:`ranking.modules.masked_lm`); this is the workflow behind ``python -m experiments.pretrain``,
on the shared fit routine (:mod:`experiments.workflows.fit`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from data_modules.corpus import (
    TRAIN_MASK_SEED_OFFSET,
    VAL_MASK_SEED_OFFSET,
    build_corpus,
    fixed_masked_batches,
    mlm_collator,
    split_corpus,
    tokenize_corpus,
    train_wordpiece,
)
from data_modules.errors import ConfigError, EncoderLoadError
from experiments.workflows.config import build_loggers, build_source, plain
from experiments.workflows.fit import finishing_wandb, fit_model, start_run, write_run_config
from experiments.workflows.wandb_run import log_resolved_config, log_run_results, record_run_id
from ranking.analysis.report import write_json
from ranking.modules.masked_lm import (
    MaskedLMModule,
    PretrainOptions,
    build_mlm_model,
    plot_loss_curve,
)
from ranking.nn.encoders import check_max_length, load_tokenizer
from ranking.nn.precision import resolve_precision

log = logging.getLogger(__name__)


def _prepare_save_dir(opts: PretrainOptions, output_dir: Path) -> Path:
    save_dir = Path(opts.save_dir).expanduser() if opts.save_dir else output_dir / "encoder"
    if save_dir.exists() and any(save_dir.iterdir()):
        raise ConfigError(
            f"pretrain.save_dir: {save_dir} already holds files; choose an empty or new directory"
        )
    return save_dir


def _tokenizer_for(
    spec: Mapping[str, Any], opts: PretrainOptions, train_texts: Sequence[str]
) -> PreTrainedTokenizerBase:
    if not opts.train_tokenizer:
        return load_tokenizer(spec)
    if spec.get("source") != "random":
        raise ConfigError(
            f"pretrain.train_tokenizer=true needs a randomly initialised encoder "
            f"(encoder.source=random, e.g. encoder=tiny_bert); encoder '{spec.get('name')}' "
            f"has source '{spec.get('source')}', whose pretrained weights belong to its own "
            "vocabulary"
        )
    if spec.get("tokenizer_path"):
        raise ConfigError(
            "pretrain.train_tokenizer=true trains a new vocabulary: leave encoder.tokenizer_path "
            f"unset (it is {spec['tokenizer_path']!r})"
        )
    max_positions = int((spec.get("architecture") or {}).get("max_position_embeddings", 512))
    return train_wordpiece(train_texts, opts.vocab_size, opts.lowercase, max_positions)


TRAINER_KEYS = ("accelerator", "devices", "precision", "enable_progress_bar")


def _trainer_options(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.trainer``'s accelerator, precision (``auto`` resolved) and progress bar."""
    node = plain(cfg.get("trainer") or {})
    unknown = sorted(set(node) - set(TRAINER_KEYS))
    if unknown:
        raise ConfigError(
            f"pretrain: trainer has unknown key(s) {unknown}; pretraining uses "
            f"{list(TRAINER_KEYS)} (its length: pretrain.epochs, pretrain.max_steps)"
        )
    if node.get("devices", 1) != 1:
        raise ConfigError(f"pretrain: trainer.devices must be 1, got {node['devices']}")
    accelerator = str(node.get("accelerator", "auto"))
    precision, _ = resolve_precision(node.get("precision", "auto"), accelerator)
    return {
        "accelerator": accelerator,
        "precision": precision,
        "enable_progress_bar": bool(node.get("enable_progress_bar", True)),
    }


@finishing_wandb
def pretrain(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Masked-LM pretraining of ``cfg.encoder`` on the corpus of ``cfg.data``.

    Logs to ``csv/metrics.csv`` and to the ``logger`` group's loggers like ``train`` (W&B:
    named by the job's overrides, grouped by sweep, job type ``pretrain``, the loss curve and
    the final validation loss in the run, closed on return).


    Writes into ``cfg.paths.output_dir``: ``config.yaml``, ``csv/metrics.csv`` (loss per step,
    val loss per epoch), ``mlm_loss.png``, ``pretrain_metrics.json`` and the model directory
    ``pretrain.save_dir`` (default ``<output_dir>/encoder``).

    Returns:
        ``(metrics, objects)``: the payload of ``pretrain_metrics.json``
        (``metrics["val/mlm_loss"]`` is the final validation loss, None without validation) and
        the module, tokenizer, trainer and validation loader (fixed masks).
    """
    started = time.perf_counter()
    output_dir = start_run(cfg, resumable=False)
    opts = PretrainOptions.from_mapping(plain(cfg.pretrain))
    spec = plain(cfg.encoder)
    check_max_length(opts.max_length, spec, "pretrain.max_length")
    save_dir = _prepare_save_dir(opts, output_dir)
    if opts.train_tokenizer and spec.get("source") != "random":
        _tokenizer_for(spec, opts, [])  # fail before loading any data
    output_dir.mkdir(parents=True, exist_ok=True)
    config_text = OmegaConf.to_yaml(cfg, resolve=True)

    source = build_source(cfg)
    corpus = build_corpus(source.load(), source.name, opts.text_fields, opts.include_queries)
    train_texts, val_texts = split_corpus(corpus.texts, opts.val_fraction, cfg.seed)
    tokenizer = _tokenizer_for(spec, opts, train_texts)
    train_features = tokenize_corpus(tokenizer, train_texts, opts.max_length, opts.whole_word_mask)
    val_features = tokenize_corpus(tokenizer, val_texts, opts.max_length, opts.whole_word_mask)
    # Written once the data passed its checks: a stopped run leaves no run behind it.
    write_run_config(output_dir, config_text)
    lengths = [sum(f["attention_mask"]) for f in train_features]
    log.info(
        "Corpus (%s): %d texts (%d products, %d queries), %d train / %d val, %d train tokens",
        source.name,
        len(corpus.texts),
        corpus.products,
        corpus.queries,
        len(train_texts),
        len(val_texts),
        sum(lengths),
    )

    model = build_mlm_model(spec, tokenizer, opts.matching_init)
    if len(tokenizer) > model.config.vocab_size:
        raise EncoderLoadError(
            f"encoder '{spec.get('name')}': its tokenizer has {len(tokenizer)} entries but the "
            f"model only {model.config.vocab_size} embeddings"
        )
    module = MaskedLMModule(model, opts.lr, opts.weight_decay, opts.warmup_fraction)
    train_loader = DataLoader(
        train_features,
        batch_size=opts.batch_size,
        shuffle=True,
        collate_fn=mlm_collator(tokenizer, opts, cfg.seed + TRAIN_MASK_SEED_OFFSET),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    val_batches = fixed_masked_batches(
        val_features, tokenizer, opts, cfg.seed + VAL_MASK_SEED_OFFSET
    )
    val_loader = DataLoader(val_batches, batch_size=None) if val_batches else None
    run = _trainer_options(cfg)
    trainer = L.Trainer(
        accelerator=run["accelerator"],
        devices=1,
        precision=run["precision"],
        max_epochs=opts.epochs,
        max_steps=opts.max_steps,
        logger=[
            CSVLogger(save_dir=str(output_dir), name="csv", version=""),
            *build_loggers(cfg, job_type="pretrain"),
        ],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=run["enable_progress_bar"],
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
        default_root_dir=str(output_dir),
        limit_val_batches=1.0 if val_loader is not None else 0,
        # Validation inside fit runs under no_grad; standalone validate under inference mode
        # would leave the loss accumulators as inference tensors that fit cannot update.
        inference_mode=False,
    )
    log_resolved_config(trainer, OmegaConf.to_container(cfg, resolve=True))
    record_run_id(trainer, output_dir)
    initial_val = final_val = None
    if val_loader is not None:
        initial_val = float(trainer.validate(module, val_loader, verbose=False)[0]["val/mlm_loss"])
    fit_model(trainer, module, None, train_dataloaders=train_loader, val_dataloaders=val_loader)
    if val_loader is not None:
        final_val = float(trainer.validate(module, val_loader, verbose=False)[0]["val/mlm_loss"])

    save_dir.mkdir(parents=True, exist_ok=True)
    module.model.save_pretrained(str(save_dir))
    tokenizer.save_pretrained(str(save_dir))
    csv_path = output_dir / "csv" / "metrics.csv"
    if csv_path.is_file():
        plot_loss_curve(csv_path, output_dir / "mlm_loss.png")

    metrics: dict[str, Any] = {
        "val/mlm_loss": final_val,  # None without a validation share
        "val/mlm_loss_initial": initial_val,
        "epochs": [{"epoch": e, **module.history[e]} for e in sorted(module.history)],
        "steps": int(trainer.global_step),
        "corpus": {
            "source": source.name,
            "texts": len(corpus.texts),
            "products": corpus.products,
            "queries": corpus.queries,
            "train_texts": len(train_texts),
            "val_texts": len(val_texts),
            "train_tokens": int(sum(lengths)),
            "truncated_train_texts": int(sum(n >= opts.max_length for n in lengths)),
        },
        "tokenizer": {
            "trained": opts.train_tokenizer,
            "vocab_size": len(tokenizer),
            **({"requested_vocab_size": opts.vocab_size} if opts.train_tokenizer else {}),
        },
        "encoder": {
            "name": spec.get("name"),
            "source": spec.get("source"),
            "parameters": sum(p.numel() for p in module.model.parameters()),
        },
        "save_dir": str(save_dir),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(output_dir / "pretrain_metrics.json", metrics)
    log_run_results(
        trainer,
        output_dir,
        {"final/val/mlm_loss": final_val, "initial/val/mlm_loss": initial_val},
        images={"mlm_loss": output_dir / "mlm_loss.png"},
    )
    log.info(
        "Encoder saved to %s; fine-tune it with:\n  python -m experiments.train encoder=local "
        "encoder.path=%s",
        save_dir,
        save_dir,
    )
    objects = {
        "module": module,
        "tokenizer": tokenizer,
        "trainer": trainer,
        "val_loader": val_loader,
    }
    return metrics, objects
