"""The LightningModule that trains and evaluates a ranking model on listwise batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from data_modules.errors import ConfigError
from ranking.losses import build_loss
from ranking.losses.weighting import build_loss_weighting
from ranking.modules.ranker import ListwiseRanker
from ranking.nn.cross_encoder import CrossEncoder, score_lists
from ranking.nn.encoders import load_encoder_model, load_tokenizer
from ranking.nn.inference import FastCrossEncoder, inference_options
from ranking.nn.prior import ScorePrior, check_prior_spec
from ranking.nn.towers import build_tower


class RankingModule(ListwiseRanker):
    """A cross-encoder trained with one listwise loss per task, evaluated per task and region.

    Every constructor argument is a plain value (no modules), so ``load_from_checkpoint`` rebuilds
    the model without Hydra. Loss of a batch: ``weighting(loss_k(scores[..., k], labels[..., k],
    mask)) + aux`` where the weighting is static (``sum_k w_k * loss_k``) or learned (uncertainty)
    and ``aux`` is the tower's own term (e.g. SEQ's descending regulariser).

    Regions: the model knows the regions it was trained on (``region_names``). Data from a region
    it has not seen is refused when the tower has a region mask (the mask has no gate for it);
    without a mask the region does not change the scores, and such data is scored as region 0.

    Region features: a ``region_mask`` with ``region_feature_dim=F > 0`` (set by
    :func:`experiments.workflows.config.build_module` from ``data.region_feature_columns``) reads
    the batches' ``region_features [B, L, F]`` and standardises them with its
    ``feature_mean``/``feature_std`` (train-split statistics kept in the hparams, so in every
    checkpoint; fitted at ``setup("fit")`` from the DataModule when the spec has none). Data whose
    feature columns do not match the model's (columns given to a model without them, none or other
    ones given to a model trained with them) is refused with a :class:`ConfigError`, never silently
    ignored.

    Args:
        encoder: Encoder spec (see :mod:`ranking.nn.encoders`): ``source``, ``path``,
        ``architecture``,
            ``pooling``.
        tasks: ``[{name, label, weight, loss?}]`` in score order; ``loss`` overrides ``loss``.
        loss: Default loss spec ``{name, **options}`` for :func:`ranking.losses.build_loss`.
        optimizer: ``{lr, weight_decay, warmup_ratio, betas, eps}`` for AdamW with linear warm-up
            and linear decay.
        metrics: Metric specs for val/test, e.g. ``["ndcg@10", "mrr@10", "map"]``.
        tower: ``{name, **options}`` for :func:`ranking.nn.towers.build_tower`; the default
            (shared-bottom without hidden layers) is dropout + one linear head per task.
        region_mask: ``{name: feature, **options}`` for the MD region mask (options include
            ``region_feature_dim``, ``feature_columns``, ``feature_mean``, ``feature_std``);
            ``None`` or ``{name: none}`` for none.
        region_names: The training data's regions, in id order.
        loss_weighting: ``{name: static}`` (default: ``sum_k w_k * loss_k``) or ``{name:
            uncertainty, init_log_variance}`` (Kendall et al., 2018; see
            :mod:`ranking.losses.weighting`).
        bucket_tokens: Encode the pairs of a batch sorted by length, in chunks of at most this
            many padded tokens (see :class:`ranking.nn.cross_encoder.CrossEncoder`); ``None``: one
            call padded to the batch's longest pair.
        prior: ``{features: [minilm_cosine], init_weight: 20}``: add a learned multiple of
            first-stage scores to the model's (:mod:`ranking.nn.prior`); ``None``: no prior. The
            batches must then carry ``pair_features``
            (:func:`ranking.scorers.prior_features.attach_prior_features`).
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
        bucket_tokens: int | None = None,
        prior: Mapping[str, Any] | None = None,
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
        if bucket_tokens is not None and (isinstance(bucket_tokens, bool) or bucket_tokens < 1):
            raise ConfigError(f"model.bucket_tokens must be >= 1 or null, got {bucket_tokens!r}")
        prior_spec = check_prior_spec(prior)
        self.prior_feature_names = list(prior_spec["features"]) if prior_spec else []
        self.model = CrossEncoder(
            model,
            tower_module,
            pooling=encoder.get("pooling", "cls"),
            bucket_tokens=bucket_tokens,
            prior=ScorePrior(
                len(self.prior_feature_names), len(self.tasks), prior_spec["init_weight"]
            )
            if prior_spec
            else None,
        )
        self.inference: dict[str, Any] | None = None  # set by use_inference
        self._fast: FastCrossEncoder | None = None

    # ------------------------------------------------------------------ region features
    @property
    def region_feature_dim(self) -> int:
        """F, the number of region feature columns the region mask reads (0: none)."""
        mask = getattr(self.model.tower, "region_mask", None)
        return int(getattr(mask, "region_feature_dim", 0)) if mask is not None else 0

    @property
    def region_feature_columns(self) -> list[str]:
        """Names of the region feature columns the model was trained with (``[]``: unnamed/none)."""
        mask = getattr(self.model.tower, "region_mask", None)
        return list(getattr(mask, "feature_columns", None) or [])

    def check_region_features(self, columns: Sequence[str] | int) -> None:
        """Refuse data whose region feature columns differ from the model's.

        Args:
            columns: The data's ``data.region_feature_columns`` (names), or only their number.

        Raises:
            ConfigError: naming ``data.region_feature_columns`` and ``region_mask``.
        """
        given = columns if isinstance(columns, int) else len(columns)
        names = None if isinstance(columns, int) else list(columns)
        dim, trained = self.region_feature_dim, self.region_feature_columns
        if given == dim and (names is None or not trained or names == trained):
            return
        if dim == 0:
            mask = (
                "a region mask without region features (region_mask.region_feature_dim=0)"
                if self.uses_region_mask
                else "no region mask (region_mask=none)"
            )
            raise ConfigError(
                f"data.region_feature_columns gives {given} column(s) {names or ''} but the model "
                f"has {mask}: train with region_mask=feature, or set data.region_feature_columns=[]"
            )
        want = _cli_list(trained) if trained else f"{dim} column(s)"
        if given == 0:
            raise ConfigError(
                f"the model's region mask was trained with region features {want} "
                f"(region_mask.region_feature_dim={dim}) and the data gives none: set "
                f"data.region_feature_columns={want}"
            )
        raise ConfigError(
            f"data.region_feature_columns={_cli_list(names) if names else given} does not match "
            f"the region features the model's region mask was trained with: {want} "
            f"(region_mask.region_feature_dim={dim})"
        )

    def fit_region_feature_stats(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Set the mask's standardisation statistics and record them in the hparams."""
        self.model.tower.region_mask.set_feature_stats(mean, std)
        spec = dict(self.hparams["region_mask"])
        spec["feature_mean"], spec["feature_std"] = (
            [float(v) for v in mean],
            [float(v) for v in std],
        )
        self.hparams["region_mask"] = spec

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        columns = getattr(datamodule, "region_feature_columns", None)
        if columns is None:
            return
        self.check_region_features(columns)
        spec = self.hparams.get("region_mask") or {}
        if stage == "fit" and self.region_feature_dim and spec.get("feature_mean") is None:
            stats = datamodule.region_feature_stats()
            self.fit_region_feature_stats(stats["mean"], stats["std"])

    # ------------------------------------------------------------------ fast inference
    def use_inference(self, mode: str = "auto", chunk_size: int = 32) -> None:
        """Score test and predict batches with a :class:`~ranking.nn.inference.FastCrossEncoder`.

        It is built when testing or predicting starts (after Lightning has loaded the weights
        to test) or by :meth:`prepare_inference`; training and validation keep the float32
        PyTorch scorer, so the monitored metric does not depend on the inference backend.
        """
        self.inference = inference_options({"mode": mode, "chunk_size": chunk_size})
        self._fast = None

    def prepare_inference(self) -> FastCrossEncoder | None:
        """Build the fast scorer from the current weights (when :meth:`use_inference` was set)."""
        spec = self.inference
        self._fast = None if spec is None else FastCrossEncoder(self.model, **spec)
        return self._fast

    @property
    def fast_scorer(self) -> FastCrossEncoder | None:
        """The scorer test and predict steps use now (None: the float32 PyTorch one)."""
        return self._fast

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints written before issue 16 named the network ``scorer``; it is ``model`` now,
        # as in every other shoprank LightningModule. Their weights load under the new name.
        state = checkpoint.get("state_dict") or {}
        for key in [k for k in state if k.startswith("scorer.")]:
            state["model." + key.removeprefix("scorer.")] = state.pop(key)
        super().on_load_checkpoint(checkpoint)

    def on_test_start(self) -> None:
        self.prepare_inference()

    def on_predict_start(self) -> None:
        self.prepare_inference()

    def on_validation_start(self) -> None:
        self._fast = None  # weights may change again; tests and predictions rebuild it

    # ------------------------------------------------------------------ steps
    def score(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``([B, L, K] scores, 0 at padded positions; the tower's auxiliary loss)``.

        Raises:
            ConfigError: the batch's ``region_features`` (or their absence) do not fit the model.
        """
        features = batch.get("region_features")
        if (0 if features is None else features.shape[-1]) != self.region_feature_dim:
            self.check_region_features(0 if features is None else int(features.shape[-1]))
        fast = self._fast is not None and not self.training and not torch.is_grad_enabled()
        scorer = self._fast if fast else self.model
        return score_lists(scorer, batch, self.region_lookup[batch["region"]])

    def compute_loss(
        self,
        scores: torch.Tensor,
        batch: dict[str, torch.Tensor],
        aux_loss: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        per_task = self.task_losses(scores, batch)
        out = {f"{name}/loss": per_task[k] for k, name in enumerate(self.task_names)}
        out["loss"] = self.loss_weighting(per_task)
        for key, values in self.loss_weighting.log_values().items():
            out.update({f"{name}/{key}": values[k] for k, name in enumerate(self.task_names)})
        if aux_loss is not None:
            out["aux_loss"] = aux_loss
            out["loss"] = out["loss"] + aux_loss
        return out

    def train_metric_names(self) -> list[str]:
        names = ["train/loss"]
        if len(self.task_names) > 1:  # as training_step logs them
            keys = ["loss", *self.loss_weighting.log_values()]
            names += [f"train/{task}/{key}" for task in self.task_names for key in keys]
            names.append("train/aux_loss")
        return names

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


def _cli_list(names: Sequence[str]) -> str:
    """``[a,b]``: a list as written on the command line."""
    return "[" + ",".join(names) + "]"
