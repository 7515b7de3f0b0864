"""Split invariants (random and predefined) and DDP sharding of the list sampler."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import polars as pl
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from data_modules.adapters import EsciSource
from data_modules.adapters.esci_sample import write_esci_sample
from data_modules.datamodule import ListwiseDataModule
from data_modules.errors import ConfigError, DataValidationError
from data_modules.listwise import EpochSampler
from data_modules.splits import (
    apply_stored_split,
    split_by_query,
    split_predefined,
    split_record,
    write_split,
)


def official(n_queries: int = 40, test_every: int = 4) -> pl.DataFrame:
    """Two rows per query; every ``test_every``-th query is in the official test part."""
    ids = np.repeat(np.arange(n_queries), 2)
    return pl.DataFrame(
        {
            "query_id": [f"q{i}" for i in ids],
            "query": [f"text {i}" for i in ids],
            "product_id": [f"p{j}" for j in range(2 * n_queries)],
            "split": ["test" if i % test_every == 0 else "train" for i in ids],
        }
    )


def texts(table: pl.DataFrame) -> set[str]:
    return set(table.get_column("query").to_list())


# --------------------------------------------------------------------------- predefined split


def test_predefined_split_keeps_official_test_and_carves_val_from_train() -> None:
    df = official()
    parts = split_predefined(df, "split", val_fraction=0.25, seed=0)
    assert parts["test"].equals(df.filter(pl.col("split") == "test"))
    # 30 train-only query texts, 25% of them -> round(7.5) = 8 in validation.
    assert len(texts(parts["val"])) == 8 and len(texts(parts["train"])) == 22
    assert set(parts["val"]["split"]) == {"train"}
    assert not texts(parts["train"]) & texts(parts["val"])
    assert not texts(parts["val"]) & texts(parts["test"])
    assert not texts(parts["train"]) & texts(parts["test"])
    assert sum(p.height for p in parts.values()) == df.height


def test_predefined_split_is_reproducible_and_seeded() -> None:
    df = official()
    a = split_predefined(df, "split", 0.25, seed=5)
    b = split_predefined(df, "split", 0.25, seed=5)
    c = split_predefined(df, "split", 0.25, seed=6)
    assert all(a[name].equals(b[name]) for name in a)
    assert texts(a["val"]) != texts(c["val"])
    assert a["test"].equals(c["test"])


def test_predefined_split_never_puts_an_officially_shared_query_in_val(caplog) -> None:
    # "text 1" is in the official train *and* test part: it stays there, never in val.
    df = official().with_columns(
        pl.when((pl.col("query") == "text 1") & (pl.col("product_id") == "p3"))
        .then(pl.lit("test"))
        .otherwise("split")
        .alias("split")
    )
    with caplog.at_level(logging.WARNING, logger="data_modules.splits"):
        for seed in range(10):
            parts = split_predefined(df, "split", 0.5, seed=seed)
            assert "text 1" not in texts(parts["val"])
            assert "text 1" in texts(parts["train"]) and "text 1" in texts(parts["test"])
    assert "1 query text(s) are in both the train and the test part" in caplog.text


def test_predefined_split_errors_are_named() -> None:
    df = official()
    bad = df.with_columns(
        pl.when(pl.col("product_id") == "p5").then(pl.lit("dev")).otherwise("split").alias("split")
    )
    with pytest.raises(DataValidationError, match=r"src: column 'split' has 1 values .*row 5\)"):
        split_predefined(bad, "split", 0.1, seed=0, source="src")
    with pytest.raises(ConfigError, match=r"'fold' is not a column"):
        split_predefined(df, "fold", 0.1, seed=0)
    with pytest.raises(ConfigError, match=r"validation share must be in \[0, 1\)"):
        split_predefined(df, "split", 1.0, seed=0)


def test_datamodule_split_column_needs_test_share_zero(tmp_path) -> None:
    source = EsciSource(write_esci_sample(tmp_path))
    with pytest.raises(ConfigError, match=r"data.splits.test must be 0 when data.split_column"):
        ListwiseDataModule(source, split_column="split")


def test_esci_official_test_is_kept_through_the_datamodule(tmp_path, tokenizer) -> None:
    folder = write_esci_sample(tmp_path, queries_per_locale=10)
    dm = ListwiseDataModule(
        EsciSource(folder),
        tokenizer,
        ["relevance"],
        max_length=16,
        split_column="split",
        splits={"train": 0.8, "val": 0.2, "test": 0.0},
        cache_dir=None,
    )
    dm.setup()
    official_test = EsciSource(folder).load().filter(pl.col("split") == "test")
    assert sorted(dm.tables["test"]["query_id"].unique()) == sorted(
        official_test["query_id"].unique()
    )
    assert set(dm.tables["val"]["split"]) == {"train"}
    # 10 queries per locale, 3 of them official test, 2 (us, es) large-version only:
    # 19 train-only query texts, round(0.2 * 19) = 4 of them carved out for validation.
    assert dm.tables["val"]["query_id"].n_unique() == 4
    seen: dict[str, str] = {}
    for name, table in dm.tables.items():
        for text in texts(table):
            assert seen.setdefault(text, name) == name, f"{text!r} in {seen[text]} and {name}"


def test_random_split_keeps_each_query_text_in_one_split() -> None:
    # The same text under two query_ids (two regions) must land in one split.
    df = pl.DataFrame(
        {
            "query_id": [f"{r}{i}" for r in "ab" for i in range(30)],
            "query": [f"text {i}" for _ in "ab" for i in range(30)],
        }
    )
    parts = split_by_query(df, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not texts(parts[a]) & texts(parts[b])
    assert [len(texts(parts[n])) for n in ("train", "val", "test")] == [18, 6, 6]


# --------------------------------------------------------------------------- DDP sharding


def shards(n: int, world: int, epoch: int, shuffle: bool, even: bool) -> list[list[int]]:
    out = []
    for rank in range(world):
        sampler = EpochSampler(n, shuffle, seed=7, num_replicas=world, rank=rank, even_shards=even)
        sampler.set_epoch(epoch)
        items = list(sampler)
        assert len(items) == len(sampler)
        assert {e for _, e in items} <= {epoch if shuffle else 0}
        out.append([i for i, _ in items])
    return out


@pytest.mark.parametrize("n", [10, 11])
def test_eval_shards_are_disjoint_and_cover_every_list_once(n: int) -> None:
    a, b = shards(n, world=2, epoch=3, shuffle=False, even=False)
    assert not set(a) & set(b)
    assert sorted(a + b) == list(range(n))
    assert abs(len(a) - len(b)) <= 1


def test_train_shards_are_disjoint_cover_and_follow_one_global_permutation() -> None:
    a, b = shards(10, world=2, epoch=0, shuffle=True, even=True)
    assert not set(a) & set(b) and sorted(a + b) == list(range(10))
    # Every rank drew the same permutation: interleaving the shards gives the 1-process order.
    (single,) = shards(10, world=1, epoch=0, shuffle=True, even=True)
    assert [x for pair in zip(a, b, strict=True) for x in pair] == single


def test_train_shards_reshuffle_per_epoch_and_are_reproducible() -> None:
    epoch0, epoch1 = shards(12, 2, 0, True, True), shards(12, 2, 1, True, True)
    assert epoch0 != epoch1
    assert epoch1 == shards(12, 2, 1, True, True)
    for epoch in (epoch0, epoch1):
        assert sorted(epoch[0] + epoch[1]) == list(range(12))


def test_uneven_train_shards_are_padded_to_equal_length() -> None:
    a, b = shards(7, world=2, epoch=0, shuffle=True, even=True)
    assert len(a) == len(b) == 4
    assert set(a) | set(b) == set(range(7))
    assert len(a) + len(b) - len(set(a) | set(b)) == 1  # one list seen twice


def test_eval_with_more_processes_than_lists_is_refused() -> None:
    with pytest.raises(ValueError, match=r"3 lists cannot be shared by 4 processes"):
        list(EpochSampler(3, shuffle=False, seed=0, num_replicas=4, rank=3))


def test_world_size_and_rank_come_from_torch_distributed(monkeypatch) -> None:
    sampler = EpochSampler(9, shuffle=False, seed=0)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
    assert [i for i, _ in sampler] == list(range(9))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, **k: 1)
    assert [i for i, _ in sampler] == [1, 3, 5, 7]
    assert len(sampler) == 4


def test_lightning_keeps_our_sampler_under_ddp(tmp_path, tokenizer) -> None:
    """Lightning replaces any sampler that is not a DistributedSampler under DDP."""
    assert issubclass(EpochSampler, DistributedSampler)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False
    )
    connector = trainer._data_connector  # private, but it is exactly the decision under test
    ours = DataLoader(list(range(4)), sampler=EpochSampler(4, shuffle=True, seed=0))
    plain = DataLoader(list(range(4)), shuffle=True)
    assert not connector._requires_distributed_sampler(ours)
    assert connector._requires_distributed_sampler(plain)


# --------------------------------------------------------------------------- real DDP run


class _Keys(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        return torch.tensor(key)


class _Recorder(L.LightningModule):
    """Records the (list_index, epoch) keys each rank receives; writes them at the end."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[str, int, int, int]] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        for index, epoch in batch.tolist():
            self.seen.append(("train", self.current_epoch, index, epoch))
        return self.weight.sum() ** 2

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        for index, epoch in batch.tolist():
            self.seen.append(("val", self.current_epoch, index, epoch))

    def on_fit_end(self) -> None:
        Path(self.out_dir, f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.slow
@pytest.mark.ddp
def test_lightning_ddp_ranks_see_disjoint_lists_reshuffled_per_epoch(tmp_path) -> None:
    """Two gloo processes (ddp_spawn): what each rank is actually fed, epoch by epoch."""
    n_train, n_val = 12, 7

    def loader(n: int, train: bool) -> DataLoader:
        sampler = EpochSampler(n, shuffle=train, seed=0, even_shards=train)
        return DataLoader(_Keys(n), batch_size=2, sampler=sampler)

    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(_Recorder(str(tmp_path)), loader(n_train, True), loader(n_val, False))
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    orders = []
    for epoch in range(3):
        train = [[(i, e) for s, ep, i, e in rank if s == "train" and ep == epoch] for rank in seen]
        a, b = ([i for i, _ in keys] for keys in train)
        assert not set(a) & set(b) and sorted(a + b) == list(range(n_train))
        # set_epoch reached our sampler: the keys carry the trainer's epoch.
        assert {e for keys in train for _, e in keys} == {epoch}
        orders.append(a)
        val = [[i for s, ep, i, _ in rank if s == "val" and ep == epoch] for rank in seen]
        assert not set(val[0]) & set(val[1]) and sorted(val[0] + val[1]) == list(range(n_val))
    assert orders[0] != orders[1] != orders[2]


# ------------------------------------------------------------------ the split kept with a run
def _table(n: int = 30) -> pl.DataFrame:
    ids = np.repeat(np.arange(n), 3)
    return pl.DataFrame(
        {
            "query_id": [f"{i:05d}" for i in ids],
            "query": [f"text {i % (n - 2)}" for i in ids],  # two texts under two ids each
            "product_id": [f"p{j}" for j in range(3 * n)],
        }
    ).with_row_index("__pair")


def test_a_stored_split_wins_over_another_seed_and_other_fractions(caplog) -> None:
    table = _table()
    trained = split_by_query(table, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=1)
    record = split_record(trained, "query")
    other = split_by_query(table, {"train": 0.4, "val": 0.1, "test": 0.5}, seed=9)
    with caplog.at_level(logging.INFO):
        kept = apply_stored_split(other, record, "run.ckpt")
    for name in ("train", "val", "test"):
        assert kept[name]["query_id"].to_list() == trained[name]["query_id"].to_list()
    assert split_record(kept, "query")["sha256"] == record["sha256"]
    assert "30 of 30 lists follow the split stored in run.ckpt" in caplog.text
    assert "the stored split is used" in caplog.text


def test_new_lists_keep_the_configured_split_unless_their_text_was_stored() -> None:
    table = _table()
    old = table.filter(pl.col("query_id") < "00020")
    trained = split_by_query(old, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=1)
    record = split_record(trained, "query")
    configured = split_by_query(table, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=5)
    kept = apply_stored_split(configured, record, "run.ckpt")
    split_of = {
        q: name for name, t in kept.items() for q in t.get_column("query_id").unique().to_list()
    }
    stored = {q: name for name, ids in record["query_ids"].items() for q in ids}
    text_split = {}
    for name, t in trained.items():
        text_split.update(dict.fromkeys(t.get_column("query").to_list(), name))
    for row in table.select("query_id", "query").unique().iter_rows():
        query_id, text = row
        if query_id in stored:
            assert split_of[query_id] == stored[query_id]
        elif text in text_split:  # a new id of a stored query text follows the text
            assert split_of[query_id] == text_split[text]
    assert kept["train"].height + kept["val"].height + kept["test"].height == table.height


def test_a_stored_split_that_no_longer_fits_the_data_is_refused() -> None:
    table = _table()
    trained = split_by_query(table, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=1)
    record = split_record(trained, "query")
    # The data now gives a train query and a test query the same text.
    train_id = trained["train"]["query_id"][0]
    test_text = trained["test"]["query"][0]
    changed = table.with_columns(
        pl.when(pl.col("query_id") == train_id)
        .then(pl.lit(test_text))
        .otherwise("query")
        .alias("query")
    )
    configured = split_by_query(changed, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=1)
    with pytest.raises(
        ConfigError, match=r"belongs to the test and train splits stored in m\.ckpt"
    ):
        apply_stored_split(configured, record, "m.ckpt")


def test_split_file_round_trip(tmp_path) -> None:
    trained = split_by_query(_table(), {"train": 0.6, "val": 0.2, "test": 0.2}, seed=1)
    record = split_record(trained, "query")
    frame = pl.read_parquet(write_split(record, tmp_path / "split.parquet"))
    assert frame.schema == {"query_id": pl.Utf8, "split": pl.Utf8}
    assert (
        sorted(frame.filter(pl.col("split") == "test")["query_id"]) == record["query_ids"]["test"]
    )
    assert "00001" in frame["query_id"].to_list()  # ids stay text
