"""The listwise DataModule: canonical table -> validated -> tokenised once -> split -> lists."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from data_modules.describe import describe, label_distribution, summary
from data_modules.errors import ConfigError, DataValidationError
from data_modules.listwise import (
    EpochSampler,
    ListwiseCollator,
    ListwiseDataset,
    QueryLists,
    group_lists,
)
from data_modules.schema import DEFAULT_PRODUCT_FIELDS, TEXT_COLUMNS, product_text_expr
from data_modules.sources import FileSource, SyntheticSource, TableSource
from data_modules.splits import (
    apply_stored_split,
    split_by_query,
    split_predefined,
    split_record,
)
from data_modules.tokenization import TokenizedPairs, tokenize_pairs
from data_modules.validation import (
    DropReport,
    check_numeric_columns,
    column_names,
    validate_table,
)

log = logging.getLogger(__name__)


class ListwiseDataModule(L.LightningDataModule):
    """Query-grouped listwise batches from any :class:`TableSource`.

    Batches follow :class:`data_modules.listwise.ListwiseCollator`: ``input_ids [B, L, T]``,
    ``mask [B, L]``, ``labels [B, L, K]`` (K = ``len(label_columns)``, in task order),
    ``region [B]``, and ``region_features [B, L, F]`` when ``region_feature_columns`` names F > 0
    columns.

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
        splits: Fractions ``{"train": ..., "val": ..., "test": ...}`` of query groups. With
            ``split_column`` the test split comes from that column (``test`` must be 0) and
            ``val / (train + val)`` of the remaining query groups become validation.
        split_key: Column kept whole inside one split (default: the query text).
        split_column: Column holding a dataset's own split (``train``/``test``, e.g. ESCI's
            ``split``); ``None``: random split by ``split_key`` with ``seed``.
        seed: Seed of the split and of list sampling.
        cache_dir: Token cache directory; ``None`` disables caching.
        num_workers: DataLoader worker processes.
        product_text_fields: Columns joined (" ; ") into the product side of each pair.
        region_in_query: Prefix the query with its region ("eu | red shoes") so that a plain
            cross-encoder can learn region-specific preferences.
        engagement: Options of :class:`data_modules.engagement.EngagementSimulator`; when given,
            simulated position/click/add_to_cart/purchase are added to the table right after
            it is loaded (for data with graded relevance only). ``None``: the table's own labels.
        region_feature_columns: Numeric per-row columns fed to the MD region mask's gate (e.g.
            ``price``, or a region-level price index joined per row). Raw values go into the
            batches; their train-split mean and std (:meth:`region_feature_stats`) go into the
            model, which standardises them (so a checkpoint keeps its training statistics).
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
        split_column: str | None = None,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        num_workers: int = 0,
        product_text_fields: Sequence[str] = DEFAULT_PRODUCT_FIELDS,
        region_in_query: bool = True,
        engagement: Mapping[str, Any] | None = None,
        region_feature_columns: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if label_columns is not None and not label_columns:
            raise ConfigError("tasks.order is empty: name at least one task")
        for name, value in (("data.batch_size", batch_size), ("data.max_length", max_length)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        for name, value in (
            ("data.max_list_size", max_list_size),
            ("data.eval_max_list_size", eval_max_list_size),
        ):
            # A list of one item is always ranked perfectly: NDCG 1.0 whatever the model.
            if value is not None and value < 2:
                raise ConfigError(f"{name} must be >= 2 or null (whole lists), got {value}")
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
        self.split_column = split_column
        if split_column is not None and self.splits.get("test", 0.0) != 0.0:
            raise ConfigError(
                f"data.splits.test must be 0 when data.split_column is set ('{split_column}' "
                f"decides the test split); got splits {self.splits}"
            )
        self.engagement = None if engagement is None else dict(engagement)
        self.seed = seed
        self.cache_dir = cache_dir
        self.num_workers = num_workers
        self.product_text_fields = list(product_text_fields)
        self.region_in_query = region_in_query
        self.region_feature_columns = column_names(
            region_feature_columns, "data.region_feature_columns"
        )

        self.region_names: list[str] = []
        self.tokens: TokenizedPairs | None = None
        self.labels: np.ndarray | None = None
        # [num_pairs, F] float32 raw region feature values per pair row; None when F = 0.
        self.region_features: np.ndarray | None = None
        self.pair_features: np.ndarray | None = None
        self.pair_feature_names: list[str] = []
        self.lists: dict[str, QueryLists] = {}
        self.tables: dict[str, pl.DataFrame] = {}
        # The split of a trained model (ranking.serving.checkpoints /
        # data_modules.splits.split_record): when set, lists it knows keep their split whatever
        # data.seed and data.splits say.
        self.stored_split: dict[str, Any] | None = None
        self.stored_split_origin = ""
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
        product = table.select(product_text_expr(fields)).to_series()
        query = table.get_column("query")
        if self.region_in_query:
            query = table.select(pl.concat_str(["region", "query"], separator=" | ")).to_series()
        return query.to_list(), product.to_list()

    def setup(self, stage: str | None = None) -> None:
        """Load, validate, tokenise and split once; later calls are no-ops."""
        if self.tokens is not None:
            return
        if self.tokenizer is None or not self.label_columns:
            raise ConfigError("ListwiseDataModule.setup needs a tokenizer and label columns")
        raw = self._load()
        check_numeric_columns(raw, self.source.name, self.region_feature_columns)
        table, self.drop_report = validate_table(raw, self.source.name, self.label_columns)
        # What the adapter merged or removed comes first in the report (it happened first).
        adapter_report = getattr(self.source, "report", None)
        if isinstance(adapter_report, DropReport):
            self.drop_report.dropped = {**adapter_report.dropped, **self.drop_report.dropped}
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
        if self.region_feature_columns:
            self.region_features = (
                table.select(pl.col(self.region_feature_columns).cast(pl.Float64))
                .to_numpy()
                .astype(np.float32)
            )
        self.region_names = sorted(table.get_column("region").unique().to_list())
        region_index = {name: i for i, name in enumerate(self.region_names)}
        self.tables = self._split(table)
        self.lists = {name: group_lists(t, region_index) for name, t in self.tables.items()}

    def _load(self) -> pl.DataFrame:
        table = self.source.load()
        if self.engagement is None:
            return table
        # Lazy: only graded-only data needs the simulator.
        from data_modules.engagement import EngagementSimulator

        simulator = EngagementSimulator(**self.engagement)
        log.info("%s: simulated engagement with %r", self.source.name, simulator)
        return simulator.apply(table, self.source.name)

    def use_split(self, record: Mapping[str, Any] | None, origin: str) -> None:
        """Keep the split a model was trained with (call before :meth:`setup`).

        Args:
            record: The model's :func:`~data_modules.splits.split_record` (``None``: the model
                stores none, and the data is split by the config with a warning).
            origin: Where it comes from (the checkpoint), for the log.
        """
        if record is None:
            log.warning(
                "%s stores no data split (written before shoprank kept splits): the data is "
                "split by data.seed and data.splits, which must be the training run's",
                origin,
            )
        self.stored_split = None if record is None else dict(record)
        self.stored_split_origin = origin

    def split_record(self) -> dict[str, Any]:
        """The split of this data (after :meth:`setup`), to store with a model trained on it."""
        return split_record(self.tables, self.split_key)

    def _split(self, table: pl.DataFrame) -> dict[str, pl.DataFrame]:
        tables = self._configured_split(table)
        if self.stored_split is None:
            return tables
        return apply_stored_split(
            tables, self.stored_split, self.stored_split_origin, self.source.name
        )

    def _configured_split(self, table: pl.DataFrame) -> dict[str, pl.DataFrame]:
        if self.split_column is None:
            return split_by_query(table, self.splits, self.seed, self.split_key)
        train, val = self.splits.get("train", 0.0), self.splits.get("val", 0.0)
        if train + val <= 0:
            raise ConfigError(
                f"data.splits must give train or val a positive share, got {self.splits}"
            )
        return split_predefined(
            table,
            self.split_column,
            val / (train + val),
            self.seed,
            self.split_key,
            self.source.name,
        )

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
            # Shards itself across DDP ranks (Lightning leaves a DistributedSampler alone).
            sampler=EpochSampler(len(lists), shuffle=train, seed=self.seed, even_shards=train),
            collate_fn=ListwiseCollator(
                self.tokens, self.tokenizer.pad_token_id, self.region_features, self.pair_features
            ),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # Each iterator draws a base seed (for worker seeding) from this generator instead of
            # torch's global one, so dropout's random stream is the model's alone and a resumed
            # run continues it exactly (callbacks.resume.ResumeRandomState).
            generator=torch.Generator().manual_seed(self.seed),
        )

    def set_pair_features(self, names: Sequence[str], values: np.ndarray) -> None:
        """Attach per-pair prior features (e.g. a first-stage retriever's score) to the batches.

        Args:
            names: The P feature names, in column order.
            values: ``[num_pairs, P]`` finite values, one row per pair row of this DataModule.

        Raises:
            DataValidationError: the shape does not match the pairs, or a value is not finite.
        """
        values = np.asarray(values, dtype=np.float32)
        if self.tokens is None:
            raise ConfigError("set_pair_features needs a set-up DataModule (call setup first)")
        expected = (len(self.tokens), len(names))
        if values.shape != expected:
            raise DataValidationError(
                f"pair features {list(names)}: expected shape {expected}, got {values.shape}"
            )
        if not np.isfinite(values).all():
            raise DataValidationError(f"pair features {list(names)}: non-finite values")
        self.pair_features, self.pair_feature_names = values, list(names)

    def eval_dataloader(self, split: str) -> DataLoader:
        """Whole lists of ``split`` in a fixed order, for evaluation and prediction."""
        return self._loader(split, train=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def region_feature_stats(self) -> dict[str, list]:
        """Mean and standard deviation of each region feature column over the TRAIN split rows.

        ``mean_f = (1/n) sum_i x_if``, ``std_f = sqrt((1/n) sum_i (x_if - mean_f)^2)`` (population
        std, ddof 0) over the n rows of the train split (every impression counts once). The model
        stores them (``region_mask.feature_mean/feature_std``) and standardises with them.

        Returns:
            ``{"columns": [...], "mean": [F floats], "std": [F floats]}`` (empty lists when F = 0).

        Raises:
            ConfigError: ``setup`` has not run, or there is no train split to fit them on.
        """
        columns = self.region_feature_columns
        if not columns:
            return {"columns": [], "mean": [], "std": []}
        if "train" not in self.tables:
            raise ConfigError(
                "data.region_feature_columns: the feature statistics come from the train split, "
                f"and there is none (splits: {sorted(self.tables) or 'setup() not run'})"
            )
        train = self.tables["train"].select(pl.col(columns).cast(pl.Float64))
        return {
            "columns": list(columns),
            "mean": [float(v) for v in train.mean().row(0)],
            "std": [float(v) for v in train.std(ddof=0).row(0)],
        }

    # ------------------------------------------------------------------ reporting
    def describe(self) -> pl.DataFrame:
        """Per split and region: lists, rows, list lengths, label statistics (:func:`describe`)."""
        return describe(self.tables, self.label_columns)

    def label_distribution(self, max_values: int = 8) -> pl.DataFrame:
        """Share of each graded label value per split and region (:func:`label_distribution`)."""
        return label_distribution(self.tables, self.label_columns, max_values)

    def summary(self) -> str:
        """:meth:`describe`, the label distribution and the drop report, as printable text."""
        return summary(self.source.name, self.tables, self.label_columns, self.drop_report)


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
        region: Region of every row when the file has no ``region`` column (one market).
        **kwargs: Options of :class:`ListwiseDataModule`.
    """

    def __init__(
        self,
        path: str,
        encoding: str = "utf8",
        rename: Mapping[str, str] | None = None,
        region: str = "default",
        **kwargs,
    ) -> None:
        source = FileSource(path, encoding=encoding, rename=dict(rename or {}), region=region)
        super().__init__(source=source, **kwargs)
