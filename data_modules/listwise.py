"""Query-grouped lists, their sampling, and padding into ``[batch, list, tokens]`` tensors.

Padding convention (the one used everywhere in shoprank): a boolean ``mask`` of shape ``[B, L]``
is True for real items; labels at padded positions are 0 and must be ignored through the mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset, Sampler

from data_modules.tokenization import TokenizedPairs


@dataclass(frozen=True)
class QueryLists:
    """The lists of one split.

    Attributes:
        rows: Per list, indices into the tokenised pairs (and the label matrix) of its items.
        regions: ``[num_lists]`` region id of each list.
        query_ids: ``[num_lists]`` query_id of each list.
    """

    rows: list[np.ndarray]
    regions: np.ndarray
    query_ids: list[str]

    def __len__(self) -> int:
        return len(self.rows)


def group_lists(split: pl.DataFrame, region_index: dict[str, int]) -> QueryLists:
    """Group the rows of one split by query_id, keeping the table's row order inside each list.

    Args:
        split: Rows of one split; must carry ``__pair`` (row index into the tokenised pairs and the
            full label matrix), ``query_id`` and ``region``.
        region_index: Region name -> id.
    """
    grouped = (
        split.group_by("query_id", maintain_order=True)
        .agg(pl.col("__pair"), pl.col("region").first())
        .sort("query_id")
    )
    return QueryLists(
        rows=[np.asarray(r, dtype=np.int64) for r in grouped.get_column("__pair").to_list()],
        regions=np.asarray([region_index[r] for r in grouped.get_column("region")], dtype=np.int64),
        query_ids=grouped.get_column("query_id").to_list(),
    )


def select_items(labels: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Choose and order the items of one list: shuffled, at most ``cap``, positives kept first.

    Args:
        labels: ``[n, K]`` labels of the list's items.
        cap: Maximum list size (``None``: no cap).
        rng: Source of the shuffle.

    Returns:
        Positions (into the list) of the kept items in a random order. When truncating, every item
        with a positive label on some task is kept before any negative (a random subset of the
        positives if they alone exceed the cap).
    """
    n = len(labels)
    if cap is None or n <= cap:
        return rng.permutation(n)
    positive = labels.max(axis=1) > 0
    pos, neg = rng.permutation(np.flatnonzero(positive)), rng.permutation(np.flatnonzero(~positive))
    kept = np.concatenate([pos, neg])[:cap]
    return rng.permutation(kept)


class ListwiseDataset(Dataset):
    """One item per query list: the rows to score, their labels and the list's region.

    Indexed by ``(list_index, epoch)`` pairs from :class:`EpochSampler`, so that the items drawn and
    their order change every epoch yet are reproducible from ``seed`` (also in worker processes).
    """

    def __init__(
        self, lists: QueryLists, labels: np.ndarray, max_list_size: int | None, seed: int
    ) -> None:
        self.lists = lists
        self.labels = labels
        self.max_list_size = max_list_size
        self.seed = seed

    def __len__(self) -> int:
        return len(self.lists)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, np.ndarray | int]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        rows = self.lists.rows[index]
        rng = np.random.default_rng((self.seed, index, epoch))
        order = select_items(self.labels[rows], self.max_list_size, rng)
        rows = rows[order]
        return {
            "rows": rows,
            "labels": self.labels[rows],
            "region": int(self.lists.regions[index]),
            "list_index": index,
        }


class EpochSampler(Sampler):
    """Yields ``(list_index, epoch)``; shuffles the list order per epoch when ``shuffle``.

    Lightning calls ``set_epoch`` on a loader's sampler at the start of every epoch.
    """

    def __init__(self, num_lists: int, shuffle: bool, seed: int) -> None:
        self.num_lists = num_lists
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_lists

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = (
            np.random.default_rng((self.seed, self.epoch)).permutation(self.num_lists)
            if self.shuffle
            else np.arange(self.num_lists)
        )
        # Evaluation lists keep epoch 0: the same items in the same order in every epoch.
        epoch = self.epoch if self.shuffle else 0
        return iter([(int(i), epoch) for i in order])


class ListwiseCollator:
    """Pads a batch of lists into dense tensors, with dynamic padding of the token axis.

    Output (B lists, L = longest list in the batch, T = longest pair in the batch, K tasks):
        ``input_ids``/``token_type_ids``/``attention_mask``: ``[B, L, T]`` int64,
        ``mask``: ``[B, L]`` bool (True = real item), ``labels``: ``[B, L, K]`` float32
        (0 at padding), ``region``: ``[B]`` int64, ``list_index``: ``[B]`` int64 (index of the
        list in its split), ``rows``: ``[B, L]`` int64 (pair row of each item, -1 at padding).
    """

    def __init__(self, tokens: TokenizedPairs, pad_token_id: int) -> None:
        self.tokens = tokens
        self.pad_token_id = pad_token_id

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch_size = len(items)
        list_len = max(len(item["rows"]) for item in items)
        num_tasks = items[0]["labels"].shape[1]
        seq_len = max(int(self.tokens.lengths(item["rows"]).max()) for item in items)

        input_ids = np.full((batch_size, list_len, seq_len), self.pad_token_id, dtype=np.int64)
        type_ids = np.zeros((batch_size, list_len, seq_len), dtype=np.int64)
        attention = np.zeros((batch_size, list_len, seq_len), dtype=np.int64)
        mask = np.zeros((batch_size, list_len), dtype=bool)
        rows = np.full((batch_size, list_len), -1, dtype=np.int64)
        labels = np.zeros((batch_size, list_len, num_tasks), dtype=np.float32)
        offsets = self.tokens.offsets
        for b, item in enumerate(items):
            n = len(item["rows"])
            mask[b, :n] = True
            rows[b, :n] = item["rows"]
            labels[b, :n] = item["labels"]
            for i, row in enumerate(item["rows"]):
                start, end = offsets[row], offsets[row + 1]
                input_ids[b, i, : end - start] = self.tokens.ids[start:end]
                type_ids[b, i, : end - start] = self.tokens.type_ids[start:end]
                attention[b, i, : end - start] = 1
        return {
            "input_ids": torch.from_numpy(input_ids),
            "token_type_ids": torch.from_numpy(type_ids),
            "attention_mask": torch.from_numpy(attention),
            "mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels),
            "region": torch.tensor([item["region"] for item in items], dtype=torch.int64),
            "list_index": torch.tensor([item["list_index"] for item in items], dtype=torch.int64),
            "rows": torch.from_numpy(rows),
        }
