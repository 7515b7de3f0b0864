"""Shared fixtures: composed configs pointing into tmp_path, tiny data, a tokenizer."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SHARED = Path(os.environ.get("SHOPRANK_SHARED_DIR", REPO.parent / "shared"))


REFERENCE_DIR = REPO / "tests" / "data" / "reference"


def reference_dir() -> Path:
    """``$SHOPRANK_REFERENCE_DIR``, else ``tests/data/reference`` (in every clone)."""
    return Path(os.environ.get("SHOPRANK_REFERENCE_DIR", REFERENCE_DIR))


def load_reference(name: str) -> dict | None:
    """A reference file parsed from JSON, or None when it is absent (callers skip with a reason)."""
    path = reference_dir() / name
    return json.loads(path.read_text()) if path.is_file() else None


os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tiny but complete: 3 regions, a few lists per split, 1 short epoch. Keyed by the config group
# whose default option they assume; they are left out when a test picks another option.
TINY: dict[str, list[str]] = {
    "data": [
        "data.generator.num_products=120",
        "data.generator.num_queries=45",
        "data.generator.list_size=8",
        "data.batch_size=4",
        "data.eval_batch_size=8",
    ],
    "encoder": [
        "encoder.max_length=32",
        "encoder.architecture.hidden_size=32",
        "encoder.architecture.intermediate_size=64",
        "encoder.architecture.num_hidden_layers=1",
    ],
    "trainer": [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ],
    "callbacks": ["callbacks.progress_bar=null"],
}
# A 1-layer, 16-wide random-init encoder spec for unit tests that build models directly.
TINY_ENCODER = {
    "source": "random",
    "max_length": 32,
    "architecture": {
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    },
}

# Real-data recipes (conf/experiment/<name>.yaml): data=<name>, encoder=minilm_l6.
RECIPES = ("homedepot", "crowdflower", "esci")

# The options of each group that the TINY overrides fit (the first is the group's default).
FITTING_OPTIONS = {
    "data": ("synthetic",),
    "encoder": ("tiny_bert",),
    "trainer": ("cpu", "gpu"),
    "callbacks": ("default", "early_stopping"),
}


def tiny_overrides(overrides: list[str]) -> list[str]:
    """The TINY overrides that still apply given the groups ``overrides`` choose."""
    chosen = dict(o.split("=", 1) for o in overrides if "=" in o and "." not in o.split("=")[0])
    experiment = chosen.get("experiment")
    if experiment in ("minilm", *RECIPES):
        chosen.setdefault("encoder", "minilm_l6")
    if experiment == "real_mix":
        chosen.setdefault("data", "mix")
    if experiment in RECIPES:
        chosen.setdefault("data", experiment)
    return [
        override
        for group, group_overrides in TINY.items()
        if chosen.get(group, FITTING_OPTIONS[group][0]) in FITTING_OPTIONS[group]
        for override in group_overrides
    ]


def compose_config(config_name: str, overrides: list[str], tmp_path: Path) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as Hydra would, with every path under ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.hydra.runtime.output_dir = str(tmp_path / "out")
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg(*overrides, config="train", tiny=True)`` -> composed config."""

    def make(*overrides: str, config: str = "train", tiny: bool = True) -> DictConfig:
        extra = tiny_overrides(list(overrides)) if tiny and config == "train" else []
        return compose_config(config, [*extra, *overrides], tmp_path)

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def tokenizer():
    from ranking.nn.encoders import load_tokenizer

    return load_tokenizer({"source": "random"})
