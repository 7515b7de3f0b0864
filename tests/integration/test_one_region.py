"""One region (one market) through train, validate, test, evaluate and predict.

torchmetrics squeezes a one-group result to a 0-d tensor; every consumer of per-region values
must still name the one region. One-market data is the common case for a team's own logs.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch

from experiments.workflows.predict import predict
from experiments.workflows.train import evaluate, train
from ranking.metrics.metric_set import RankingMetricSet
from tests.conftest import SHARED, compose_config

ONE_REGION = "data.generator.regions=[eu]"
FIELDS = "data.product_text_fields=[product_title,price_band]"  # as data=synthetic
TASKS = ("relevance", "click", "add_to_cart", "purchase")


def test_metric_set_with_one_region_names_the_region() -> None:
    metric_set = RankingMetricSet(["purchase"], ["us"], ["ndcg@10", "mrr@10"])
    scores = torch.tensor([[[3.0], [2.0], [1.0]], [[1.0], [2.0], [3.0]]])
    labels = torch.tensor([[[1.0], [0.0], [0.0]], [[1.0], [0.0], [0.0]]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    metric_set.update(scores, labels, mask, torch.tensor([0, 0]))
    out = metric_set.compute("val")
    expected = (1.0 + 0.5) / 2  # perfect list, and the positive at rank 3 (1 / log2(4))
    assert out["val/purchase/us/ndcg@10"] == pytest.approx(expected)
    assert out["val/purchase/ndcg@10"] == pytest.approx(expected)
    assert out["val/purchase/us/mrr@10"] == pytest.approx((1.0 + 1 / 3) / 2)
    assert out["val/purchase/us/lists"] == 2


@pytest.fixture(scope="module")
def one_region_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_region")
    from tests.conftest import tiny_overrides

    cfg = compose_config(
        "train",
        [*tiny_overrides([]), ONE_REGION, "logger=none", "baselines=[random,bm25]"],
        root / "train",
    )
    metrics, objects = train(cfg)
    return root, cfg, metrics, objects


def test_train_validates_and_tests_one_region(one_region_run) -> None:
    _root, cfg, metrics, objects = one_region_run
    assert objects["datamodule"].region_names == ["eu"]
    assert objects["trainer"].num_sanity_val_steps > 0  # the pre-flight validation pass ran
    for task in TASKS:
        assert f"test/{task}/eu/ndcg@10" in metrics["test"]
        assert metrics["test"][f"test/{task}/eu/ndcg@10"] == pytest.approx(
            metrics["test"][f"test/{task}/ndcg@10"]
        )
        assert f"test/{task}/eu/ndcg@10" in metrics["baselines"]["bm25"]
    assert 0.0 <= metrics["val/ndcg@10"] <= 1.0
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert saved["regions"] == ["eu"]


def test_evaluate_and_predict_a_one_region_file(one_region_run) -> None:
    root, _cfg, metrics, objects = one_region_run
    ckpt = metrics["best_checkpoint"]
    # A user's one-market log: no region column at all.
    table = objects["datamodule"].tables["test"].drop("__pair", "region")
    path = root / "one_market.parquet"
    table.write_parquet(path)
    data = ["data=file", f"data.path={path}", "split=all", "data.region=eu", FIELDS]
    result, _ = evaluate(
        compose_config("eval", [f"ckpt_path={ckpt}", *data, "baselines=[random]"], root / "ev")
    )
    assert result["regions"] == ["eu"]
    assert result["test"]["test/purchase/eu/ndcg@10"] == pytest.approx(
        metrics["test"]["test/purchase/eu/ndcg@10"]
    )
    summary, objects_p = predict(
        compose_config("predict", [f"ckpt_path={ckpt}", *data], root / "p")
    )
    frame = objects_p["frame"]
    assert summary["pairs"] == table.height
    assert frame.get_column("region").unique().to_list() == ["eu"]


def test_a_file_without_region_column_is_one_default_region(one_region_run) -> None:
    root, _cfg, metrics, objects = one_region_run
    table = objects["datamodule"].tables["test"].drop("__pair", "region")
    path = root / "no_region.csv"
    table.write_csv(path)
    data = ["data=file", f"data.path={path}", "split=all"]
    cfg = compose_config(
        "eval", [f"ckpt_path={metrics['best_checkpoint']}", *data, "baselines=[]"], root / "ev2"
    )
    result, _ = evaluate(cfg)
    assert result["regions"] == ["default"]
    assert "test/click/default/ndcg@10" in result["test"]


def test_a_validation_error_stops_the_run_before_training(make_cfg, monkeypatch) -> None:
    """The pre-flight pass runs validation before any optimiser step."""
    from ranking.metrics import metric_set

    def broken(self, stage):
        raise RuntimeError("broken metric")

    monkeypatch.setattr(metric_set.RankingMetricSet, "compute", broken)
    cfg = make_cfg("logger=none", "trainer.limit_train_batches=50")
    steps: list[int] = []
    from ranking.modules.cross_encoder import RankingModule

    original = RankingModule.training_step

    def counting(self, batch, batch_idx):
        steps.append(batch_idx)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(RankingModule, "training_step", counting)
    with pytest.raises(RuntimeError, match="broken metric"):
        train(cfg)
    assert steps == []


HOMEDEPOT = SHARED / "data" / "homedepot" / "train.csv"
CROWDFLOWER = SHARED / "data" / "crowdflower" / "train.csv"


@pytest.mark.parametrize(
    ("dataset", "path", "queries"),
    [("homedepot", HOMEDEPOT, 120), ("crowdflower", CROWDFLOWER, 30)],
)
def test_one_real_market_alone_trains_and_tests(make_cfg, dataset, path, queries) -> None:
    if not path.is_file():
        pytest.skip(f"real data not on this machine: {path} (Kaggle files, not in the repo)")
    cfg = make_cfg(
        f"data={dataset}",
        f"paths.data_dir={SHARED / 'data'}",
        f"data.source.max_queries={queries}",
        "data/engagement=none",
        "tasks.order=[relevance]",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        "encoder.architecture.num_hidden_layers=1",
        "logger=none",
        "baselines=[random]",
    )
    metrics, objects = train(cfg)
    assert objects["datamodule"].region_names == [dataset]
    assert f"test/relevance/{dataset}/ndcg@10" in metrics["test"]
    assert f"test/relevance/{dataset}/ndcg@10" in metrics["baselines"]["random"]
    per_query = pl.read_parquet(Path(cfg.paths.output_dir) / "per_query.parquet")
    assert per_query.get_column("region").unique().to_list() == [dataset]
