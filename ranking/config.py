"""The one module of the library that touches Hydra: building objects from the composed config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from ranking.errors import ConfigError, ShoprankError


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
    """The active tasks ``[{name, label, weight, loss?}]`` in ``tasks.order``."""
    order = list(cfg.tasks.order)
    catalog = plain(cfg.tasks.catalog)
    unknown = [name for name in order if name not in catalog]
    if unknown:
        raise ConfigError(f"tasks.order names unknown task(s) {unknown}; known: {sorted(catalog)}")
    return [{"name": name, **catalog[name]} for name in order]


def build_datamodule(cfg: DictConfig, tokenizer: Any, label_columns: list[str]) -> Any:
    return instantiate(cfg.data, "data", tokenizer=tokenizer, label_columns=label_columns)


def build_source(cfg: DictConfig) -> Any:
    """The table source of ``cfg.data`` (for uses that need the rows but no tokenised lists)."""
    return instantiate(cfg.data, "data").source


def build_module(cfg: DictConfig, region_names: list[str]) -> Any:
    """The LightningModule of ``cfg.model`` with its encoder, tasks, loss, tower and region mask."""
    return instantiate(
        cfg.model,
        "model",
        encoder=plain(cfg.encoder),
        tasks=task_list(cfg),
        loss=plain(cfg.loss),
        tower=plain(cfg.tower),
        region_mask=plain(cfg.region_mask),
        region_names=list(region_names),
    )


def _instantiate_group(group: DictConfig | None, key: str) -> list[Any]:
    if not group:
        return []
    return [
        instantiate(node, f"{key}.{name}")
        for name, node in group.items()
        if isinstance(node, Mapping | DictConfig) and "_target_" in node
    ]


# Overrides that say where a job writes, not what it runs: left out of run names.
_NOT_IN_NAMES = ("paths.", "hydra.", "logger", "callbacks", "trainer.enable_progress_bar")


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


def _fill_wandb(logger_cfg: DictConfig | None, cfg: DictConfig, job_type: str) -> None:
    """Give W&B loggers the job's name, group and job type unless the config sets them."""
    if not logger_cfg:
        return
    identity = run_identity(cfg)
    for node in logger_cfg.values():
        if isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith("WandbLogger"):
            with open_dict(node):
                for key, value in (*identity.items(), ("job_type", job_type)):
                    if node.get(key) is None:
                        node[key] = value


def build_trainer(cfg: DictConfig, job_type: str = "train", **overrides: Any) -> Any:
    """The Lightning Trainer with its callbacks and loggers (W&B: named after the job)."""
    callbacks = _instantiate_group(cfg.get("callbacks"), "callbacks")
    _fill_wandb(cfg.get("logger"), cfg, job_type)
    loggers = _instantiate_group(cfg.get("logger"), "logger")
    return instantiate(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, **overrides
    )
