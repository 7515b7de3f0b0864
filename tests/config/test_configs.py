"""Every option of every config group composes and instantiates; typos fail clearly."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from omegaconf import OmegaConf

from data_modules.adapters.esci_sample import write_esci_sample
from data_modules.errors import ConfigError
from experiments.workflows.config import (
    build_datamodule,
    build_module,
    build_trainer,
    plain,
    task_list,
)
from ranking.losses import build_loss
from ranking.nn.encoders import load_tokenizer, minilm_package_dir
from tests.conftest import CONF_DIR, SHARED

GROUPS = [
    "data",
    "encoder",
    "model",
    "tower",
    "region_mask",
    "loss",
    "tasks",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "debug",
]
REGIONS = ["apac", "eu", "na"]


def options(group: str) -> list[str]:
    # Files starting with "_" are shared fragments included by other options, not choices.
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


def extra_overrides(group: str, option: str, tmp_path: Path) -> list[str]:
    if group == "data" and option == "file":
        path = tmp_path / "logs.parquet"
        pl.DataFrame(
            {
                "query_id": ["q1", "q1", "q2", "q2"],
                "query": ["red shoes", "red shoes", "blue bag", "blue bag"],
                "product_id": ["p1", "p2", "p3", "p1"],
                "product_title": ["red shoe", "green hat", "blue bag", "red shoe"],
                "region": ["us", "us", "de", "de"],
                "purchase": [1, 0, 1, 0],
            }
        ).write_parquet(path)
        return [
            f"data.path={path}",
            "tasks=purchase",
            "data.splits.train=0",
            "data.splits.val=0",
            "data.splits.test=1",
        ]
    if (group, option) == ("experiment", "esci"):
        folder = write_esci_sample(tmp_path / "esci", queries_per_locale=5, products_per_query=4)
        return [
            "data=esci",
            f"data.source.path={folder}",
            "data.source.max_queries=null",
            "data.eval_batch_size=4",
        ]
    if group == "data" and option == "esci":
        folder = write_esci_sample(tmp_path / "esci", queries_per_locale=5, products_per_query=4)
        return [f"data.source.path={folder}", "data.eval_batch_size=4"]
    if group == "data" and option == "logs":
        path = tmp_path / "clicks.csv"
        pl.DataFrame(
            {
                "search_term": ["red shoes"] * 3 + ["blue bag"] * 3,
                "product_id": ["p1", "p2", "p3", "p4", "p1", "p5"],
                "product_title": ["red shoe", "green hat", "red boot", "blue bag", "red", "tote"],
                "market": ["us"] * 3 + ["de"] * 3,
                "click": [1, 0, 1, 1, 0, 0],
                "add_to_cart": [1, 0, 0, 1, 0, 0],
                "purchase": [1, 0, 0, 0, 0, 0],
                "relevance": [3, 0, 2, 3, 1, 0],
                "position": [1, 2, 3, 1, 2, 3],
            }
        ).write_csv(path)
        return [
            f"data.source.path={path}",
            "data.source.rename={search_term: query, market: region}",
            "data.splits={train: 0, val: 0, test: 1}",
        ]
    if (group, option) in REAL_DATA:
        return real_data_overrides(option)
    if group == "encoder" and option == "local":
        return [f"encoder.path={minilm_package_dir()}"]
    if group == "trainer" and option == "gpu":
        return ["trainer.accelerator=cpu", "trainer.precision=32-true"]  # compose-check on CPU
    return []


# Options that read ../shared/data (Home Depot, CrowdFlower): skipped where it is absent, and
# cut to a few queries per source so that they instantiate in seconds.
REAL_DATA = {
    ("data", "homedepot"): ["homedepot"],
    ("data", "crowdflower"): ["crowdflower"],
    ("data", "mix"): ["homedepot", "crowdflower"],
    ("experiment", "real_mix"): ["homedepot", "crowdflower"],
    ("experiment", "homedepot"): ["homedepot"],
    ("experiment", "crowdflower"): ["crowdflower"],
}


def real_data_overrides(option: str) -> list[str]:
    datasets = REAL_DATA.get(("data", option)) or REAL_DATA[("experiment", option)]
    missing = [d for d in datasets if not (SHARED / "data" / d / "train.csv").is_file()]
    if missing:
        pytest.skip(f"{SHARED / 'data'} has no {missing} (the real datasets are not in the repo)")
    nodes = (
        [f"data.source.sources.{d}" for d in datasets]
        if option in ("mix", "real_mix")
        else ["data.source"]
    )
    # The recipe's own data group on the command line keeps the synthetic TINY keys out.
    data = {"real_mix": "mix", "homedepot": "homedepot", "crowdflower": "crowdflower"}
    return [
        *([f"data={data[option]}"] if (("experiment", option) in REAL_DATA) else []),
        f"paths.data_dir={SHARED / 'data'}",
        *[f"{node}.max_queries=12" for node in nodes],
        "data.eval_batch_size=4",
    ]


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in options(g)], ids=lambda v: str(v)
)
def test_option_composes_and_instantiates(make_cfg, tmp_path, group, option) -> None:
    cfg = make_cfg(f"{group}={option}", *extra_overrides(group, option, tmp_path))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["paths"]["output_dir"]  # every interpolation outside `hydra` resolves
    assert cfg.monitor.startswith("val/")
    tasks = task_list(cfg)
    if group in ("data", "encoder", "tasks", "experiment"):
        tokenizer = load_tokenizer(plain(cfg.encoder))
        datamodule = build_datamodule(cfg, tokenizer, [t["label"] for t in tasks])
        datamodule.setup()
        batch = next(iter(datamodule.eval_dataloader(next(iter(datamodule.lists)))))
        assert batch["labels"].shape[-1] == len(tasks)
    if group in ("model", "tower", "region_mask", "encoder", "loss", "tasks", "experiment"):
        module = build_module(cfg, REGIONS)
        assert module.task_names == [t["name"] for t in tasks]
    if group == "loss":
        assert callable(build_loss(**plain(cfg.loss)))
    if group in ("trainer", "logger", "callbacks", "debug"):
        trainer = build_trainer(cfg)
        if option == "none" and group == "logger":
            assert trainer.loggers == []


@pytest.mark.parametrize("config", ["train", "eval"])
def test_top_level_configs_compose(make_cfg, config) -> None:
    cfg = make_cfg(*(["ckpt_path=x.ckpt"] if config == "eval" else []), config=config, tiny=False)
    assert cfg.paths.output_dir
    assert "data" in cfg and "trainer" in cfg


def test_monitor_is_the_one_source_of_truth(make_cfg) -> None:
    cfg = make_cfg("monitor=val/purchase/eu/ndcg@10", "monitor_mode=max")
    assert cfg.callbacks.model_checkpoint.monitor == "val/purchase/eu/ndcg@10"


def test_unknown_task_in_order_is_named(make_cfg) -> None:
    cfg = make_cfg("tasks.order=[click,purchse]")
    with pytest.raises(ConfigError, match="purchse"):
        task_list(cfg)


def test_unknown_loss_option_is_named(make_cfg) -> None:
    cfg = make_cfg("+loss.alhpa=3")
    with pytest.raises(ConfigError, match="alhpa"):
        build_module(cfg, REGIONS)


def test_unknown_datamodule_key_is_named(make_cfg, tokenizer) -> None:
    cfg = make_cfg("+data.no_such_key=1")
    with pytest.raises(ConfigError, match="no_such_key"):
        build_datamodule(cfg, tokenizer, ["purchase"])


def test_unknown_generator_option_is_named(make_cfg, tokenizer) -> None:
    cfg = make_cfg("+data.generator.num_querys=3")
    with pytest.raises(ConfigError, match="num_querys"):
        build_datamodule(cfg, tokenizer, ["purchase"])


def test_bad_metric_spec_is_named(make_cfg) -> None:
    cfg = make_cfg("model.metrics=[ndcg@10,ndgc@5]")
    with pytest.raises(ConfigError, match="ndgc@5"):
        build_module(cfg, REGIONS)


def loss_names(module) -> dict[str, str]:
    """Task name -> name of the loss function that trains it."""
    return {
        name: loss.func.__name__
        for name, loss in zip(module.task_names, module.losses, strict=True)
    }


def test_default_tasks_train_with_listnet(make_cfg) -> None:
    module = build_module(make_cfg(), REGIONS)
    names = loss_names(module)
    assert names == {
        "relevance": "listnet",
        "click": "listnet",
        "add_to_cart": "listnet",
        "purchase": "listnet",
    }


def test_a_task_can_have_its_own_loss(make_cfg) -> None:
    cfg = make_cfg("loss=listnet", "tasks.catalog.relevance.loss={name: mse}")
    module = build_module(cfg, REGIONS)
    names = loss_names(module)
    assert names == {
        "relevance": "mse",
        "click": "listnet",
        "add_to_cart": "listnet",
        "purchase": "listnet",
    }
