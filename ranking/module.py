"""The LightningModule that trains and evaluates a ranking model on listwise batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ranking.cross_encoder import CrossEncoder, score_lists
from ranking.encoders import load_encoder_model, load_tokenizer
from ranking.errors import ConfigError
from ranking.loss_weighting import build_loss_weighting
from ranking.losses import build_loss
from ranking.ranker import ListwiseRanker
from ranking.towers import build_tower


class RankingModule(ListwiseRanker):
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
        self.init_ranker(
            tasks,
            metrics,
            optimizer,
            region_names,
            uses_region_mask=bool(region_mask) and region_mask.get("name", "none") != "none",
        )
        loss_specs = [dict(t["loss"] or loss) for t in self.tasks]
        self.losses = [build_loss(**spec) for spec in loss_specs]
        self.loss_weighting = build_loss_weighting(
            loss_weighting, [float(t["weight"]) for t in self.tasks], loss_specs
        )
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

    # ------------------------------------------------------------------ steps
    def score(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``([B, L, K] scores, 0 at padded positions; the tower's auxiliary loss)``."""
        return score_lists(self.scorer, batch, self.region_lookup[batch["region"]])

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
