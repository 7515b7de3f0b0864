"""The bi-encoder student as a LightningModule: ground-truth loss plus distillation from a teacher.

The network is :class:`ranking.nn.bi_encoder.BiEncoder`, its data
:mod:`data_modules.student`; ``experiments.distill`` trains it from a cross-encoder teacher.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from data_modules.errors import ConfigError
from data_modules.student import StudentTexts, build_student_texts
from ranking.losses import build_loss
from ranking.losses.distillation import DISTILLATION_DEFAULTS, build_distillation_loss
from ranking.modules.ranker import ListwiseRanker
from ranking.nn.bi_encoder import BiEncoder, bi_encoder_options, checked_options, score_batch
from ranking.nn.encoders import load_encoder_model, load_tokenizer


class BiEncoderModule(ListwiseRanker):
    """A bi-encoder student trained on ground truth and, optionally, a teacher's scores.

    Loss of a training batch, with task weights ``w_k`` and ``alpha`` from ``distillation``:

        alpha * sum_k w_k * distill(s[..., k], t[..., k], mask)
          + (1 - alpha) * sum_k w_k * loss_k(s[..., k], labels[..., k], mask)

    where ``t`` are the batch's ``teacher_scores`` (absent: alpha is taken as 0) and ``distill``
    is :data:`ranking.losses.distillation.DISTILLATION_LOSSES` ``[distillation.loss]``. Validation
    and test log the same metric names as :class:`ranking.modules.cross_encoder.RankingModule`, so
    the two compare line by line and share checkpoint monitors.

    Every argument is a plain value, so ``load_from_checkpoint`` rebuilds the model without Hydra.

    Args:
        encoder: Encoder spec of the student (see :mod:`ranking.nn.encoders`).
        tasks: ``[{name, label, weight, loss?}]`` in score order (a teacher's tasks).
        loss: Default ground-truth loss ``{name, **options}`` (tasks may carry their own).
        bi_encoder: Options, see ``BI_ENCODER_DEFAULTS``.
        distillation: ``{alpha, loss, temperature}``, see ``DISTILLATION_DEFAULTS``.
        optimizer: AdamW options as in :class:`ranking.modules.cross_encoder.RankingModule`.
        metrics: Metric specs for val/test.
        region_names: The training data's regions, in id order.
        teacher: Provenance of the teacher (path, sha256), stored with the checkpoint.
    """

    def __init__(
        self,
        encoder: Mapping[str, Any],
        tasks: Sequence[Mapping[str, Any]],
        loss: Mapping[str, Any],
        bi_encoder: Mapping[str, Any] | None = None,
        distillation: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        metrics: Sequence[str] = ("ndcg@10", "ndcg@5", "mrr@10", "map"),
        region_names: Sequence[str] = ("all",),
        teacher: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # The region enters as text ("eu | query"): no region mask.
        self.init_ranker(tasks, metrics, optimizer, region_names, uses_region_mask=False)
        self.bi_options = bi_encoder_options(bi_encoder)
        self.distill_options = checked_options(
            distillation, DISTILLATION_DEFAULTS, "student.distillation"
        )
        alpha = float(self.distill_options["alpha"])
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"student.distillation.alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.distill_loss = build_distillation_loss(
            self.distill_options["loss"], temperature=self.distill_options["temperature"]
        )
        self.losses = [build_loss(**dict(t["loss"] or loss)) for t in self.tasks]
        self.register_buffer(
            "task_weights", torch.tensor([float(t["weight"]) for t in self.tasks]), persistent=False
        )
        tokenizer = load_tokenizer(encoder)
        query_encoder = load_encoder_model(encoder, vocab_size=len(tokenizer))
        product_encoder = (
            None
            if self.bi_options["shared_encoder"]
            else load_encoder_model(encoder, vocab_size=len(tokenizer))
        )
        self.model = BiEncoder(
            query_encoder,
            product_encoder,
            hidden_size=query_encoder.config.hidden_size,
            num_tasks=len(self.tasks),
            dim=int(self.bi_options["dim"]),
            pooling=self.bi_options["pooling"],
            similarity=self.bi_options["similarity"],
            temperature=float(self.bi_options["temperature"]),
        )
        self.pad_token_id = int(tokenizer.pad_token_id)

    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The student's tokenizer (from local files, as at construction)."""
        return load_tokenizer(self.hparams.encoder)

    def build_texts(self, datamodule: Any) -> StudentTexts:
        """The student's tokens of a set-up datamodule's pairs, with this model's options."""
        opts = self.bi_options
        return build_student_texts(
            datamodule,
            self.tokenizer(),
            int(opts["query_max_length"]),
            int(opts["product_max_length"]),
            bool(opts["query_region_prefix"]),
        )

    # ------------------------------------------------------------------ steps
    def score(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
        """``([B, L, K] scores of a bi-encoder batch, 0 at padding; no auxiliary loss)``."""
        return score_batch(self.model, batch), None

    def compute_loss(
        self,
        scores: torch.Tensor,
        batch: Mapping[str, torch.Tensor],
        aux_loss: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{loss, gt_loss, distill_loss?, <task>/gt_loss...}`` of a batch's scores."""
        gt = self.task_losses(scores, batch)
        out = {f"{name}/gt_loss": gt[k] for k, name in enumerate(self.task_names)}
        out["gt_loss"] = (self.task_weights * gt).sum()
        teacher = batch.get("teacher_scores")
        if teacher is None or self.alpha == 0.0:
            out["loss"] = out["gt_loss"]
            return out
        distill = torch.stack(
            [
                self.distill_loss(scores[..., k].float(), teacher[..., k].float(), batch["mask"])
                for k in range(len(self.tasks))
            ]
        )
        out["distill_loss"] = (self.task_weights * distill).sum()
        out["loss"] = self.alpha * out["distill_loss"] + (1.0 - self.alpha) * out["gt_loss"]
        return out

    def train_metric_names(self) -> list[str]:
        return student_train_metric_names(self.alpha)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.compute_loss(self(batch), batch)
        size = batch["mask"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=size)
        self.log_dict(
            {f"train/{k}": v for k, v in losses.items() if k != "loss" and "/" not in k},
            batch_size=size,
        )
        return losses["loss"]


def student_train_metric_names(alpha: float) -> list[str]:
    """The names :meth:`BiEncoderModule.training_step` logs for a distillation weight ``alpha``."""
    return ["train/loss", "train/gt_loss", *(["train/distill_loss"] if alpha > 0 else [])]


def is_bi_encoder_hparams(hparams: Mapping[str, Any]) -> bool:
    """Whether checkpoint hyper-parameters describe a :class:`BiEncoderModule`."""
    return "bi_encoder" in hparams and "distillation" in hparams
