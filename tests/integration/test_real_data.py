"""Adapters on the real Home Depot and CrowdFlower files in ../shared/data (skipped if absent)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from data_modules.adapters import CrowdFlowerSource, HomeDepotSource, MixSource
from data_modules.datamodule import ListwiseDataModule
from tests.conftest import SHARED

HOMEDEPOT = SHARED / "data" / "homedepot" / "train.csv"
CROWDFLOWER = SHARED / "data" / "crowdflower" / "train.csv"


def need(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"real data not on this machine: {missing} (Kaggle files, not in the repo)")


def test_homedepot_real_file() -> None:
    need(HOMEDEPOT)
    source = HomeDepotSource(HOMEDEPOT)
    table = source.load()
    raw = pl.read_csv(HOMEDEPOT, encoding="latin-1")
    assert table.height == raw.height == 59_262
    assert table.get_column("query_id").n_unique() == 9_435
    assert source.report.dropped == {}  # this copy has no repeated (query, product) pair
    assert table.select(pl.col("relevance").is_between(0.0, 1.0).all()).item()
    expected = (table.get_column("rating") - 1.0) / 2.0
    assert (table.get_column("relevance") - expected).abs().max() < 1e-12
    assert not table.get_column("product_title").str.contains("&amp;").any()


def test_crowdflower_real_file() -> None:
    need(CROWDFLOWER)
    source = CrowdFlowerSource(CROWDFLOWER)
    table = source.load()
    # 7,373 rows, 440 of them in 211 repeated (query, title) pairs: 229 rows merged away.
    assert table.height == 7_373 - 229
    assert source.report.dropped == {
        "repeated (query, product title) rows merged, ratings averaged": (229, 76)
    }
    assert table.get_column("query_id").n_unique() == 187
    assert not table.select(pl.struct("query_id", "product_id").is_duplicated().any()).item()
    assert table.select(pl.col("relevance").is_between(0.0, 1.0).all()).item()


def test_real_mix_through_the_datamodule(tokenizer) -> None:
    need(HOMEDEPOT, CROWDFLOWER)
    mix = MixSource(
        {
            "homedepot": HomeDepotSource(HOMEDEPOT, max_queries=150, seed=0),
            "crowdflower": CrowdFlowerSource(CROWDFLOWER, max_queries=15, seed=0),
        }
    )
    dm = ListwiseDataModule(
        mix,
        tokenizer,
        ["relevance", "click", "add_to_cart", "purchase"],
        max_length=32,
        cache_dir=None,
        engagement={"seed": 0},
    )
    dm.setup()
    assert dm.region_names == ["crowdflower", "homedepot"]
    table = pl.concat(dm.tables.values())
    for region in dm.region_names:
        ids = table.filter(pl.col("region") == region)
        assert ids["query_id"].str.starts_with(f"{region}:").all()
        assert ids["product_id"].str.starts_with(f"{region}:").all()
    assert (table["purchase"] <= table["add_to_cart"]).all()
    assert (table["add_to_cart"] <= table["click"]).all()
    owner: dict[str, str] = {}
    for name, split in dm.tables.items():
        for text in split.get_column("query").unique():
            assert owner.setdefault(text, name) == name, f"{text!r} in {owner[text]} and {name}"
    stats = dm.describe()
    assert set(stats["region"]) == {"crowdflower", "homedepot", "all"}
    batch = next(iter(dm.train_dataloader()))
    assert batch["labels"].shape[-1] == 4


def test_real_mix_experiment_trains_and_reports_both_regions(make_cfg) -> None:
    need(HOMEDEPOT, CROWDFLOWER)
    from experiments.workflows.train import train

    cfg = make_cfg(
        "experiment=real_mix",
        "data=mix",
        f"paths.data_dir={SHARED / 'data'}",
        "data.source.sources.homedepot.max_queries=200",
        "data.source.sources.crowdflower.max_queries=20",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "logger=none",
        "callbacks.progress_bar=null",
        "baselines=[random]",
    )
    metrics, objects = train(cfg)
    assert objects["datamodule"].region_names == ["crowdflower", "homedepot"]
    for task in ("relevance", "click", "add_to_cart", "purchase"):
        for region in ("crowdflower", "homedepot"):
            key = f"test/{task}/{region}/ndcg@10"
            assert key in metrics["test"] and key in metrics["baselines"]["random"]
    assert any("homedepot: not among" in reason for reason in metrics["dropped"])
