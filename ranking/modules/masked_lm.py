"""Domain-adaptive pretraining: the masked-LM model, its options and its LightningModule.

The multi-task BERT ranking and ListBERT papers both continue BERT's masked-LM objective on the
shop's own text before fine-tuning (domain-adaptive pretraining; Gururangan et al., 2020, "Don't
Stop Pretraining", ACL). ``pretrain(cfg)``:

1. builds the corpus from the data adapter's canonical table: one text per product (title and
   description joined by " ; ", as the ranking pairs join product fields), optionally the distinct
   query strings; holds out ``val_fraction`` of it;
2. optionally trains a WordPiece vocabulary on the training texts (``tokenizers``; random-init
   encoders only);
3. trains ``BertForMaskedLM`` (random init from the encoder spec) or ``AutoModelForMaskedLM`` (the
   spec's pretrained weights) with ``DataCollatorForLanguageModeling`` (Devlin et al., 2019: 15 %
   of tokens chosen; of those 80 % -> [MASK], 10 % -> a random token, 10 % kept);
4. saves a Hugging Face directory (``config.json``, ``model.safetensors``, tokenizer files) that
   ``encoder=local encoder.path=<dir>`` loads for fine-tuning, plus ``csv/metrics.csv`` (loss per
   step), ``mlm_loss.png`` and ``pretrain_metrics.json``.

The loop is a small LightningModule rather than a hand-written loop: Lightning gives the progress
bar, per-step CSV logging, gradient clipping, the LR schedule per step and GPU/bf16
(``trainer.accelerator``, ``trainer.precision`` in ``conf/pretrain.yaml``) with no code of ours,
as in ranking training.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torchmetrics.aggregation import MeanMetric
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    PreTrainedModel,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from data_modules.corpus import SPECIAL_TOKENS
from data_modules.errors import ConfigError, EncoderLoadError
from ranking.modules.optim import adamw_with_warmup
from ranking.nn.encoders import (
    matching_attention_init,
    minilm_package_dir,
    unsafe_weights,
)

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of tokens that carry no MLM loss (the Hugging Face convention)


# --------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class PretrainOptions:
    """The ``pretrain`` config node, checked once (see ``conf/pretrain.yaml`` for each key)."""

    epochs: int = 10
    max_steps: int = -1
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    mlm_probability: float = 0.15
    whole_word_mask: bool = False
    max_length: int = 64
    text_fields: tuple[str, ...] = ("product_title", "product_description")
    include_queries: bool = False
    val_fraction: float = 0.05
    train_tokenizer: bool = False
    vocab_size: int = 8000
    lowercase: bool = True
    matching_init: bool = True
    save_dir: str | None = None

    @classmethod
    def from_mapping(cls, node: Mapping[str, Any]) -> PretrainOptions:
        """Build from a plain mapping; unknown keys and out-of-range values raise ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(node) - known)
        if unknown:
            raise ConfigError(f"pretrain has unknown key(s) {unknown}; valid: {sorted(known)}")
        values = dict(node)
        if "text_fields" in values:
            values["text_fields"] = tuple(values["text_fields"] or ())
        options = cls(**values)
        options.check()
        return options

    def check(self) -> None:
        """Raise ConfigError naming the first ``pretrain.<key>`` whose value is out of range."""
        rules = [
            ("epochs", self.epochs >= 1, ">= 1"),
            ("max_steps", self.max_steps == -1 or self.max_steps > 0, "-1 or > 0"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("mlm_probability", 0 < self.mlm_probability < 1, "in (0, 1)"),
            ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)"),
            ("warmup_fraction", 0 <= self.warmup_fraction < 1, "in [0, 1)"),
            ("max_length", self.max_length >= 4, ">= 4"),
            ("text_fields", bool(self.text_fields), "a non-empty list of columns"),
            ("vocab_size", self.vocab_size > len(SPECIAL_TOKENS), f"> {len(SPECIAL_TOKENS)}"),
        ]
        for key, ok, expected in rules:
            if not ok:
                raise ConfigError(f"pretrain.{key} must be {expected}, got {getattr(self, key)!r}")


# ----------------------------------------------------------------------------------------- model
def _pretrained_dir(spec: Mapping[str, Any]) -> Path:
    if spec.get("source") == "package":
        return minilm_package_dir()
    path = spec.get("path")
    if not path or path == "???":
        raise ConfigError("encoder.path must be set when encoder.source is 'path'")
    path = Path(str(path)).expanduser()
    if not (path / "config.json").is_file():
        raise EncoderLoadError(f"encoder ({spec.get('source')}): {path} has no config.json")
    return path


def build_mlm_model(
    spec: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, matching_init: bool = True
) -> PreTrainedModel:
    """The masked-LM model an encoder spec starts from.

    ``source: random``: ``BertForMaskedLM`` of the spec's ``architecture`` and the tokenizer's
    vocabulary size (with the ranking ``matching_init_scale`` only if ``matching_init``).
    ``package``/``path``: ``AutoModelForMaskedLM`` from the directory; a checkpoint saved
    without an MLM head (e.g. all-MiniLM-L6-v2) gets a freshly initialised head.
    """
    source = spec.get("source")
    if source == "random":
        config = BertConfig(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            **dict(spec.get("architecture") or {}),
        )
        model = BertForMaskedLM(config)
        if matching_init and spec.get("matching_init_scale"):
            matching_attention_init(model.bert, float(spec["matching_init_scale"]))
        return model
    if source not in ("package", "path"):
        raise ConfigError(f"encoder.source must be random, package or path, got {source!r}")
    path = _pretrained_dir(spec)
    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            str(path), config=config, local_files_only=True, output_loading_info=True
        )
    except (OSError, ValueError) as err:
        raise EncoderLoadError(
            f"encoder ({source}): {path} cannot be loaded as a masked-LM model: {err}"
        ) from err
    except pickle.UnpicklingError:  # *.bin weights are read with weights_only=True
        raise unsafe_weights(path, f"encoder ({source})") from None
    if info.get("missing_keys"):
        log.info(
            "%s has no masked-LM head (%d tensors missing): the head starts randomly initialised",
            path,
            len(info["missing_keys"]),
        )
    return model


def masked_lm_loss(model: PreTrainedModel, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the masked tokens (``labels != -100``) of a batch.

    ``L = -(1/|M|) sum_{(b,t) in M} log softmax(W h_{b,t})[y_{b,t}]`` with M the masked positions.
    For BERT the vocabulary projection runs on the masked states only ([|M|, H] instead of
    [B, T, H]): the same value as ``model(**batch).loss`` with ~1/0.15 less work in the head,
    which dominates a small encoder with a 30k vocabulary (tiny_bert, 1 CPU thread: 6-9x
    faster training steps, measured). Other architectures use their own forward.
    A batch without masked tokens gives 0 (it has no weight in the epoch means).
    """
    labels = batch["labels"]
    selected = labels != IGNORE_INDEX
    if not isinstance(model, BertForMaskedLM):
        loss = model(**batch).loss
        return loss if selected.any() else loss.nan_to_num(0.0)
    hidden = model.bert(
        input_ids=batch["input_ids"],
        attention_mask=batch.get("attention_mask"),
        token_type_ids=batch.get("token_type_ids"),
    ).last_hidden_state
    logits = model.cls(hidden[selected])
    if not selected.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels[selected])


class MaskedLMModule(L.LightningModule):
    """Lightning wrapper that trains a masked-LM model and tracks token-weighted epoch losses.

    Logs ``train/mlm_loss`` and ``train/lr`` every step, ``train/mlm_loss_epoch`` and
    ``val/mlm_loss`` per epoch (means over masked tokens, not over batches). ``history`` holds
    ``{epoch: {"train/mlm_loss": ..., "val/mlm_loss": ...}}`` of the fit.

    Args:
        model: A Hugging Face masked-LM model.
        lr: AdamW peak learning rate (linear warm-up over ``warmup_fraction`` of the steps,
            then linear decay to 0).
        weight_decay: AdamW weight decay (not on biases and LayerNorm weights).
        warmup_fraction: Share of the optimiser steps spent warming up.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        lr: float,
        weight_decay: float = 0.01,
        warmup_fraction: float = 0.06,
    ) -> None:
        super().__init__()
        # from_pretrained returns a model in eval mode and Lightning keeps submodule modes:
        # without this, dropout of a pretrained encoder would stay off during training.
        self.model = model.train()
        self.save_hyperparameters(ignore=["model"])
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.history: dict[int, dict[str, float]] = {}

    def _step(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return masked_lm_loss(self.model, batch), int((batch["labels"] != IGNORE_INDEX).sum())

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, count = self._step(batch)
        self.train_loss.update(loss.detach(), count)
        size = batch["input_ids"].shape[0]
        self.log("train/mlm_loss", loss, on_step=True, prog_bar=True, batch_size=size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, batch_size=size)
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss, count = self._step(batch)
        self.val_loss.update(loss, count)

    def on_validation_epoch_end(self) -> None:
        value = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val/mlm_loss", value, prog_bar=True)
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self.history.setdefault(self.current_epoch, {})["val/mlm_loss"] = float(value)

    def on_train_epoch_end(self) -> None:
        value = self.train_loss.compute()
        self.train_loss.reset()
        self.log("train/mlm_loss_epoch", value)
        self.history.setdefault(self.current_epoch, {})["train/mlm_loss"] = float(value)

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_warmup(
            self.model.parameters(),
            total_steps=self.trainer.estimated_stepping_batches,
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            warmup_ratio=self.hparams.warmup_fraction,
        )


# --------------------------------------------------------------------------------------- outputs
def plot_loss_curve(csv_path: Path, png_path: Path) -> None:
    """PNG of the per-step training MLM loss (raw and moving average) and val loss per epoch."""
    from matplotlib.figure import Figure  # object API: no pyplot global state, no GUI backend

    table = pl.read_csv(csv_path)
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    if "train/mlm_loss" in table.columns:
        train = table.filter(pl.col("train/mlm_loss").is_not_null())
        steps, losses = train["step"].to_numpy(), train["train/mlm_loss"].to_numpy()
        axes.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train (step)")
        window = max(1, len(losses) // 25)
        if window > 1:
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            centre = steps[(window - 1) // 2 :][: len(smooth)]  # centred moving average
            axes.plot(centre, smooth, color="tab:blue", label=f"train (mean of {window})")
    if "val/mlm_loss" in table.columns:
        val = table.filter(pl.col("val/mlm_loss").is_not_null())
        axes.plot(
            val["step"], val["val/mlm_loss"], "o-", color="tab:orange", label="val (fixed masks)"
        )
    axes.set_xlabel("optimiser step")
    axes.set_ylabel("masked-LM loss (nats per masked token)")
    axes.set_title("domain-adaptive pretraining")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
