"""Bi-encoder student: query and product encoded apart, one similarity per task.

A representation-focused ranker (Sentence-BERT, Reimers & Gurevych, EMNLP 2019): the query and
the product are each encoded alone, so product vectors can be computed once, offline, and ranking
``n`` candidates costs one query encoding and ``n`` dot products. ListBERT (Kumar et al., 2022,
"ListBERT: Learning to Rank E-commerce products with Listwise BERT") distils a cross-encoder into
such a model for serving; :mod:`ranking.distillation` trains it from a cross-encoder teacher.

Scoring, for task ``k`` of K (one head per task, so the student is a drop-in multi-task ranker):

    u_k(q) = W_{q,k} pool(BERT(q)),   v_k(p) = W_{p,k} pool(BERT(p))          (each in R^D)
    dot:     s_k(q, p) = <u_k(q), v_k(p)>
    cosine:  s_k(q, p) = cos(u_k(q), v_k(p)) / tau

``dot`` (default) leaves the score scale free, which a listwise distillation loss needs to match a
teacher whose logits span several units; ``cosine`` bounds scores to ``[-1/tau, 1/tau]`` (vectors
are unit-normalised at encoding time, so a precomputed product index needs no further work).

Data: the student reads its own tokens of the query and product texts (``StudentTexts``), built
from ``datamodule.pair_texts`` by tokenising each unique text once, and finds them through the
batch's ``rows`` (pair row per item). Its batches (``BiEncoderCollator``) are

    query_input_ids / query_attention_mask      [B, Tq]     (one query per list)
    product_input_ids / product_attention_mask  [B, L, Tp]
    mask [B, L], labels [B, L, K], region [B], list_index [B], rows [B, L]
    teacher_scores [B, L, K]                    (training batches of a distillation run)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl_light
import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from data_modules.errors import ConfigError, DataValidationError
from data_modules.listwise import EpochSampler, ListwiseDataset, list_fields
from data_modules.tokenization import tokenizer_fingerprint
from ranking.distillation import DISTILLATION_DEFAULTS, build_distillation_loss
from ranking.encoders import load_encoder_model, load_tokenizer, pool
from ranking.losses import build_loss
from ranking.ranker import ListwiseRanker

SIMILARITIES = ("dot", "cosine")
BI_ENCODER_DEFAULTS: dict[str, Any] = {
    "shared_encoder": True,  # one transformer for both sides (Sentence-BERT's siamese network)
    "pooling": "mean",
    "dim": 64,  # D, per-task vector width
    "similarity": "dot",
    "temperature": 0.05,  # cosine only
    "query_max_length": 32,
    "product_max_length": 64,
    "query_region_prefix": True,  # "eu | red shoes", as the cross-encoder sees the query
}
_TOKEN_CHUNK = 4096


def _options(given: Mapping[str, Any] | None, defaults: Mapping[str, Any], key: str) -> dict:
    unknown = sorted(set(given or {}) - set(defaults))
    if unknown:
        raise ConfigError(f"{key}: unknown option(s) {unknown}; valid: {sorted(defaults)}")
    return {**defaults, **dict(given or {})}


def bi_encoder_options(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """``BI_ENCODER_DEFAULTS`` updated by ``given``, checked; errors name ``student.bi_encoder``."""
    opts = _options(given, BI_ENCODER_DEFAULTS, "student.bi_encoder")
    if opts["similarity"] not in SIMILARITIES:
        raise ConfigError(
            f"student.bi_encoder.similarity must be one of {SIMILARITIES}, "
            f"got {opts['similarity']!r}"
        )
    for name in ("dim", "query_max_length", "product_max_length"):
        if int(opts[name]) < 1:
            raise ConfigError(f"student.bi_encoder.{name} must be >= 1, got {opts[name]}")
    if float(opts["temperature"]) <= 0:
        raise ConfigError(f"student.bi_encoder.temperature must be > 0, got {opts['temperature']}")
    return opts


# ---------------------------------------------------------------------------------------- model
class BiEncoder(nn.Module):
    """Query and product towers with K per-task projection heads (see the module docstring).

    Args:
        query_encoder: Hugging Face encoder for queries (``last_hidden_state [N, T, H]``).
        product_encoder: Encoder for products; ``None`` shares ``query_encoder`` (siamese).
        hidden_size: H.
        num_tasks: K.
        dim: D, width of each task's vector.
        pooling: ``mean`` or ``cls`` (:func:`ranking.encoders.pool`).
        similarity: ``dot`` or ``cosine``.
        temperature: tau of ``cosine``.
    """

    def __init__(
        self,
        query_encoder: nn.Module,
        product_encoder: nn.Module | None,
        hidden_size: int,
        num_tasks: int,
        dim: int = 64,
        pooling: str = "mean",
        similarity: str = "dot",
        temperature: float = 0.05,
    ) -> None:
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ConfigError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        self.query_encoder = query_encoder
        self.product_encoder = product_encoder  # None: shared
        self.query_head = nn.Linear(hidden_size, num_tasks * dim)
        self.product_head = nn.Linear(hidden_size, num_tasks * dim)
        self.num_tasks, self.dim = num_tasks, dim
        self.pooling, self.similarity, self.temperature = pooling, similarity, float(temperature)

    def _encode(
        self, encoder: nn.Module, head: nn.Linear, input_ids: torch.Tensor, attention: torch.Tensor
    ) -> torch.Tensor:
        hidden = encoder(input_ids=input_ids, attention_mask=attention).last_hidden_state
        vectors = head(pool(hidden, attention, self.pooling))
        vectors = vectors.view(-1, self.num_tasks, self.dim)
        return F.normalize(vectors, dim=-1) if self.similarity == "cosine" else vectors

    def encode_queries(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[N, T]`` query tokens -> ``[N, K, D]`` query vectors (unit norm under cosine)."""
        return self._encode(self.query_encoder, self.query_head, input_ids, attention_mask)

    def encode_products(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """``[N, T]`` product tokens -> ``[N, K, D]`` product vectors (unit norm under cosine)."""
        encoder = self.product_encoder if self.product_encoder is not None else self.query_encoder
        return self._encode(encoder, self.product_head, input_ids, attention_mask)

    def similarity_scores(self, queries: torch.Tensor, products: torch.Tensor) -> torch.Tensor:
        """Scores ``[..., K]`` of broadcastable query and product vectors ``[..., K, D]``."""
        scores = (queries * products).sum(-1)
        return scores / self.temperature if self.similarity == "cosine" else scores


def _trim(input_ids: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop token columns that are padding in every row (dynamic padding after packing)."""
    seq_len = max(1, int(attention.sum(-1).max()))
    return input_ids[:, :seq_len], attention[:, :seq_len]


def score_batch(model: BiEncoder, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Scores ``[B, L, K]`` of a bi-encoder batch (0 at padded positions).

    Queries are encoded once per list (``[B, Tq]``); products only at real positions.
    """
    mask = batch["mask"]
    queries = model.encode_queries(
        *_trim(batch["query_input_ids"], batch["query_attention_mask"])
    )  # [B, K, D]
    products = model.encode_products(
        *_trim(batch["product_input_ids"][mask], batch["product_attention_mask"][mask])
    )  # [N, K, D]
    per_item = queries.unsqueeze(1).expand(*mask.shape, *queries.shape[1:])[mask]
    scores = products.new_zeros((*mask.shape, model.num_tasks))
    scores[mask] = model.similarity_scores(per_item, products)
    return scores


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


class StudentDataModule(pl_light.LightningDataModule):
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


# ---------------------------------------------------------------------------------------- module
class BiEncoderModule(ListwiseRanker):
    """A bi-encoder student trained on ground truth and, optionally, a teacher's scores.

    Loss of a training batch, with task weights ``w_k`` and ``alpha`` from ``distillation``:

        alpha * sum_k w_k * distill(s[..., k], t[..., k], mask)
          + (1 - alpha) * sum_k w_k * loss_k(s[..., k], labels[..., k], mask)

    where ``t`` are the batch's ``teacher_scores`` (absent: alpha is taken as 0) and ``distill``
    is :data:`ranking.distillation.DISTILLATION_LOSSES` ``[distillation.loss]``. Validation and
    test log the same metric names as :class:`ranking.module.RankingModule`, so the two compare
    line by line and share checkpoint monitors.

    Every argument is a plain value, so ``load_from_checkpoint`` rebuilds the model without Hydra.

    Args:
        encoder: Encoder spec of the student (see :mod:`ranking.encoders`).
        tasks: ``[{name, label, weight, loss?}]`` in score order (a teacher's tasks).
        loss: Default ground-truth loss ``{name, **options}`` (tasks may carry their own).
        bi_encoder: Options, see ``BI_ENCODER_DEFAULTS``.
        distillation: ``{alpha, loss, temperature}``, see ``DISTILLATION_DEFAULTS``.
        optimizer: AdamW options as in :class:`ranking.module.RankingModule`.
        metrics: Metric specs for val/test.
        region_names: The training data's regions, in id order.
        teacher: Provenance of the teacher (path, sha256), stored with the checkpoint.
    """

    def __init__(
        self,
        encoder: Mapping[str, Any],
        tasks: Sequence[Mapping[str, Any]],
        loss: Mapping[str, Any],
        bi_encoder: Mapping[str, Any] | None = None,
        distillation: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        metrics: Sequence[str] = ("ndcg@10", "ndcg@5", "mrr@10", "map"),
        region_names: Sequence[str] = ("all",),
        teacher: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # The region enters as text ("eu | query"): no region mask.
        self.init_ranker(tasks, metrics, optimizer, region_names, uses_region_mask=False)
        self.bi_options = bi_encoder_options(bi_encoder)
        self.distill_options = _options(distillation, DISTILLATION_DEFAULTS, "student.distillation")
        alpha = float(self.distill_options["alpha"])
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"student.distillation.alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.distill_loss = build_distillation_loss(
            self.distill_options["loss"], temperature=self.distill_options["temperature"]
        )
        self.losses = [build_loss(**dict(t["loss"] or loss)) for t in self.tasks]
        self.register_buffer(
            "task_weights", torch.tensor([float(t["weight"]) for t in self.tasks]), persistent=False
        )
        tokenizer = load_tokenizer(encoder)
        query_encoder = load_encoder_model(encoder, vocab_size=len(tokenizer))
        product_encoder = (
            None
            if self.bi_options["shared_encoder"]
            else load_encoder_model(encoder, vocab_size=len(tokenizer))
        )
        self.model = BiEncoder(
            query_encoder,
            product_encoder,
            hidden_size=query_encoder.config.hidden_size,
            num_tasks=len(self.tasks),
            dim=int(self.bi_options["dim"]),
            pooling=self.bi_options["pooling"],
            similarity=self.bi_options["similarity"],
            temperature=float(self.bi_options["temperature"]),
        )
        self.pad_token_id = int(tokenizer.pad_token_id)

    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The student's tokenizer (from local files, as at construction)."""
        return load_tokenizer(self.hparams.encoder)

    def build_texts(self, datamodule: Any) -> StudentTexts:
        """The student's tokens of a set-up datamodule's pairs, with this model's options."""
        opts = self.bi_options
        return build_student_texts(
            datamodule,
            self.tokenizer(),
            int(opts["query_max_length"]),
            int(opts["product_max_length"]),
            bool(opts["query_region_prefix"]),
        )

    # ------------------------------------------------------------------ steps
    def score(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
        """``([B, L, K] scores of a bi-encoder batch, 0 at padding; no auxiliary loss)``."""
        return score_batch(self.model, batch), None

    def compute_loss(
        self,
        scores: torch.Tensor,
        batch: Mapping[str, torch.Tensor],
        aux_loss: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{loss, gt_loss, distill_loss?, <task>/gt_loss...}`` of a batch's scores."""
        gt = self.task_losses(scores, batch)
        out = {f"{name}/gt_loss": gt[k] for k, name in enumerate(self.task_names)}
        out["gt_loss"] = (self.task_weights * gt).sum()
        teacher = batch.get("teacher_scores")
        if teacher is None or self.alpha == 0.0:
            out["loss"] = out["gt_loss"]
            return out
        distill = torch.stack(
            [
                self.distill_loss(scores[..., k].float(), teacher[..., k].float(), batch["mask"])
                for k in range(len(self.tasks))
            ]
        )
        out["distill_loss"] = (self.task_weights * distill).sum()
        out["loss"] = self.alpha * out["distill_loss"] + (1.0 - self.alpha) * out["gt_loss"]
        return out

    def train_metric_names(self) -> list[str]:
        return student_train_metric_names(self.alpha)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.compute_loss(self(batch), batch)
        size = batch["mask"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=size)
        self.log_dict(
            {f"train/{k}": v for k, v in losses.items() if k != "loss" and "/" not in k},
            batch_size=size,
        )
        return losses["loss"]


def student_train_metric_names(alpha: float) -> list[str]:
    """The names :meth:`BiEncoderModule.training_step` logs for a distillation weight ``alpha``."""
    return ["train/loss", "train/gt_loss", *(["train/distill_loss"] if alpha > 0 else [])]


def is_bi_encoder_hparams(hparams: Mapping[str, Any]) -> bool:
    """Whether checkpoint hyper-parameters describe a :class:`BiEncoderModule`."""
    return "bi_encoder" in hparams and "distillation" in hparams


__all__ = [
    "BI_ENCODER_DEFAULTS",
    "SIMILARITIES",
    "BiEncoder",
    "BiEncoderCollator",
    "BiEncoderModule",
    "RaggedTokens",
    "StudentDataModule",
    "StudentTexts",
    "bi_encoder_options",
    "build_student_texts",
    "is_bi_encoder_hparams",
    "pair_table",
    "score_batch",
    "student_train_metric_names",
    "tokenize_texts",
]
