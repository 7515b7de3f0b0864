"""The bi-encoder student's data: its own tokens of each pair's query and product, in batches.

The student (:class:`ranking.modules.bi_encoder.BiEncoderModule`) reads the query and the
product apart, each at its own length: :func:`build_student_texts` tokenises each unique text of
a set-up :class:`~data_modules.ListwiseDataModule` once (:class:`StudentTexts`), and
:class:`BiEncoderCollator` pads the lists of pair rows into batches

    query_input_ids / query_attention_mask      [B, Tq]     (one query per list)
    product_input_ids / product_attention_mask  [B, L, Tp]
    mask [B, L], labels [B, L, K], region [B], list_index [B], rows [B, L]
    teacher_scores [B, L, K]                    (training batches of a distillation run)

that :class:`StudentDataModule` serves for the same lists as the wrapped DataModule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from data_modules.errors import ConfigError, DataValidationError
from data_modules.listwise import EpochSampler, ListwiseDataset, list_fields
from data_modules.tokenization import tokenizer_fingerprint

_TOKEN_CHUNK = 4096


# ---------------------------------------------------------------------------------------- texts
@dataclass(frozen=True)
class RaggedTokens:
    """Token ids of N texts, text ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    ids: np.ndarray  # [total] int32
    offsets: np.ndarray  # [N + 1] int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def pad(self, index: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids [n, T], attention_mask [n, T])`` int64 of texts ``index``, T = longest."""
        index = np.asarray(index, dtype=np.int64)
        lengths = self.offsets[index + 1] - self.offsets[index]
        width = max(1, int(lengths.max(initial=0)))
        ids = np.full((len(index), width), pad_id, dtype=np.int64)
        attention = np.zeros((len(index), width), dtype=np.int64)
        for i, (text, n) in enumerate(zip(index, lengths, strict=True)):
            start = self.offsets[text]
            ids[i, :n] = self.ids[start : start + n]
            attention[i, :n] = 1
        return ids, attention


def tokenize_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> RaggedTokens:
    """Tokenise single texts (``[CLS] text [SEP]``, truncated to ``max_length``) into ragged ids."""
    parts, lengths = [], []
    for start in range(0, len(texts), _TOKEN_CHUNK):
        encoded = tokenizer(
            list(texts[start : start + _TOKEN_CHUNK]),
            truncation=True,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        parts += [np.asarray(ids, dtype=np.int32) for ids in encoded]
        lengths += [len(ids) for ids in encoded]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return RaggedTokens(ids, offsets)


def pair_table(datamodule: Any) -> pl.DataFrame:
    """One row per pair row of a set-up datamodule, in pair-row order.

    Columns: ``pair`` (row into ``datamodule.pair_texts`` / ``labels``), ``split``, ``query_id``,
    ``product_id``, ``region``, ``query`` (raw text), ``product`` (the product text the
    cross-encoder reads). Rows outside every split are absent.
    """
    if datamodule.pair_texts is None or not datamodule.tables:
        raise ConfigError("the datamodule must be set up (datamodule.setup()) before use")
    frames = [
        table.select(
            pl.col("__pair").cast(pl.Int64).alias("pair"),
            pl.lit(name).alias("split"),
            "query_id",
            "product_id",
            "region",
        )
        for name, table in datamodule.tables.items()
    ]
    texts = datamodule.pair_texts.with_row_index("pair").with_columns(pl.col("pair").cast(pl.Int64))
    return pl.concat(frames).join(texts, on="pair", how="left").sort("pair")


def student_query_text(query: pl.Expr, region: pl.Expr, region_prefix: bool) -> pl.Expr:
    """The student's query text: ``"{region} | {query}"`` (as the cross-encoder's) or the query."""
    return pl.concat_str([region, pl.lit(" | "), query]) if region_prefix else query


@dataclass(frozen=True)
class StudentTexts:
    """The student's tokens: unique query texts, a product catalogue, and per-pair indices.

    Attributes:
        queries: Tokens of the unique query texts (region-prefixed when the model expects it).
        query_texts: Those texts.
        products: Tokens of the catalogue, one entry per unique (product_id, product text).
        product_ids: ``product_id`` of each catalogue entry.
        product_texts: Text of each catalogue entry.
        pair_query: ``[num_pairs]`` query text of each pair row (-1: row in no split).
        pair_product: ``[num_pairs]`` catalogue entry of each pair row (-1: row in no split).
        key: Hash of the tokenizer, lengths and every text.
        product_key: Hash of the tokenizer, product length and catalogue (ids and texts): names
            saved product vectors, which stay valid for any queries.
    """

    queries: RaggedTokens
    query_texts: list[str]
    products: RaggedTokens
    product_ids: list[str]
    product_texts: list[str]
    pair_query: np.ndarray
    pair_product: np.ndarray
    key: str
    product_key: str


def build_student_texts(
    datamodule: Any,
    tokenizer: PreTrainedTokenizerBase,
    query_max_length: int,
    product_max_length: int,
    query_region_prefix: bool = True,
) -> StudentTexts:
    """Tokenise each unique query text and each unique product of a set-up datamodule once.

    Tokenising unique texts (a few thousand queries and products for a table of tens of thousands
    of pairs) takes well under a second with a fast tokenizer, so nothing is cached on disk.

    Args:
        datamodule: A set-up :class:`data_modules.datamodule.ListwiseDataModule`.
        tokenizer: The student's tokenizer.
        query_max_length: Token cap of a query.
        product_max_length: Token cap of a product text.
        query_region_prefix: Prefix queries with their region (``"eu | red shoes"``).

    Raises:
        DataValidationError: A product_id carries an empty text.
    """
    pairs = pair_table(datamodule).with_columns(
        student_query_text(pl.col("query"), pl.col("region"), query_region_prefix).alias("qtext")
    )
    empty = pairs.filter(pl.col("product").str.strip_chars() == "")
    if empty.height:
        raise DataValidationError(
            f"{datamodule.source.name}: {empty.height} pair rows have an empty product text "
            f"(first product_id {empty.get_column('product_id')[0]!r}); check "
            "data.product_text_fields"
        )
    query_texts = pairs.get_column("qtext").unique().sort()
    catalogue = pairs.select("product_id", "product").unique().sort("product_id", "product")
    pairs = pairs.join(
        query_texts.to_frame("qtext").with_row_index("q"), on="qtext", how="left"
    ).join(catalogue.with_row_index("p"), on=["product_id", "product"], how="left")
    num_pairs = len(datamodule.pair_texts)
    pair_query = np.full(num_pairs, -1, dtype=np.int64)
    pair_product = np.full(num_pairs, -1, dtype=np.int64)
    rows = pairs.get_column("pair").to_numpy()
    pair_query[rows] = pairs.get_column("q").to_numpy()
    pair_product[rows] = pairs.get_column("p").to_numpy()

    fingerprint = tokenizer_fingerprint(tokenizer)
    product_digest = hashlib.sha256(f"{fingerprint}|{product_max_length}|".encode())
    for pid, text in catalogue.iter_rows():
        product_digest.update(f"{pid}\x1f{text}\x1e".encode())
    digest = hashlib.sha256(f"{product_digest.hexdigest()}|{query_max_length}|".encode())
    for text in query_texts.to_list():
        digest.update(f"{text}\x1e".encode())
    return StudentTexts(
        queries=tokenize_texts(tokenizer, query_texts.to_list(), query_max_length),
        query_texts=query_texts.to_list(),
        products=tokenize_texts(
            tokenizer, catalogue.get_column("product").to_list(), product_max_length
        ),
        product_ids=catalogue.get_column("product_id").to_list(),
        product_texts=catalogue.get_column("product").to_list(),
        pair_query=pair_query,
        pair_product=pair_product,
        key=digest.hexdigest()[:24],
        product_key=product_digest.hexdigest()[:24],
    )


# ---------------------------------------------------------------------------------------- batches
class BiEncoderCollator:
    """Pads lists of pair rows into a bi-encoder batch (see the module docstring).

    Args:
        texts: The student's tokens.
        pad_token_id: The student tokenizer's padding id.
        teacher_scores: ``[num_pairs, K]`` cached teacher scores; adds ``teacher_scores
            [B, L, K]`` (0 at padding) to every batch.

    Raises (when called):
        DataValidationError: A list's item has no teacher score (NaN in the cache: the row was
            not scored) or no student tokens.
    """

    def __init__(
        self, texts: StudentTexts, pad_token_id: int, teacher_scores: np.ndarray | None = None
    ) -> None:
        self.texts = texts
        self.pad_token_id = pad_token_id
        self.teacher_scores = teacher_scores

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        fields = list_fields(items)
        mask, rows = fields["mask"], fields["rows"]
        batch_size, list_len = mask.shape
        query_index = self.texts.pair_query[[int(item["rows"][0]) for item in items]]
        product_index = self.texts.pair_product[rows[mask]]
        if (query_index < 0).any() or (product_index < 0).any():
            raise DataValidationError("a batch holds pair rows the student has no tokens for")
        q_ids, q_att = self.texts.queries.pad(query_index, self.pad_token_id)
        p_flat, p_att_flat = self.texts.products.pad(product_index, self.pad_token_id)
        p_ids = np.full((batch_size, list_len, p_flat.shape[1]), self.pad_token_id, np.int64)
        p_att = np.zeros_like(p_ids)
        p_ids[mask], p_att[mask] = p_flat, p_att_flat
        batch = {
            "query_input_ids": torch.from_numpy(q_ids),
            "query_attention_mask": torch.from_numpy(q_att),
            "product_input_ids": torch.from_numpy(p_ids),
            "product_attention_mask": torch.from_numpy(p_att),
            **{name: torch.from_numpy(value) for name, value in fields.items()},
        }
        if self.teacher_scores is not None:
            teacher = np.zeros((batch_size, list_len, self.teacher_scores.shape[1]), np.float32)
            teacher[mask] = self.teacher_scores[rows[mask]]
            if np.isnan(teacher[mask]).any():
                raise DataValidationError(
                    "teacher scores are missing for some training pair rows (the teacher-score "
                    "cache was built for other splits)"
                )
            batch["teacher_scores"] = torch.from_numpy(teacher)
        return batch


class StudentDataModule(L.LightningDataModule):
    """The lists of a set-up :class:`ListwiseDataModule`, batched for the bi-encoder.

    Same lists, caps, seeds and per-epoch sampling as the wrapped datamodule; the training loader
    adds ``teacher_scores`` looked up by pair row, so scores follow items however lists are
    sampled or capped.

    Args:
        data: The set-up listwise datamodule.
        texts: The student's tokens of ``data``'s pairs.
        pad_token_id: The student tokenizer's padding id.
        teacher_scores: ``[num_pairs, K]`` or ``None`` (no distillation).
    """

    def __init__(
        self,
        data: Any,
        texts: StudentTexts,
        pad_token_id: int,
        teacher_scores: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.data = data
        self.texts = texts
        self.pad_token_id = pad_token_id
        self.teacher_scores = teacher_scores

    @property
    def region_names(self) -> list[str]:
        return self.data.region_names

    def loader(self, split: str, train: bool = False) -> DataLoader:
        data = self.data
        if split not in data.lists:
            raise ConfigError(f"data.splits gives no '{split}' split (splits: {data.splits})")
        lists = data.lists[split]
        cap = data.max_list_size if train else data.eval_max_list_size
        return DataLoader(
            ListwiseDataset(lists, data.labels, cap, seed=data.seed),
            batch_size=data.batch_size if train else data.eval_batch_size,
            sampler=EpochSampler(len(lists), shuffle=train, seed=data.seed),
            collate_fn=BiEncoderCollator(
                self.texts, self.pad_token_id, self.teacher_scores if train else None
            ),
            num_workers=data.num_workers,
            persistent_workers=data.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
