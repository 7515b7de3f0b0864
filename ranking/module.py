"""The LightningModule that trains and evaluates a ranking model on listwise batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from transformers import get_linear_schedule_with_warmup

from ranking.cross_encoder import CrossEncoder, score_lists
from ranking.encoders import load_encoder_model, load_tokenizer
from ranking.errors import ConfigError, DataValidationError
from ranking.loss_weighting import build_loss_weighting
from ranking.losses import build_loss
from ranking.metric_set import RankingMetricSet, parse_metric
from ranking.towers import build_tower

EVAL_STAGES = ("val", "test")


def _task_specs(tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
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


class RankingModule(pl.LightningModule):
    """A cross-encoder trained with one listwise loss per task, evaluated per task and region.

    Every constructor argument is a plain value (no modules), so ``load_from_checkpoint`` rebuilds
    the model without Hydra. Loss of a batch: ``weighting(loss_k(scores[..., k], labels[..., k],
    mask)) + aux`` where the weighting is static (``sum_k w_k * loss_k``) or learned (uncertainty)
    and ``aux`` is the tower's own term (e.g. SEQ's descending regulariser).

    Regions: the model knows the regions it was trained on (``region_names``). Data from a region
    it has not seen is refused when the tower has a region mask (the mask has no gate for it);
    without a mask the region does not change the scores, and such data is scored as region 0.

    Args:
        encoder: Encoder spec (see :mod:`ranking.encoders`): ``source``, ``path``, ``architecture``,
            ``pooling``.
        tasks: ``[{name, label, weight, loss?}]`` in score order; ``loss`` overrides ``loss``.
        loss: Default loss spec ``{name, **options}`` for :func:`ranking.losses.build_loss`.
        optimizer: ``{lr, weight_decay, warmup_ratio, betas, eps}`` for AdamW with linear warm-up
            and linear decay.
        metrics: Metric specs for val/test, e.g. ``["ndcg@10", "mrr@10", "map"]``.
        tower: ``{name, **options}`` for :func:`ranking.towers.build_tower`; the default
            (shared-bottom without hidden layers) is dropout + one linear head per task.
        region_mask: ``{name: feature, **options}`` for the MD region mask; ``None`` or
            ``{name: none}`` for none.
        region_names: The training data's regions, in id order.
        loss_weighting: ``{name: static}`` (default: ``sum_k w_k * loss_k``) or ``{name:
            uncertainty, init_log_variance}`` (Kendall et al., 2018; see
            :mod:`ranking.loss_weighting`).
    """

    def __init__(
        self,
        encoder: Mapping[str, Any],
        tasks: Sequence[Mapping[str, Any]],
        loss: Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        metrics: Sequence[str] = ("ndcg@10", "ndcg@5", "mrr@10", "map"),
        tower: Mapping[str, Any] | None = None,
        region_mask: Mapping[str, Any] | None = None,
        region_names: Sequence[str] = ("all",),
        loss_weighting: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tasks = _task_specs(tasks)
        self.task_names = [t["name"] for t in self.tasks]
        for spec in metrics:
            parse_metric(spec)  # fail at construction on a typo, not after an epoch
        loss_specs = [dict(t["loss"] or loss) for t in self.tasks]
        self.losses = [build_loss(**spec) for spec in loss_specs]
        self.loss_weighting = build_loss_weighting(
            loss_weighting, [float(t["weight"]) for t in self.tasks], loss_specs
        )
        self.optimizer_config = {
            "lr": 5e-4,
            "weight_decay": 0.01,
            "warmup_ratio": 0.1,
            "betas": (0.9, 0.999),
            "eps": 1e-8,
            **dict(optimizer or {}),
        }
        tokenizer = load_tokenizer(encoder)
        model = load_encoder_model(encoder, vocab_size=len(tokenizer))
        tower_spec = dict(tower or {"name": "shared_bottom", "hidden_dims": []})
        try:
            tower_module = build_tower(
                tower_spec.pop("name"),
                hidden_size=model.config.hidden_size,
                num_tasks=len(self.tasks),
                num_regions=len(region_names),
                region_mask=region_mask,
                **tower_spec,
            )
        except KeyError as err:
            raise ConfigError("tower.name is missing") from err
        self.scorer = CrossEncoder(model, tower_module, pooling=encoder.get("pooling", "cls"))
        self.model_regions = list(region_names)
        self.uses_region_mask = bool(region_mask) and region_mask.get("name", "none") != "none"
        # Data region id -> model region id; set for each dataset by ``use_data_regions``.
        self.register_buffer("region_lookup", torch.arange(len(region_names)), persistent=False)
        self.metric_sets = torch.nn.ModuleDict()

    @property
    def label_columns(self) -> list[str]:
        return [t["label"] for t in self.tasks]

    # ------------------------------------------------------------------ set-up
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

    # ------------------------------------------------------------------ steps
    def score(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``([B, L, K] scores, 0 at padded positions; the tower's auxiliary loss)``."""
        return score_lists(self.scorer, batch, self.region_lookup[batch["region"]])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores ``[B, L, K]`` of a listwise batch (0 at padded positions)."""
        return self.score(batch)[0]

    def compute_loss(
        self,
        scores: torch.Tensor,
        batch: dict[str, torch.Tensor],
        aux_loss: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        labels, mask = batch["labels"], batch["mask"]
        per_task = torch.stack(
            [
                loss(scores[..., k].float(), labels[..., k], mask)
                for k, loss in enumerate(self.losses)
            ]
        )
        out = {f"{name}/loss": per_task[k] for k, name in enumerate(self.task_names)}
        out["loss"] = self.loss_weighting(per_task)
        for key, values in self.loss_weighting.log_values().items():
            out.update({f"{name}/{key}": values[k] for k, name in enumerate(self.task_names)})
        if aux_loss is not None:
            out["aux_loss"] = aux_loss
            out["loss"] = out["loss"] + aux_loss
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        scores, aux = self.score(batch)
        losses = self.compute_loss(scores, batch, aux)
        batch_size = batch["mask"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=batch_size)
        if len(self.task_names) > 1:
            self.log_dict(
                {f"train/{k}": v for k, v in losses.items() if k != "loss"}, batch_size=batch_size
            )
        return losses["loss"]

    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        scores, aux = self.score(batch)
        losses = self.compute_loss(scores, batch, aux)
        self.log(f"{stage}/loss", losses["loss"], batch_size=batch["mask"].shape[0], sync_dist=True)
        self.metric_sets[stage].update(scores, batch["labels"], batch["mask"], batch["region"])

    def _eval_epoch_end(self, stage: str) -> None:
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

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optimizer_config
        decay, no_decay = [], []
        for param in self.parameters():
            if not param.requires_grad:
                continue
            # Biases and LayerNorm weights are not decayed (as in BERT's fine-tuning recipe).
            (no_decay if param.ndim < 2 else decay).append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg["weight_decay"]},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg["lr"],
            betas=tuple(cfg["betas"]),
            eps=cfg["eps"],
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_linear_schedule_with_warmup(
            optimizer, num_warmup_steps=int(cfg["warmup_ratio"] * total), num_training_steps=total
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
