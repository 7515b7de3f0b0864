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
from torch.utils.data import Dataset, DistributedSampler

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


class EpochSampler(DistributedSampler):
    """Yields ``(list_index, epoch)``: this rank's share of the lists, reshuffled every epoch.

    Every rank draws the same permutation of all lists from ``(seed, epoch)`` and keeps the
    positions ``rank, rank + W, rank + 2W, ...`` (W = world size), so ranks see disjoint lists that
    together cover every list, in a new order each epoch. With ``even_shards`` (training) the
    permutation is first extended by its own first items to a multiple of W, so every rank runs
    the same number of batches (DDP's gradient all-reduce needs that); at most W - 1 lists are then
    seen twice in an epoch. Without it (evaluation) every list is scored exactly once and shards
    differ by at most one list; metrics are sum/count states reduced over ranks, so the result
    equals the single-process one.

    Why a :class:`~torch.utils.data.DistributedSampler` subclass: with ``use_distributed_sampler``
    (the default) Lightning replaces any other sampler under DDP by a
    ``DistributedSamplerWrapper`` that pads *evaluation* shards with repeated lists (biasing
    metrics) and would shard a self-sharding sampler a second time; a ``DistributedSampler`` is
    left as it is. Lightning calls :meth:`set_epoch` on it at the start of every epoch.

    The world size and rank are read from ``torch.distributed`` when iterating (the process group
    exists by then), unless given explicitly (tests, or sharding outside a process group).

    Resuming mid-epoch: :meth:`load_state_dict` ``{"epoch": e, "start": n}`` makes the next
    iteration over epoch ``e`` skip the first ``n`` items of this rank's shard (the batches a
    checkpoint had already trained on), so a resumed run sees exactly the batches an uninterrupted
    one would. Lightning only fast-forwards *DataLoaders* that have ``state_dict`` (it does not
    look at samplers); :class:`callbacks.resume.ResumeDataOrder` calls this method from the
    restored loop progress instead. ``len()`` stays the full shard: Lightning's own batch counter
    resumes at the restored position and counts the skipped batches as done.

    Args:
        num_lists: Number of lists in the split.
        shuffle: Reshuffle the order every epoch (training); else the index order, epoch 0.
        seed: Seed of the permutation (the same on every rank).
        num_replicas: World size; ``None``: from ``torch.distributed`` (1 when not initialised).
        rank: This process's rank; ``None``: from ``torch.distributed`` (0 when not initialised).
        even_shards: Pad to equal shard lengths (see above).
    """

    def __init__(
        self,
        num_lists: int,
        shuffle: bool,
        seed: int,
        num_replicas: int | None = None,
        rank: int | None = None,
        even_shards: bool = False,
    ) -> None:
        # DistributedSampler.__init__ is not called: it needs a dataset and an initialised
        # process group now; this sampler resolves the group lazily instead.
        if num_replicas is not None and num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        if rank is not None and not 0 <= rank < (num_replicas or rank + 1):
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.num_lists = num_lists
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.drop_last = False
        self.even_shards = even_shards
        self._num_replicas = num_replicas
        self._rank = rank
        self._start = 0  # items of this rank's shard to skip in epoch `self._start_epoch`
        self._start_epoch = 0

    @property
    def num_replicas(self) -> int:
        if self._num_replicas is not None:
            return self._num_replicas
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size()
        return 1

    @property
    def rank(self) -> int:
        if self._rank is not None:
            return self._rank
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank()
        return 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self._start_epoch:
            self._start = 0  # a resume position belongs to its own epoch only
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "start"}``: the epoch and the items of this rank's shard the next iteration
        skips (0 unless a resume position was loaded for this epoch and not yet used)."""
        return {"epoch": self.epoch, "start": self._start}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at item ``state["start"]`` of this rank's shard of epoch ``state["epoch"]``.

        The skip applies once, to the next iteration over that epoch; later epochs start at 0.
        """
        epoch, start = int(state["epoch"]), int(state["start"])
        if epoch < 0 or start < 0:
            raise ValueError(f"resume position must be non-negative, got {state}")
        self.epoch, self._start_epoch, self._start = epoch, epoch, start

    def _indices(self) -> np.ndarray:
        order = (
            np.random.default_rng((self.seed, self.epoch)).permutation(self.num_lists)
            if self.shuffle
            else np.arange(self.num_lists)
        )
        world = self.num_replicas
        if self.even_shards and self.num_lists % world:
            extra = world - self.num_lists % world
            order = np.concatenate([order, np.resize(order, extra)])
        return order[self.rank :: world]

    def __len__(self) -> int:
        world, n = self.num_replicas, self.num_lists
        if self.even_shards:
            return -(-n // world)
        return len(range(self.rank, n, world))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if not self.even_shards and self.num_lists < self.num_replicas:
            # A rank without a batch would never join the epoch-end reduction of the others.
            raise ValueError(
                f"{self.num_lists} lists cannot be shared by {self.num_replicas} processes: "
                "use fewer devices or more evaluation data"
            )
        # Evaluation lists keep epoch 0: the same items in the same order in every epoch.
        epoch = self.epoch if self.shuffle else 0
        indices = self._indices()
        if self._start:
            indices, self._start = indices[self._start :], 0  # a resume position is used once
        return iter([(int(i), epoch) for i in indices])


def list_fields(items: Sequence[dict]) -> dict[str, np.ndarray]:
    """The list-level fields every listwise batch carries, padded to the longest list.

    Returns numpy arrays ``mask [B, L]`` bool, ``rows [B, L]`` int64 (-1 at padding),
    ``labels [B, L, K]`` float32 (0 at padding), ``region [B]`` and ``list_index [B]`` int64.
    """
    batch_size = len(items)
    list_len = max(len(item["rows"]) for item in items)
    num_tasks = items[0]["labels"].shape[1]
    mask = np.zeros((batch_size, list_len), dtype=bool)
    rows = np.full((batch_size, list_len), -1, dtype=np.int64)
    labels = np.zeros((batch_size, list_len, num_tasks), dtype=np.float32)
    for b, item in enumerate(items):
        n = len(item["rows"])
        mask[b, :n], rows[b, :n], labels[b, :n] = True, item["rows"], item["labels"]
    return {
        "mask": mask,
        "rows": rows,
        "labels": labels,
        "region": np.asarray([item["region"] for item in items], dtype=np.int64),
        "list_index": np.asarray([item["list_index"] for item in items], dtype=np.int64),
    }


class ListwiseCollator:
    """Pads a batch of lists into dense tensors, with dynamic padding of the token axis.

    Output (B lists, L = longest list in the batch, T = longest pair in the batch, K tasks):
        ``input_ids``/``token_type_ids``/``attention_mask``: ``[B, L, T]`` int64,
        ``mask``: ``[B, L]`` bool (True = real item), ``labels``: ``[B, L, K]`` float32
        (0 at padding), ``region``: ``[B]`` int64, ``list_index``: ``[B]`` int64 (index of the
        list in its split), ``rows``: ``[B, L]`` int64 (pair row of each item, -1 at padding),
        and only when ``region_features`` has F > 0 columns: ``region_features``: ``[B, L, F]``
        float32 (the raw values of the items' pair rows, 0 at padding); likewise
        ``pair_features``: ``[B, L, P]`` float32 when ``pair_features`` has P > 0 columns (a
        first-stage score per pair that a model with a score prior adds to its own).

    Args:
        tokens: The tokenised pairs.
        pad_token_id: Token id that fills padded positions.
        region_features: ``[num_pairs, F]`` feature values per pair row, or ``None``.
        pair_features: ``[num_pairs, P]`` prior feature values per pair row, or ``None``.
    """

    def __init__(
        self,
        tokens: TokenizedPairs,
        pad_token_id: int,
        region_features: np.ndarray | None = None,
        pair_features: np.ndarray | None = None,
    ) -> None:
        self.tokens = tokens
        self.pad_token_id = pad_token_id
        if region_features is not None:
            if region_features.ndim != 2:
                raise ValueError(
                    f"region_features must be [num_pairs, F], got {region_features.shape}"
                )
            if region_features.shape[1] == 0:
                region_features = None  # F = 0: batches stay exactly as without features
        self.region_features = region_features
        if pair_features is not None and pair_features.ndim != 2:
            raise ValueError(f"pair_features must be [num_pairs, P], got {pair_features.shape}")
        self.pair_features = (
            None if pair_features is None or not pair_features.shape[1] else (pair_features)
        )

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        fields = list_fields(items)
        batch_size, list_len = fields["mask"].shape
        seq_len = max(int(self.tokens.lengths(item["rows"]).max()) for item in items)

        input_ids = np.full((batch_size, list_len, seq_len), self.pad_token_id, dtype=np.int64)
        type_ids = np.zeros((batch_size, list_len, seq_len), dtype=np.int64)
        attention = np.zeros((batch_size, list_len, seq_len), dtype=np.int64)
        offsets = self.tokens.offsets
        for b, item in enumerate(items):
            for i, row in enumerate(item["rows"]):
                start, end = offsets[row], offsets[row + 1]
                input_ids[b, i, : end - start] = self.tokens.ids[start:end]
                type_ids[b, i, : end - start] = self.tokens.type_ids[start:end]
                attention[b, i, : end - start] = 1
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "token_type_ids": torch.from_numpy(type_ids),
            "attention_mask": torch.from_numpy(attention),
            **{name: torch.from_numpy(value) for name, value in fields.items()},
        }
        for key in ("region_features", "pair_features"):
            values = getattr(self, key)
            if values is None:
                continue
            features = np.zeros((batch_size, list_len, values.shape[1]), dtype=np.float32)
            for b, item in enumerate(items):
                features[b, : len(item["rows"])] = values[item["rows"]]
            batch[key] = torch.from_numpy(features)
        return batch
