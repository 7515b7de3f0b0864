"""The text corpus of domain-adaptive pretraining, its tokens and its masked batches.

One text per product (title and description joined by " ; ", as the ranking pairs join product
fields), optionally the distinct query strings; a held-out share for validation; optionally a
WordPiece vocabulary trained on it (``tokenizers``); masked-LM batches from
``DataCollatorForLanguageModeling``, the validation ones masked once with a fixed seed. The model
side is :mod:`ranking.modules.masked_lm`, the workflow ``experiments.pretrain``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch
from transformers import BertTokenizerFast, DataCollatorForLanguageModeling
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from data_modules.errors import DataValidationError
from data_modules.schema import TEXT_COLUMNS

log = logging.getLogger(__name__)

FIELD_SEPARATOR = " ; "  # how data_modules joins product fields into the product side of a pair
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VAL_MASK_SEED_OFFSET = 1  # val masks use seed + 1, training masks seed + 2: never the same draws
TRAIN_MASK_SEED_OFFSET = 2


# ---------------------------------------------------------------------------------------- corpus
@dataclass(frozen=True)
class Corpus:
    """Distinct texts for masked-LM, products first, then queries (in table order)."""

    texts: list[str]
    products: int
    queries: int


def _text_column(table: pl.DataFrame, column: str, source: str, required: bool) -> pl.Series:
    """``column`` as strings with nulls as ""; an empty required value names its first rows."""
    values = table.get_column(column).cast(pl.Utf8).fill_null("").str.strip_chars()
    if required:
        empty = (values == "").arg_true().to_list()
        if empty:
            raise DataValidationError(
                f"{source}: column '{column}' is empty or null in {len(empty)} row(s), "
                f"first rows {empty[:5]}"
            )
    return values


def build_corpus(
    table: pl.DataFrame, source: str, text_fields: Sequence[str], include_queries: bool
) -> Corpus:
    """The masked-LM corpus of a canonical table.

    One text per distinct ``product_id`` (its first row): the non-empty ``text_fields`` joined by
    ``" ; "``; with ``include_queries`` also every distinct query string. Exact duplicate texts
    are kept once.

    Args:
        table: Canonical table (``data_modules.schema``).
        source: Its name, for error messages (file path or ``synthetic(seed=...)``).
        text_fields: Product columns to join; ``product_title`` must be present and non-empty, an
            absent optional text column (description, brand, colour) is skipped with a log line.
        include_queries: Add the distinct queries as texts of their own.

    Raises:
        DataValidationError: A required column is missing or empty, or the corpus is empty.
    """
    if table.height == 0:
        raise DataValidationError(f"{source}: the table has no rows, the corpus would be empty")
    if "product_title" not in table.columns:
        raise DataValidationError(f"{source}: missing required column 'product_title'")
    present = []
    for column in text_fields:
        if column in table.columns:
            present.append(column)
        elif column in TEXT_COLUMNS:
            log.info("%s: optional column '%s' absent, left out of the corpus", source, column)
        else:
            raise DataValidationError(
                f"{source}: pretrain.text_fields names column '{column}', which the table lacks; "
                f"columns found: {', '.join(table.columns)}"
            )
    if not present:
        raise DataValidationError(
            f"{source}: none of pretrain.text_fields {list(text_fields)} is a column of the table"
        )
    if "product_id" not in table.columns:
        raise DataValidationError(f"{source}: missing required column 'product_id'")
    # Checked on the whole table, so that the rows named in an error are the file's rows.
    columns = [_text_column(table, c, source, required=c == "product_title") for c in present]
    first_rows = table.select(pl.col("product_id").is_first_distinct()).to_series()
    product_texts = [
        FIELD_SEPARATOR.join(part for part in parts if part)
        for parts in zip(*(c.filter(first_rows).to_list() for c in columns), strict=True)
    ]
    query_texts: list[str] = []
    if include_queries:
        if "query" not in table.columns:
            raise DataValidationError(f"{source}: missing column 'query' (include_queries)")
        queries = _text_column(table, "query", source, required=True)
        query_texts = queries.unique(maintain_order=True).to_list()
    texts = list(dict.fromkeys(t for t in [*product_texts, *query_texts] if t))
    if not texts:
        raise DataValidationError(f"{source}: the pretraining corpus is empty")
    return Corpus(texts, products=len(product_texts), queries=len(query_texts))


def split_corpus(
    texts: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """A seeded random split into ``(train, val)``; val gets ``round(n * val_fraction)``, >= 1.

    Raises:
        DataValidationError: Fewer than two texts while a validation share is asked for.
    """
    if val_fraction <= 0:
        return list(texts), []
    if len(texts) < 2:
        raise DataValidationError(
            f"the pretraining corpus has {len(texts)} text(s): too few to hold out "
            f"pretrain.val_fraction={val_fraction} (set it to 0)"
        )
    order = np.random.default_rng(seed).permutation(len(texts))
    n_val = min(max(1, round(len(texts) * val_fraction)), len(texts) - 1)
    return [texts[i] for i in order[n_val:]], [texts[i] for i in order[:n_val]]


# ------------------------------------------------------------------------------------- tokenizer
def train_wordpiece(
    texts: Sequence[str], vocab_size: int, lowercase: bool = True, model_max_length: int = 512
) -> PreTrainedTokenizerBase:
    """A BERT-style WordPiece tokenizer trained on ``texts`` (Hugging Face ``tokenizers``).

    BERT normaliser and pre-tokeniser, ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` with segment
    ids 0/1, so it encodes (query, product) pairs like the stock BERT tokenizer. The vocabulary
    holds at most ``vocab_size`` entries (fewer when the corpus has fewer distinct pieces).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer

    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    trainer = WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    backend.train_from_iterator(texts, trainer=trainer, length=len(texts))
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    if backend.get_vocab_size() < vocab_size:
        log.warning(
            "pretrain.vocab_size=%d: the corpus yields only %d WordPiece entries; using those",
            vocab_size,
            backend.get_vocab_size(),
        )
    return BertTokenizerFast(
        tokenizer_object=backend,
        do_lower_case=lowercase,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def tokenize_corpus(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, whole_word: bool
) -> list[dict[str, list[int]]]:
    """Token features per text for the MLM collator (truncated to ``max_length``).

    Whole-word masking finds words from offsets, which the collator cannot pad, so those
    features are padded to ``max_length`` here; otherwise batches are padded dynamically.
    """
    if not texts:
        return []
    encoded = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        padding="max_length" if whole_word else False,
        return_special_tokens_mask=True,
        return_offsets_mapping=whole_word,
    )
    return [{key: encoded[key][i] for key in encoded} for i in range(len(texts))]


# ------------------------------------------------------------------------------------ data flow
def fixed_masked_batches(
    features: Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    opts: Any,
    seed: int,
) -> list[dict[str, torch.Tensor]]:
    """Validation batches masked once with a seeded generator: every val pass sees the same
    masks, so val losses of different epochs (and runs) are comparable."""
    collator = mlm_collator(tokenizer, opts, seed)
    return [
        collator(list(features[i : i + opts.batch_size]))
        for i in range(0, len(features), opts.batch_size)
    ]


def mlm_collator(
    tokenizer: PreTrainedTokenizerBase, opts: Any, seed: int
) -> DataCollatorForLanguageModeling:
    # Whole-word masking replaces every chosen word by [MASK] (the collator does not support the
    # 10 % random replacement there); say so instead of letting it warn.
    replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if opts.whole_word_mask else {}
    return DataCollatorForLanguageModeling(
        tokenizer,
        mlm=True,
        mlm_probability=opts.mlm_probability,
        whole_word_mask=opts.whole_word_mask,
        seed=seed,
        **replace,
    )
