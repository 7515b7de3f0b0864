"""The listwise DataModule: canonical table -> validated -> tokenised once -> split -> lists."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning.pytorch as pl_light
import numpy as np
import polars as pl
from torch.utils.data import DataLoader
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from data_modules.listwise import (
    EpochSampler,
    ListwiseCollator,
    ListwiseDataset,
    QueryLists,
    group_lists,
)
from data_modules.schema import TEXT_COLUMNS
from data_modules.sources import FileSource, SyntheticSource, TableSource
from data_modules.splits import split_by_query
from data_modules.tokenization import TokenizedPairs, tokenize_pairs
from data_modules.validation import DropReport, validate_table
from ranking.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PRODUCT_FIELDS = ("product_title", "product_brand", "product_color")


class ListwiseDataModule(pl_light.LightningDataModule):
    """Query-grouped listwise batches from any :class:`TableSource`.

    Batches follow :class:`data_modules.listwise.ListwiseCollator`: ``input_ids [B, L, T]``,
    ``mask [B, L]``, ``labels [B, L, K]`` (K = ``len(label_columns)``, in task order),
    ``region [B]``.

    Args:
        source: Where the canonical table comes from.
        tokenizer: Tokenizer of the encoder that will score the pairs (needed by ``setup``; a
            DataModule built without one still gives its ``source``, e.g. for pretraining).
        label_columns: One label column per task, in task order (needed by ``setup``).
        max_length: Maximum tokens per (query, product) pair.
        max_list_size: Cap on training lists (positives kept first); ``None``: whole lists.
        eval_max_list_size: Cap on val/test lists; ``None`` (default) evaluates whole lists.
        batch_size: Lists per training batch.
        eval_batch_size: Lists per val/test batch.
        splits: Fractions ``{"train": ..., "val": ..., "test": ...}`` of query groups.
        split_key: Column kept whole inside one split (default: the query text).
        seed: Seed of the split and of list sampling.
        cache_dir: Token cache directory; ``None`` disables caching.
        num_workers: DataLoader worker processes.
        product_text_fields: Columns joined (" ; ") into the product side of each pair.
        region_in_query: Prefix the query with its region ("eu | red shoes") so that a plain
            cross-encoder can learn region-specific preferences.
    """

    def __init__(
        self,
        source: TableSource,
        tokenizer: PreTrainedTokenizerBase | None = None,
        label_columns: Sequence[str] | None = None,
        max_length: int = 64,
        max_list_size: int | None = None,
        eval_max_list_size: int | None = None,
        batch_size: int = 8,
        eval_batch_size: int = 16,
        splits: Mapping[str, float] | None = None,
        split_key: str = "query",
        seed: int = 0,
        cache_dir: str | Path | None = None,
        num_workers: int = 0,
        product_text_fields: Sequence[str] = DEFAULT_PRODUCT_FIELDS,
        region_in_query: bool = True,
    ) -> None:
        super().__init__()
        if label_columns is not None and not label_columns:
            raise ConfigError("tasks.order is empty: name at least one task")
        for name, value in (("data.batch_size", batch_size), ("data.max_length", max_length)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if max_list_size is not None and max_list_size < 2:
            raise ConfigError(f"data.max_list_size must be >= 2 or null, got {max_list_size}")
        self.source = source
        self.tokenizer = tokenizer
        self.label_columns = list(label_columns or [])
        self.max_length = max_length
        self.max_list_size = max_list_size
        self.eval_max_list_size = eval_max_list_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.splits = dict(splits or {"train": 0.8, "val": 0.1, "test": 0.1})
        self.split_key = split_key
        self.seed = seed
        self.cache_dir = cache_dir
        self.num_workers = num_workers
        self.product_text_fields = list(product_text_fields)
        self.region_in_query = region_in_query

        self.region_names: list[str] = []
        self.tokens: TokenizedPairs | None = None
        self.labels: np.ndarray | None = None
        self.lists: dict[str, QueryLists] = {}
        self.tables: dict[str, pl.DataFrame] = {}
        self.drop_report: DropReport | None = None
        # Raw (query, product) text of every pair row, for text baselines such as BM25.
        self.pair_texts: pl.DataFrame | None = None

    # ------------------------------------------------------------------ building
    def _pair_texts(self, table: pl.DataFrame) -> tuple[list[str], list[str]]:
        unknown = [c for c in self.product_text_fields if c not in table.columns]
        # Optional canonical text columns may be absent from a file; anything else is a typo.
        typos = [c for c in unknown if c not in TEXT_COLUMNS]
        if typos:
            raise ConfigError(
                f"data.product_text_fields names column(s) {typos} absent from {self.source.name}"
            )
        fields = [c for c in self.product_text_fields if c in table.columns]
        product = table.select(
            pl.concat_str([pl.col(c).fill_null("") for c in fields], separator=" ; ")
            .str.replace_all(r"( ; )+$", "")
            .str.replace_all(r"( ; ){2,}", " ; ")
        ).to_series()
        query = table.get_column("query")
        if self.region_in_query:
            query = table.select(pl.format("{} | {}", "region", "query")).to_series()
        return query.to_list(), product.to_list()

    def setup(self, stage: str | None = None) -> None:
        """Load, validate, tokenise and split once; later calls are no-ops."""
        if self.tokens is not None:
            return
        if self.tokenizer is None or not self.label_columns:
            raise ConfigError("ListwiseDataModule.setup needs a tokenizer and label columns")
        table, self.drop_report = validate_table(
            self.source.load(), self.source.name, self.label_columns
        )
        log.info(self.drop_report.summary())
        table = table.with_row_index("__pair")
        queries, products = self._pair_texts(table)
        self.pair_texts = pl.DataFrame(
            {"query": table.get_column("query").to_list(), "product": products}
        )
        self.tokens = tokenize_pairs(
            self.tokenizer, queries, products, self.max_length, self.cache_dir
        )
        self.labels = table.select(self.label_columns).to_numpy().astype(np.float32)
        self.region_names = sorted(table.get_column("region").unique().to_list())
        region_index = {name: i for i, name in enumerate(self.region_names)}
        self.tables = split_by_query(table, self.splits, self.seed, self.split_key)
        self.lists = {name: group_lists(t, region_index) for name, t in self.tables.items()}

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.lists:
            raise ConfigError(f"data.splits gives no '{split}' split (splits: {self.splits})")
        lists = self.lists[split]
        cap = self.max_list_size if train else self.eval_max_list_size
        # Val/test lists are shuffled once with a fixed seed: score ties then cannot inherit the
        # logging policy's order from the file.
        dataset = ListwiseDataset(lists, self.labels, cap, seed=self.seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=EpochSampler(len(lists), shuffle=train, seed=self.seed),
            collate_fn=ListwiseCollator(self.tokens, self.tokenizer.pad_token_id),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def eval_dataloader(self, split: str) -> DataLoader:
        """Whole lists of ``split`` in a fixed order, for evaluation and prediction."""
        return self._loader(split, train=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    # ------------------------------------------------------------------ reporting
    def describe(self) -> pl.DataFrame:
        """Per split and region: queries, rows, mean list length and positive rate per label."""
        frames = []
        for name, table in self.tables.items():
            frames.append(
                table.group_by("region")
                .agg(
                    pl.col("query_id").n_unique().alias("queries"),
                    pl.len().alias("rows"),
                    *[pl.col(c).gt(0).mean().round(3).alias(f"{c}>0") for c in self.label_columns],
                )
                .with_columns(
                    pl.lit(name).alias("split"),
                    (pl.col("rows") / pl.col("queries")).round(1).alias("mean_list"),
                )
            )
        return (
            pl.concat(frames)
            .select(
                "split",
                "region",
                "queries",
                "rows",
                "mean_list",
                pl.exclude("split", "region", "queries", "rows", "mean_list"),
            )
            .sort("split", "region")
        )


class SyntheticDataModule(ListwiseDataModule):
    """:class:`ListwiseDataModule` over the embedded synthetic multi-region generator.

    Args:
        generator: Fields of :class:`data_modules.synthetic.SyntheticConfig`.
        **kwargs: Options of :class:`ListwiseDataModule`.
    """

    def __init__(self, generator: Mapping[str, object] | None = None, **kwargs) -> None:
        super().__init__(source=SyntheticSource(**dict(generator or {})), **kwargs)


class FileDataModule(ListwiseDataModule):
    """:class:`ListwiseDataModule` over a canonical parquet/CSV file.

    Args:
        path: The file.
        encoding: CSV text encoding.
        rename: ``{column in file: canonical column}``.
        **kwargs: Options of :class:`ListwiseDataModule`.
    """

    def __init__(
        self, path: str, encoding: str = "utf8", rename: Mapping[str, str] | None = None, **kwargs
    ) -> None:
        super().__init__(
            source=FileSource(path, encoding=encoding, rename=dict(rename or {})), **kwargs
        )
