"""The listwise DataModule: splits, tokenisation cache, sampling, padding and shapes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from data_modules import SyntheticDataModule
from data_modules.errors import ConfigError
from data_modules.listwise import EpochSampler, select_items
from data_modules.splits import split_by_query
from data_modules.tokenization import tokenize_pairs

GENERATOR = {"num_products": 120, "num_queries": 60, "list_size": 12, "seed": 3}


def make_dm(tokenizer, tmp_path, **kwargs) -> SyntheticDataModule:
    options = {
        "generator": GENERATOR,
        "tokenizer": tokenizer,
        "label_columns": ["click", "purchase"],
        "max_length": 32,
        "max_list_size": 8,
        "batch_size": 4,
        "eval_batch_size": 5,
        "cache_dir": tmp_path / "cache",
        "seed": 0,
    }
    options.update(kwargs)
    dm = SyntheticDataModule(**options)
    dm.setup()
    return dm


def test_batch_shapes_padding_and_mask(tokenizer, tmp_path) -> None:
    dm = make_dm(tokenizer, tmp_path)
    batch = next(iter(dm.train_dataloader()))
    B, L, T = batch["input_ids"].shape
    assert B == 4 and L == 8  # lists of 12 capped at 8
    assert batch["mask"].shape == (B, L) and batch["mask"].dtype == torch.bool
    assert batch["labels"].shape == (B, L, 2)
    assert batch["region"].shape == (B,)
    assert batch["attention_mask"].shape == (B, L, T)
    # Dynamic padding: T is the longest pair in the batch, not max_length.
    assert T == int(batch["attention_mask"].sum(-1).max()) <= 32
    # Padded tokens carry the pad id and no attention.
    pad = batch["attention_mask"] == 0
    assert (batch["input_ids"][pad] == tokenizer.pad_token_id).all()


def test_eval_lists_are_whole_and_padded_with_mask(tokenizer, tmp_path) -> None:
    dm = make_dm(tokenizer, tmp_path, generator={**GENERATOR, "list_size": 12})
    batches = list(dm.eval_dataloader("test"))
    sizes = torch.cat([b["mask"].sum(-1) for b in batches])
    expected = dm.tables["test"].group_by("query_id").len().get_column("len")
    assert sorted(sizes.tolist()) == sorted(expected.to_list())
    for b in batches:
        assert (b["labels"][~b["mask"]] == 0).all()  # labels are 0 at padding


def test_labels_follow_task_order(tokenizer, tmp_path) -> None:
    dm = make_dm(tokenizer, tmp_path, label_columns=["purchase", "click"])
    batch = next(iter(dm.eval_dataloader("val")))
    real = batch["labels"][batch["mask"]]
    assert (real[:, 0] <= real[:, 1]).all()  # purchase implies click


def test_split_is_by_query_text(tokenizer, tmp_path) -> None:
    dm = make_dm(tokenizer, tmp_path)
    texts = {name: set(t.get_column("query").to_list()) for name, t in dm.tables.items()}
    assert not texts["train"] & texts["val"]
    assert not texts["train"] & texts["test"]
    assert not texts["val"] & texts["test"]
    assert sum(t.height for t in dm.tables.values()) == 60 * 12


def test_split_is_deterministic_and_seeded() -> None:
    df = pl.DataFrame({"query": [f"q{i}" for i in range(100)], "x": range(100)})
    a = split_by_query(df, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    b = split_by_query(df, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    c = split_by_query(df, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=2)
    assert a["test"].equals(b["test"])
    assert not a["test"].equals(c["test"])
    assert [a[s].height for s in ("train", "val", "test")] == [80, 10, 10]


def test_bad_split_fractions() -> None:
    df = pl.DataFrame({"query": ["a"]})
    with pytest.raises(ConfigError, match="sum to 1"):
        split_by_query(df, {"train": 0.8, "val": 0.1}, seed=0)
    with pytest.raises(ConfigError, match="unknown split"):
        split_by_query(df, {"train": 0.5, "dev": 0.5}, seed=0)


def test_truncation_keeps_positives() -> None:
    labels = np.zeros((30, 2), dtype=np.float32)
    labels[[3, 17, 29], 0] = 1
    labels[11, 1] = 1
    for seed in range(5):
        kept = select_items(labels, 6, np.random.default_rng(seed))
        assert len(kept) == 6 and len(set(kept)) == 6
        assert {3, 11, 17, 29} <= set(kept.tolist())


def test_truncation_with_more_positives_than_cap() -> None:
    labels = np.ones((10, 1), dtype=np.float32)
    kept = select_items(labels, 4, np.random.default_rng(0))
    assert len(kept) == 4


def test_training_lists_reshuffle_per_epoch_reproducibly(tokenizer, tmp_path) -> None:
    dm = make_dm(tokenizer, tmp_path)
    ds = dm.train_dataloader().dataset
    assert not np.array_equal(ds[(0, 0)]["rows"], ds[(0, 1)]["rows"])
    assert np.array_equal(ds[(0, 1)]["rows"], ds[(0, 1)]["rows"])
    sampler = EpochSampler(10, shuffle=True, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert sorted(first) != first or list(sampler) != first


def test_eval_order_is_fixed_across_epochs() -> None:
    sampler = EpochSampler(5, shuffle=False, seed=0)
    sampler.set_epoch(3)
    assert list(sampler) == [(i, 0) for i in range(5)]


def test_token_cache_is_reused_and_keyed(tokenizer, tmp_path) -> None:
    queries, products = ["red shoes", "blue bag"], ["red shoe", "tote"]
    first = tokenize_pairs(tokenizer, queries, products, 16, tmp_path)
    second = tokenize_pairs(tokenizer, queries, products, 16, tmp_path)
    other_len = tokenize_pairs(tokenizer, queries, products, 8, tmp_path)
    other_data = tokenize_pairs(tokenizer, queries, ["red shoe", "bag"], 16, tmp_path)
    assert not first.from_cache and second.from_cache
    assert first.key == second.key
    assert len({first.key, other_len.key, other_data.key}) == 3
    np.testing.assert_array_equal(first.ids, second.ids)
    # Same ids as tokenising directly.
    direct = tokenizer(queries[0], products[0])["input_ids"]
    assert first.ids[first.offsets[0] : first.offsets[1]].tolist() == direct


def test_datamodule_second_setup_hits_cache(tokenizer, tmp_path) -> None:
    assert not make_dm(tokenizer, tmp_path).tokens.from_cache
    assert make_dm(tokenizer, tmp_path).tokens.from_cache


def test_region_prefix_in_query(tokenizer, tmp_path) -> None:
    dm = make_dm(tokenizer, tmp_path, region_in_query=True)
    batch = next(iter(dm.eval_dataloader("val")))
    first = batch["input_ids"][0, 0][batch["attention_mask"][0, 0].bool()]
    region = dm.region_names[int(batch["region"][0])]
    assert tokenizer.decode(first).split()[1] == region


def test_product_text_field_typo_is_named(tokenizer, tmp_path) -> None:
    with pytest.raises(ConfigError, match="product_titel"):
        make_dm(tokenizer, tmp_path, product_text_fields=["product_titel"])


def test_bad_sizes_are_named(tokenizer, tmp_path) -> None:
    with pytest.raises(ConfigError, match="max_list_size"):
        make_dm(tokenizer, tmp_path, max_list_size=1)


def test_batches_carry_pair_rows_and_raw_texts(tokenizer, tmp_path):
    dm = make_dm(tokenizer, tmp_path)
    batch = next(iter(dm.test_dataloader()))
    rows, mask = batch["rows"], batch["mask"]
    assert rows.shape == mask.shape
    assert bool((rows[~mask] == -1).all()) and bool((rows[mask] >= 0).all())
    # Row ids point at the same pairs the labels came from.
    labels = torch.from_numpy(dm.labels)[rows[mask]]
    assert torch.equal(labels, batch["labels"][mask])
    assert dm.pair_texts.height == dm.labels.shape[0]
    assert not any(" | " in q for q in dm.pair_texts.get_column("query").head(5).to_list())
