"""Region feature columns: table -> batch ``region_features`` -> standardised mask gate input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from data_modules import FileDataModule
from data_modules.errors import ConfigError, DataValidationError
from experiments.workflows.config import build_datamodule, build_module, task_list
from experiments.workflows.train import train
from ranking.modules.cross_encoder import RankingModule
from ranking.nn.towers import FeatureRegionMask

# Three lists of lengths 3, 2, 4 (so a batch of all three has padding), two regions.
PRICES = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
INDEX = [0.5, 0.5, 0.5, 2.0, 2.0, 0.5, 0.5, 0.5, 0.5]


def _table(**columns: list) -> pl.DataFrame:
    qids = ["q1"] * 3 + ["q2"] * 2 + ["q3"] * 4
    return pl.DataFrame(
        {
            "query_id": qids,
            "query": [f"query {q}" for q in qids],
            "product_id": [f"p{i}" for i in range(9)],
            "product_title": [f"product {i}" for i in range(9)],
            "region": ["eu"] * 3 + ["na"] * 2 + ["eu"] * 4,
            "click": [1, 0, 0, 0, 1, 1, 0, 0, 0],
            "price": PRICES,
            "price_index": INDEX,
            **columns,
        }
    )


def _datamodule(tmp_path: Path, tokenizer, table: pl.DataFrame | None = None, **kwargs):
    path = tmp_path / "table.parquet"
    (table if table is not None else _table()).write_parquet(path)
    options = {
        "tokenizer": tokenizer,
        "label_columns": ["click"],
        "max_length": 16,
        "splits": {"train": 1.0},
        "batch_size": 3,
        "product_text_fields": ["product_title"],
        **kwargs,
    }
    return FileDataModule(str(path), **options)


def _batch(dm) -> dict[str, torch.Tensor]:
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


# ---------------------------------------------------------------- data


def test_batch_carries_feature_values_of_its_rows_and_zero_at_padding(tmp_path, tokenizer) -> None:
    dm = _datamodule(tmp_path, tokenizer, region_feature_columns=["price", "price_index"])
    batch = _batch(dm)
    feats, rows, mask = batch["region_features"], batch["rows"], batch["mask"]
    assert feats.dtype == torch.float32 and feats.shape == (3, 4, 2)
    assert mask.sum().item() == 9 and not mask.all()  # lists of 3, 2, 4: padding present
    # __pair i is table row i here (nothing dropped), so values come straight from the table.
    expected = torch.tensor([PRICES, INDEX]).T
    assert torch.equal(feats[mask], expected[rows[mask]])
    assert torch.equal(feats[~mask], torch.zeros(int((~mask).sum()), 2))


def test_without_columns_batches_are_unchanged(tmp_path, tokenizer) -> None:
    batch = _batch(_datamodule(tmp_path, tokenizer))
    assert "region_features" not in batch
    assert set(batch) == {
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "mask",
        "labels",
        "region",
        "list_index",
        "rows",
    }


def test_feature_stats_are_train_split_mean_and_population_std(tmp_path, tokenizer) -> None:
    dm = _datamodule(tmp_path, tokenizer, region_feature_columns=["price", "price_index"])
    dm.setup("fit")
    stats = dm.region_feature_stats()
    assert stats["columns"] == ["price", "price_index"]
    # price 1..9: mean 5, population variance (81 - 1) / 12 = 20 / 3; index: (7 * 0.5 + 4) / 9.
    assert stats["mean"] == pytest.approx([5.0, 7.5 / 9])
    assert stats["std"] == pytest.approx([math.sqrt(20 / 3), float(np.std(INDEX))])


def test_feature_stats_need_a_train_split(tmp_path, tokenizer) -> None:
    dm = _datamodule(tmp_path, tokenizer, splits={"test": 1.0}, region_feature_columns=["price"])
    dm.setup("test")
    with pytest.raises(ConfigError, match=r"data.region_feature_columns.*train split"):
        dm.region_feature_stats()


@pytest.mark.parametrize(
    ("table", "pattern"),
    [
        (_table(), r"table.parquet: missing region feature column\(s\) \['volume'\]"),
        (
            _table(volume=["a"] * 9),
            r"table.parquet: region feature column 'volume' has type String",
        ),
        (
            _table(volume=[1.0, 2.0, None, 4.0, None, 6.0, 7.0, 8.0, 9.0]),
            r"table.parquet: region feature column 'volume' has 2 missing.*first at row 2, 4\)",
        ),
        (
            _table(volume=[1.0, float("nan"), 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]),
            r"table.parquet: region feature column 'volume' has 1 missing, NaN.*first at row 1\)",
        ),
        (
            _table(volume=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, float("inf")]),
            r"region feature column 'volume' has 1 .*infinite.*first at row 8\)",
        ),
    ],
)
def test_bad_feature_columns_name_source_column_and_rows(
    tmp_path, tokenizer, table: pl.DataFrame, pattern: str
) -> None:
    dm = _datamodule(tmp_path, tokenizer, table, region_feature_columns=["volume"])
    with pytest.raises(DataValidationError, match=pattern):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("columns", "pattern"),
    [("price", r"must be a list of column names, e.g. \[price\]"), (["price", "price"], "repeats")],
)
def test_feature_column_config_typos(tmp_path, tokenizer, columns, pattern: str) -> None:
    with pytest.raises(ConfigError, match=rf"data.region_feature_columns {pattern}"):
        _datamodule(tmp_path, tokenizer, region_feature_columns=columns)


# ---------------------------------------------------------------- mask


def test_gate_input_is_standardised_features_exactly() -> None:
    mask = FeatureRegionMask(
        hidden_size=4,
        num_regions=2,
        region_feature_dim=2,
        region_embedding_dim=0,
        gate_hidden=0,
        feature_mean=[10.0, 1.0],
        feature_std=[2.0, 0.0],  # a constant column: std 0 is replaced by 1
    )
    seen: list[torch.Tensor] = []
    mask.gate.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    features = torch.tensor([[12.0, 5.0], [8.0, -1.0], [10.0, 1.0]])
    mask(torch.ones(3, 4), torch.tensor([0, 1, 0]), features)
    assert torch.equal(seen[0], torch.tensor([[1.0, 4.0], [-1.0, -2.0], [0.0, 0.0]]))
    assert torch.equal(mask.feature_std, torch.tensor([2.0, 1.0]))
    assert set(mask.state_dict()) >= {"feature_mean", "feature_std"}


def test_gradients_reach_the_gate_through_the_features() -> None:
    torch.manual_seed(0)
    mask = FeatureRegionMask(
        8, 2, region_feature_dim=2, region_embedding_dim=3, gate_hidden=0, feature_std=[2.0, 4.0]
    )
    features = torch.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    out, _ = mask(torch.randn(2, 8), torch.tensor([0, 1]), features)
    (out**2).sum().backward()
    assert features.grad is not None and (features.grad.abs().sum(0) > 0).all()
    # The weights reading the two feature inputs (last 2 columns of the gate) learn.
    assert (mask.gate.weight.grad[:, 3:].abs().sum(0) > 0).all()


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"region_feature_dim": 2, "feature_mean": [0.0]}, r"feature_mean must be 2 finite"),
        ({"region_feature_dim": 1, "feature_std": [float("nan")]}, "feature_std must be 1 finite"),
        ({"region_feature_dim": 1, "feature_std": [-1.0]}, "feature_std must be >= 0"),
        ({"feature_mean": [0.0]}, "feature_mean is given but region_feature_dim=0"),
        ({"region_feature_dim": 1, "feature_columns": ["a", "b"]}, "names 2 column"),
    ],
)
def test_bad_feature_statistics(options: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        FeatureRegionMask(4, 2, **options)


# ---------------------------------------------------------------- model + config

FEATURE = ("region_mask=feature", "data.region_feature_columns=[price]")


def test_build_module_puts_train_statistics_into_the_hparams(make_cfg, tokenizer) -> None:
    cfg = make_cfg(*FEATURE)
    dm = build_datamodule(cfg, tokenizer, [t["label"] for t in task_list(cfg)])
    dm.setup("fit")
    module = build_module(cfg, dm.region_names, dm)
    stats = dm.region_feature_stats()
    spec = module.hparams.region_mask
    assert spec["region_feature_dim"] == 1 and spec["feature_columns"] == ["price"]
    assert spec["feature_mean"] == stats["mean"] and spec["feature_std"] == stats["std"]
    prices = dm.tables["train"].get_column("price").to_numpy()
    assert stats["mean"] == pytest.approx([prices.mean()])
    assert stats["std"] == pytest.approx([prices.std()])
    mask = module.model.tower.region_mask
    assert mask.feature_mean.tolist() == pytest.approx(stats["mean"])

    # The packed [N, F] features reach the mask: its gate input holds their standardised values.
    seen: list[torch.Tensor] = []
    mask.gate.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    batch = next(iter(dm.val_dataloader()))
    module.use_data_regions(dm.region_names)
    module.eval()
    with torch.no_grad():
        module.score(batch)
    packed = batch["region_features"][batch["mask"]]
    expected = (packed - torch.tensor(stats["mean"])) / torch.tensor(stats["std"])
    torch.testing.assert_close(seen[0][:, -1:], expected)


def test_feature_columns_without_a_region_mask_are_refused(make_cfg) -> None:
    with pytest.raises(ConfigError, match=r"data.region_feature_columns=\['price'\].*region_mask"):
        build_module(make_cfg("data.region_feature_columns=[price]"), ["apac", "eu", "na"])


def test_feature_dim_that_differs_from_the_columns_is_refused(make_cfg) -> None:
    cfg = make_cfg(*FEATURE, "+region_mask.region_feature_dim=3")
    with pytest.raises(ConfigError, match=r"region_mask.region_feature_dim=3 but data.region"):
        build_module(cfg, ["apac", "eu", "na"])


def test_model_without_features_refuses_data_with_them(make_cfg) -> None:
    module = build_module(make_cfg("region_mask=feature"), ["apac", "eu", "na"])
    with pytest.raises(
        ConfigError, match=r"data.region_feature_columns gives 1.*region_feature_dim"
    ):
        module.check_region_features(["price"])
    plain = build_module(make_cfg(), ["apac", "eu", "na"])
    with pytest.raises(ConfigError, match=r"data.region_feature_columns.*region_mask=none"):
        plain.check_region_features(["price"])
    batch = {"region_features": torch.zeros(1, 2, 1), "region": torch.tensor([0])}
    with pytest.raises(ConfigError, match="region_mask=none"):
        plain.score(batch)


def test_fast_dev_run_with_region_features_and_checkpoint_round_trip(make_cfg, tmp_path) -> None:
    cfg = make_cfg(*FEATURE, "trainer.fast_dev_run=true", "callbacks=none", "logger=none")
    metrics, objects = train(cfg)
    trainer, module, dm = objects["trainer"], objects["module"], objects["datamodule"]
    assert trainer.state.finished and "test/purchase/ndcg@10" in metrics["test"]
    stats = dm.region_feature_stats()
    # pipeline.train builds the module without the datamodule: setup("fit") fitted the stats.
    assert module.hparams.region_mask["feature_mean"] == stats["mean"]

    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = RankingModule.load_from_checkpoint(ckpt, map_location="cpu")
    spec = loaded.hparams.region_mask
    assert spec["feature_mean"] == stats["mean"] and spec["feature_std"] == stats["std"]
    mask = loaded.model.tower.region_mask
    assert mask.feature_mean.tolist() == pytest.approx(stats["mean"])
    assert mask.feature_std.tolist() == pytest.approx(stats["std"])
    assert loaded.region_feature_columns == ["price"]

    # Data without the feature column is refused, by config and by batch.
    with pytest.raises(ConfigError, match=r"trained with region features \[price\].*none"):
        loaded.check_region_features([])
    with pytest.raises(ConfigError, match=r"does not match.*\[price\]"):
        loaded.check_region_features(["price_index"])
    batch = next(iter(dm.val_dataloader()))
    del batch["region_features"]
    loaded.use_data_regions(dm.region_names)
    with pytest.raises(ConfigError, match=r"data.region_feature_columns=\[price\]"):
        loaded.score(batch)
