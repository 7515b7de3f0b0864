"""The one module of the library that touches Hydra: building objects from the composed config."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from data_modules.errors import ConfigError, ShoprankError
from ranking.nn.precision import resolve_precision

log = logging.getLogger(__name__)


def plain(node: Any) -> Any:
    """Resolved plain Python containers of a config node (``None`` stays ``None``)."""
    if node is None:
        return None
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def instantiate(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that reports a bad config as one :class:`ConfigError` line.

    Errors we raise ourselves (bad data, bad values) pass through unchanged.
    """
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ShoprankError):
            raise cause from None
        detail = str(cause) if cause is not None else str(err).splitlines()[0]
        raise ConfigError(f"{key}: {detail}") from err


def task_list(cfg: DictConfig) -> list[dict[str, Any]]:
    """The active tasks ``[{name, label, weight, loss?}]`` in ``tasks.order``.

    Raises:
        ConfigError: ``tasks.order`` is not a list, names an unknown task or repeats one.
    """
    order = plain(cfg.tasks.order)
    if not isinstance(order, list):
        raise ConfigError(f"tasks.order must be a list of tasks, e.g. [{order}]; got {order!r}")
    catalog = plain(cfg.tasks.catalog)
    unknown = [name for name in order if name not in catalog]
    if unknown:
        raise ConfigError(f"tasks.order names unknown task(s) {unknown}; known: {sorted(catalog)}")
    repeated = sorted({name for name in order if order.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"tasks.order repeats task(s) {repeated} ({order}); each task is scored once"
        )
    return [{"name": name, **catalog[name]} for name in order]


_ABSENT = object()
# Values a command-line typo (trainer.max_epochs=abc, seed=abc, data.batch_size=1.5) would
# otherwise carry deep into Lightning, numpy or polars: (key, kind, None allowed).
TYPED_KEYS: tuple[tuple[str, str, bool], ...] = (
    ("seed", "int", False),
    ("data.seed", "int", False),
    ("data.batch_size", "int", False),
    ("data.eval_batch_size", "int", False),
    ("data.max_length", "int", False),
    ("data.max_list_size", "int", True),
    ("data.eval_max_list_size", "int", True),
    ("data.num_workers", "int", False),
    ("trainer.max_epochs", "int", True),
    ("trainer.min_epochs", "int", True),
    ("trainer.max_steps", "int", False),
    ("trainer.log_every_n_steps", "int", True),
    ("trainer.num_sanity_val_steps", "int", True),
    ("trainer.accumulate_grad_batches", "int", False),
    ("trainer.limit_train_batches", "number", True),
    ("trainer.limit_val_batches", "number", True),
    ("trainer.limit_test_batches", "number", True),
    ("trainer.val_check_interval", "number", True),
    ("trainer.gradient_clip_val", "number", True),
    ("model.optimizer.lr", "number", False),
    ("test_after_fit", "bool", False),
)
_KINDS = {"int": "an integer", "number": "a number", "bool": "true or false"}


def _has_kind(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if kind == "int" else isinstance(value, int | float)


def check_config_values(cfg: DictConfig) -> None:
    """Check the types of the keys in :data:`TYPED_KEYS` that ``cfg`` has, before any work.

    Raises:
        ConfigError: ``<key> must be an integer, got 'abc'`` for the first wrong value.
    """
    for key, kind, nullable in TYPED_KEYS:
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
        except OmegaConfBaseException:  # an interpolation filled in later (eval: max_length)
            continue
        if value is _ABSENT or (value is None and nullable):
            continue
        if value is None or not _has_kind(value, kind):
            raise ConfigError(f"{key} must be {_KINDS[kind]}, got {value!r}")


def build_datamodule(cfg: DictConfig, tokenizer: Any, label_columns: list[str]) -> Any:
    return instantiate(cfg.data, "data", tokenizer=tokenizer, label_columns=label_columns)


def build_source(cfg: DictConfig) -> Any:
    """The table source of ``cfg.data`` (for uses that need the rows but no tokenised lists)."""
    return instantiate(cfg.data, "data").source


def build_module(cfg: DictConfig, region_names: list[str], datamodule: Any = None) -> Any:
    """The LightningModule of ``cfg.model`` with its encoder, tasks, loss, tower and region mask.

    Args:
        cfg: The composed config.
        region_names: The training data's regions, in id order.
        datamodule: The set-up training DataModule; when given, its train-split region feature
            statistics go into the region mask spec (see :func:`region_mask_spec`).
    """
    return instantiate(
        cfg.model,
        "model",
        encoder=plain(cfg.encoder),
        tasks=task_list(cfg),
        loss=plain(cfg.loss),
        tower=plain(cfg.tower),
        region_mask=region_mask_spec(cfg, datamodule),
        region_names=list(region_names),
    )


def region_mask_spec(cfg: DictConfig, datamodule: Any = None) -> dict[str, Any] | None:
    """``cfg.region_mask`` completed with the region feature columns of ``cfg.data``.

    With ``data.region_feature_columns`` = F > 0 names, the spec gains ``region_feature_dim=F``,
    ``feature_columns`` and, from ``datamodule.region_feature_stats()`` (train split), the
    ``feature_mean``/``feature_std`` the mask standardises with; they land in the module's hparams
    and so in every checkpoint. Without a ``datamodule`` (or with the statistics set in the
    config) they are left as they are, and ``RankingModule.setup("fit")`` fits missing ones on
    the training DataModule. With no feature columns the spec is returned unchanged.

    Raises:
        ConfigError: feature columns with ``region_mask=none``, or a ``region_mask.
            region_feature_dim`` that differs from the number of columns.
    """
    spec = plain(cfg.region_mask)
    if hasattr(datamodule, "region_feature_columns"):
        columns = list(datamodule.region_feature_columns)
    else:
        given = plain(cfg.data.get("region_feature_columns")) if "data" in cfg else None
        if isinstance(given, str):
            raise ConfigError(
                f"data.region_feature_columns must be a list, e.g. [{given}]; got {given!r}"
            )
        columns = list(given or [])
    if not columns:
        return spec
    if not spec or spec.get("name", "none") in (None, "none"):
        raise ConfigError(
            f"data.region_feature_columns={columns} feed the MD region mask's gate, but "
            "region_mask is 'none': set region_mask=feature, or data.region_feature_columns=[]"
        )
    spec = dict(spec)
    dim = spec.get("region_feature_dim")
    if dim not in (None, 0, len(columns)):
        raise ConfigError(
            f"region_mask.region_feature_dim={dim} but data.region_feature_columns names "
            f"{len(columns)} column(s) {columns}; leave region_mask.region_feature_dim unset"
        )
    spec["region_feature_dim"] = len(columns)
    spec["feature_columns"] = columns
    if datamodule is not None and spec.get("feature_mean") is None:
        stats = datamodule.region_feature_stats()
        spec["feature_mean"], spec["feature_std"] = stats["mean"], stats["std"]
    return spec


def _instantiate_group(group: DictConfig | None, key: str) -> list[Any]:
    if not group:
        return []
    return [
        instantiate(node, f"{key}.{name}")
        for name, node in group.items()
        if isinstance(node, Mapping | DictConfig) and "_target_" in node
    ]


# Overrides that say where a job writes, not what it runs: left out of run names.
_NOT_IN_NAMES = (
    "paths.",
    "hydra.",
    "logger",
    "callbacks",
    "trainer.enable_progress_bar",
    "ckpt_path",  # a resumed run keeps its name
)


def run_identity(cfg: DictConfig) -> dict[str, str]:
    """``{"name", "group"}`` of the running job, for experiment trackers.

    ``name``: the job's own command-line overrides (``tower=seq,region_mask=feature``), else
    ``task_name``. ``group``: ``<task_name>/<sweep dir name>`` in a multirun (all jobs of one
    sweep together), else the chosen ``experiment`` or ``task_name``.
    """
    name, group = str(cfg.task_name), str(cfg.task_name)
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        overrides = [
            o for o in hydra_cfg.overrides.task if not o.lstrip("+~").startswith(_NOT_IN_NAMES)
        ]
        name = ",".join(overrides) or name
        experiment = hydra_cfg.runtime.choices.get("experiment")
        if hydra_cfg.mode == RunMode.MULTIRUN:
            group = f"{cfg.task_name}/{Path(str(hydra_cfg.sweep.dir)).name}"
        elif experiment and experiment != "null":
            group = str(experiment)
    return {"name": name, "group": group}


WANDB_RUN_FILE = "wandb_run.json"  # in the run dir: the W&B run id a resumed run continues


def resumed_wandb_id(cfg: DictConfig) -> str | None:
    """The W&B run id of the run this job resumes (``ckpt_path`` set, id kept in the run dir)."""
    if cfg.get("ckpt_path") in (None, "", "null") or "paths" not in cfg:
        return None
    path = Path(str(cfg.paths.output_dir)) / WANDB_RUN_FILE
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text())["id"]) or None
    except (ValueError, KeyError, TypeError):
        return None


def wandb_offline(value: Any) -> bool:
    """``logger.wandb.offline``: as set, or (null) offline unless ``$WANDB_MODE`` is set.

    Lightning's ``WandbLogger(offline=True)`` forces offline mode whatever ``WANDB_MODE`` says,
    so ``offline: null`` leaves the choice to ``WANDB_MODE`` (online, offline, disabled) and
    stays offline when it is unset: nothing reaches the network unless asked for.
    """
    if value is None:
        return "WANDB_MODE" not in os.environ
    return bool(value)


def _fill_wandb(logger_cfg: DictConfig | None, cfg: DictConfig, job_type: str) -> None:
    """Complete W&B loggers: name, group, job type (unless set), offline, and the run id of a
    resumed run (so that it continues its W&B run)."""
    if not logger_cfg:
        return
    identity = run_identity(cfg)
    for node in logger_cfg.values():
        if isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith("WandbLogger"):
            with open_dict(node):
                for key, value in (*identity.items(), ("job_type", job_type)):
                    if node.get(key) is None:
                        node[key] = value
                node["offline"] = wandb_offline(node.get("offline"))
                if node.get("id") is None and (run_id := resumed_wandb_id(cfg)):
                    node["id"] = run_id


def build_loggers(cfg: DictConfig, job_type: str = "train") -> list[Any]:
    """The loggers of ``cfg.logger`` (W&B completed by :func:`_fill_wandb`)."""
    _fill_wandb(cfg.get("logger"), cfg, job_type)
    return _instantiate_group(cfg.get("logger"), "logger")


def build_trainer(cfg: DictConfig, job_type: str = "train", **overrides: Any) -> Any:
    """The Lightning Trainer with its callbacks and loggers (W&B: named after the job)."""
    callbacks = _instantiate_group(cfg.get("callbacks"), "callbacks")
    if not cfg.trainer.get("enable_progress_bar", True):
        # trainer.enable_progress_bar=false wins over the callbacks group's bar (Lightning
        # would refuse the pair): sweeps of parallel jobs turn bars off this way.
        from lightning.pytorch.callbacks import ProgressBar

        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = build_loggers(cfg, job_type)
    precision, why = resolve_precision(
        cfg.trainer.get("precision", "32-true"), str(cfg.trainer.get("accelerator", "cpu"))
    )
    if str(cfg.trainer.get("precision")) == "auto":
        log.info("trainer.precision=auto -> %s (%s)", precision, why)
    overrides.setdefault("precision", precision)
    if not cfg.trainer.get("plugins") and "plugins" not in overrides:
        # Checkpoints written beside their target and renamed into place (never staged through
        # $TMPDIR on another filesystem), and read with weights_only=True.
        from ranking.serving.checkpoints import AtomicCheckpointIO

        overrides["plugins"] = [AtomicCheckpointIO()]
    return instantiate(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, **overrides
    )
