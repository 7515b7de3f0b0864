"""The one module of the library that touches Hydra: building objects from the composed config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

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


def build_trainer(cfg: DictConfig, **overrides: Any) -> Any:
    callbacks = _instantiate_group(cfg.get("callbacks"), "callbacks")
    loggers = _instantiate_group(cfg.get("logger"), "logger")
    return instantiate(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, **overrides
    )
