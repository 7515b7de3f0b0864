"""What every listwise ranking LightningModule shares: tasks, regions, evaluation, optimiser.

:class:`ranking.modules.cross_encoder.RankingModule` (cross-encoder) and
:class:`ranking.modules.bi_encoder.BiEncoderModule` (distilled student) differ in how they score a
batch and what their training loss is; everything else (per-task x per-region metric sets, the
data-to- model region mapping, the AdamW recipe, the val/test/predict steps) lives here once, so
that both log the same metric names and compare line by line.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as L
import torch

from data_modules.errors import ConfigError, DataValidationError
from ranking.metrics.metric_set import RankingMetricSet, metric_names, parse_metric
from ranking.modules.optim import adamw_with_warmup

EVAL_STAGES = ("val", "test")
SPLIT_CHECKPOINT_KEY = "shoprank_split"  # the training data split, in every checkpoint
OPTIMIZER_DEFAULTS = {
    "lr": 5e-4,
    "weight_decay": 0.01,
    "warmup_ratio": 0.1,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "fused": None,  # None: the fused AdamW kernel wherever the parameters allow it
}


def task_specs(tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``tasks`` with defaults (weight 1, no own loss), checked for names and repeats."""
    specs = []
    for i, task in enumerate(tasks):
        missing = {"name", "label"} - set(task)
        if missing:
            raise ConfigError(f"tasks[{i}] is missing {sorted(missing)}")
        specs.append({"weight": 1.0, "loss": None, **task})
    names = [t["name"] for t in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"tasks.order repeats a task: {names}")
    return specs


class ListwiseRanker(L.LightningModule):
    """Base class. Subclasses call :meth:`init_ranker` and implement :meth:`score` and
    :meth:`compute_loss`; ``training_step`` is theirs too.

    Regions: the model knows the regions it was trained on (``model_regions``). Data from a region
    it has not seen is refused when the model has a region mask; otherwise it is scored as
    region 0.
    """

    def init_ranker(
        self,
        tasks: Sequence[Mapping[str, Any]],
        metrics: Sequence[str],
        optimizer: Mapping[str, Any] | None,
        region_names: Sequence[str],
        uses_region_mask: bool,
    ) -> None:
        self.tasks = task_specs(tasks)
        self.task_names = [t["name"] for t in self.tasks]
        for spec in metrics:
            parse_metric(spec)  # fail at construction on a typo, not after an epoch
        self.optimizer_config = {**OPTIMIZER_DEFAULTS, **dict(optimizer or {})}
        self.model_regions = list(region_names)
        self.uses_region_mask = uses_region_mask
        # Data region id -> model region id; set for each dataset by ``use_data_regions``.
        self.register_buffer("region_lookup", torch.arange(len(region_names)), persistent=False)
        self.metric_sets = torch.nn.ModuleDict()
        # The data split the model trains on (data_modules.splits.split_record): saved in every
        # checkpoint so that evaluation and distillation keep its test queries apart.
        self.data_split: dict[str, Any] | None = None

    @property
    def label_columns(self) -> list[str]:
        return [t["label"] for t in self.tasks]

    # ------------------------------------------------------------------ regions
    def setup(self, stage: str) -> None:
        region_names = (
            getattr(self.trainer.datamodule, "region_names", None) if self._trainer else None
        )
        if region_names:
            self.use_data_regions(region_names)
        elif not self.metric_sets:  # no datamodule and nothing configured: the model's regions
            self.use_data_regions(self.model_regions)

    def use_data_regions(self, region_names: Sequence[str]) -> None:
        """Prepare for data whose region ids index ``region_names``: id mapping and metric sets.

        Raises:
            DataValidationError: The data has regions the model was not trained on and the model
                has a region mask.
        """
        index = {name: i for i, name in enumerate(self.model_regions)}
        unseen = [name for name in region_names if name not in index]
        if unseen and self.uses_region_mask:
            raise DataValidationError(
                f"region(s) {unseen} were not in the training data (model regions: "
                f"{self.model_regions}); a region-masked model cannot score them"
            )
        self.region_lookup = torch.tensor(
            [index.get(name, 0) for name in region_names], device=self.device
        )
        self.region_names = list(region_names)
        for stage in EVAL_STAGES:
            self.metric_sets[stage] = RankingMetricSet(
                self.task_names, self.region_names, self.hparams.metrics
            ).to(self.device)

    # ------------------------------------------------------------------ scoring
    def score(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``([B, L, K] scores, 0 at padding; an auxiliary loss or None)``."""
        raise NotImplementedError

    def compute_loss(
        self,
        scores: torch.Tensor,
        batch: dict[str, torch.Tensor],
        aux_loss: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{"loss": scalar, ...named parts}`` of a batch."""
        raise NotImplementedError

    def task_losses(self, scores: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``[K]``: each task's own loss (``self.losses[k]``) on its column of ``scores``."""
        labels, mask = batch["labels"], batch["mask"]
        return torch.stack(
            [
                loss(scores[..., k].float(), labels[..., k], mask)
                for k, loss in enumerate(self.losses)
            ]
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores ``[B, L, K]`` of a listwise batch (0 at padded positions)."""
        return self.score(batch)[0]

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        scores, aux = self.score(batch)
        losses = self.compute_loss(scores, batch, aux)
        self.log(f"{stage}/loss", losses["loss"], batch_size=batch["mask"].shape[0], sync_dist=True)
        self.metric_sets[stage].update(scores, batch["labels"], batch["mask"], batch["region"])

    def _eval_epoch_end(self, stage: str) -> None:
        with warnings.catch_warnings():
            # A task without any list with a positive label in this split has no value (it is
            # left out of the mean; ranking.metrics.monitor warns once before training), not a bug.
            warnings.filterwarnings("ignore", message=r"The ``compute`` method of metric")
            values = self.metric_sets[stage].compute(stage)
        self.log_dict(values, prog_bar=False)
        self.metric_sets[stage].reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        return {"scores": self(batch), "mask": batch["mask"], "list_index": batch["list_index"]}

    # ------------------------------------------------------------------ names and checkpoints
    def train_metric_names(self) -> list[str]:
        """The names ``training_step`` logs (checked against ``monitor`` before training)."""
        return ["train/loss"]

    def fit_metric_names(self, region_names: Sequence[str]) -> list[str]:
        """Every name a fit on data with ``region_names`` logs: training and validation."""
        return [
            *self.train_metric_names(),
            "val/loss",
            *metric_names("val", self.task_names, region_names, self.hparams.metrics),
        ]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.data_split is not None:
            checkpoint[SPLIT_CHECKPOINT_KEY] = self.data_split

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.data_split = checkpoint.get(SPLIT_CHECKPOINT_KEY)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW (biases and LayerNorm weights not decayed) with linear warm-up and decay."""
        cfg = self.optimizer_config
        return adamw_with_warmup(
            self.parameters(),
            total_steps=self.trainer.estimated_stepping_batches,
            lr=cfg["lr"],
            weight_decay=cfg["weight_decay"],
            warmup_ratio=cfg["warmup_ratio"],
            betas=cfg["betas"],
            eps=cfg["eps"],
            fused=cfg["fused"],
        )
