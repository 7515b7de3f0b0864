"""Text baselines: BM25 against the formula and bm25s, MiniLM against sentence-transformers."""

from __future__ import annotations

import math

import bm25s
import numpy as np
import polars as pl
import pytest
import torch

from data_modules.errors import ConfigError, DataValidationError
from ranking.scorers.baselines import evaluate_scorer
from ranking.scorers.text_baselines import (
    PAD_SCORE,
    biencoder_scorer,
    bm25_row_scores,
    bm25_scorer,
    build_text_baseline,
)

PRODUCTS = ["Red Running Shoes", "blue shoes for kids", "red wool hat and red scarf"]
QUERIES = ["red shoes", "warm wool hat"]
# The same texts tokenised by hand (lowercase, words of 2+ characters, English stopwords out).
PRODUCT_TOKENS = [
    ["red", "running", "shoes"],
    ["blue", "shoes", "kids"],
    ["red", "wool", "hat", "red", "scarf"],
]
QUERY_TOKENS = [["red", "shoes"], ["warm", "wool", "hat"]]


def pairs(queries: list[str], products: list[str]) -> pl.DataFrame:
    """Every query paired with every product: row ``i * len(products) + j`` is (q_i, p_j)."""
    return pl.DataFrame(
        {
            "query": [q for q in queries for _ in products],
            "product": [p for _ in queries for p in products],
        }
    )


def full_batch(num_queries: int, num_products: int, num_tasks: int = 1) -> dict:
    rows = torch.arange(num_queries * num_products).reshape(num_queries, num_products)
    return {
        "rows": rows,
        "mask": torch.ones_like(rows, dtype=torch.bool),
        "labels": torch.zeros(num_queries, num_products, num_tasks),
        "region": torch.zeros(num_queries, dtype=torch.long),
    }


def hand_bm25(query: list[str], doc: list[str], corpus: list[list[str]], method: str) -> float:
    """BM25 written out from the formula (no (k1 + 1) factor, as in bm25s), k1=1.5, b=0.75."""
    k1, b = 1.5, 0.75
    n = len(corpus)
    avgdl = sum(len(d) for d in corpus) / n
    total = 0.0
    for term in query:
        df = sum(term in d for d in corpus)
        if df == 0:
            continue
        ratio = (n - df + 0.5) / (df + 0.5)
        idf = math.log(1 + ratio) if method == "lucene" else math.log(max(ratio, 1.0))
        tf = doc.count(term)
        total += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
    return total


@pytest.mark.parametrize("method", ["lucene", "robertson"])
def test_bm25_equals_hand_computation(method: str) -> None:
    # Each product occurs twice in pair_texts, yet the collection is its 3 unique products.
    score = bm25_scorer(pairs(QUERIES, PRODUCTS), num_tasks=2, method=method, k1=1.5, b=0.75)
    out = score(full_batch(len(QUERIES), len(PRODUCTS)))
    expected = torch.tensor(
        [[hand_bm25(q, d, PRODUCT_TOKENS, method) for d in PRODUCT_TOKENS] for q in QUERY_TOKENS]
    )
    torch.testing.assert_close(out[..., 0], expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(out[..., 0], out[..., 1])  # the same score for every task
    if method == "lucene":  # spot-check one value written out by hand
        idf_red, idf_shoes = math.log(1 + 1.5 / 2.5), math.log(1 + 1.5 / 2.5)
        norm = 1.5 * (1 - 0.75 + 0.75 * 3 / (11 / 3))
        assert out[0, 0, 0].item() == pytest.approx(
            idf_red / (1 + norm) + idf_shoes / (1 + norm), rel=1e-6
        )


@pytest.mark.parametrize("method", ["lucene", "bm25+"])
def test_bm25_agrees_with_bm25s_get_scores(method: str) -> None:
    products = [*PRODUCTS, "kids red rain boots", "wool socks, red and blue", "steel bottle"]
    queries = [*QUERIES, "red red boots", "socks for kids", "the"]  # repeats, a stopword-only one
    scores = bm25_row_scores(pairs(queries, products), method=method)

    retriever = bm25s.BM25(method=method)
    retriever.index(bm25s.tokenize(products, return_ids=False, show_progress=False), False)
    for i, tokens in enumerate(bm25s.tokenize(queries, return_ids=False, show_progress=False)):
        # bm25s's own per-query scoring; a query left with no term scores 0 everywhere.
        reference = retriever.get_scores(tokens) if tokens else np.zeros(len(products), "f4")
        got = scores[i * len(products) : (i + 1) * len(products)]
        torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(reference))


def test_bm25_product_with_query_terms_ranks_first() -> None:
    score = bm25_scorer(
        pairs(["leather wallet"], ["steel water bottle", "Brown Leather Wallet"]), 1
    )
    out = score(full_batch(1, 2))[0, :, 0]
    assert out[0].item() == 0.0
    assert out[1].item() > 0.0


def test_padding_and_shape_through_the_metrics() -> None:
    score = bm25_scorer(pairs(QUERIES, PRODUCTS), num_tasks=3)
    rows = torch.tensor([[2, 0, 1], [3, 5, -1], [-1, -1, -1]])
    labels = torch.zeros(3, 3, 3)
    labels[0, 1] = 1.0  # "Red Running Shoes" for "red shoes": BM25 ranks it first
    labels[1, 1] = 1.0  # the wool hat for "warm wool hat": ranked first too
    batch = {"rows": rows, "mask": rows >= 0, "labels": labels, "region": torch.zeros(3).long()}
    out = score(batch)
    assert out.shape == (3, 3, 3) and out.dtype == torch.float32
    assert (out[rows < 0] == PAD_SCORE).all() and torch.isfinite(out).all()
    metrics = evaluate_scorer([batch], score, ["a", "b", "c"], ["na"], ["ndcg@10"], "test")
    assert metrics["test/a/ndcg@10"] == pytest.approx(1.0)
    assert metrics["test/a/lists"] == 2  # the all-padding list has no positive: left out


def test_scorer_rejects_foreign_rows() -> None:
    score = bm25_scorer(pairs(QUERIES, PRODUCTS), num_tasks=1)
    with pytest.raises(DataValidationError, match="row 6 is outside pair_texts"):
        score({"rows": torch.tensor([[6, 0]]), "mask": torch.ones(1, 2, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="no 'rows'"):
        score({"mask": torch.ones(1, 2, dtype=torch.bool)})


def test_unknown_baseline_and_options() -> None:
    texts = pairs(QUERIES, PRODUCTS)
    with pytest.raises(ConfigError, match=r"baselines\.tfidf: unknown text baseline"):
        build_text_baseline("tfidf", texts, 1)
    with pytest.raises(ConfigError, match=r"baselines\.bm25\.k3: unknown option"):
        build_text_baseline("bm25", texts, 1, k3=8)
    with pytest.raises(ConfigError, match=r"baselines\.minilm_zero_shot\.pooling: unknown"):
        build_text_baseline("minilm_zero_shot", texts, 1, pooling="cls")
    with pytest.raises(ConfigError, match=r"baselines\.bm25\.method"):
        build_text_baseline("bm25", texts, 1, method="okapi")
    with pytest.raises(ConfigError, match=r"baselines\.bm25\.stopwords"):
        build_text_baseline("bm25", texts, 1, stopwords="klingon")
    with pytest.raises(ConfigError, match=r"baselines\.bm25\.b"):
        build_text_baseline("bm25", texts, 1, b=1.5)
    with pytest.raises(ConfigError, match=r"baselines\.minilm_zero_shot\.batch_size"):
        build_text_baseline("minilm_zero_shot", texts, 1, batch_size=0)


def test_bad_pair_texts() -> None:
    with pytest.raises(ConfigError, match="setup"):
        bm25_scorer(None, 1)  # type: ignore[arg-type]
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['product'\]"):
        bm25_scorer(pl.DataFrame({"query": ["a"]}), 1)
    null_error = r"'product' has 1 null value\(s\), first rows \[1\]"
    with pytest.raises(DataValidationError, match=null_error):
        bm25_scorer(pl.DataFrame({"query": ["ab", "cd"], "product": ["ab", None]}), 1)
    with pytest.raises(DataValidationError, match="no word token"):
        bm25_scorer(pl.DataFrame({"query": ["ab"], "product": ["the"]}), 1)


def test_minilm_cosine_equals_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    from ranking.nn.encoders import minilm_package_dir

    long_text = " ".join(["waterproof hiking boots with ankle support"] * 15)  # > 64 tokens
    queries = ["red shoes", "wool hat", "hiking boots"]
    products = [*PRODUCTS[:2], long_text]
    texts = pairs(queries, products)
    # batch_size=2: several length-sorted batches, each padded to its own longest text.
    score = biencoder_scorer(texts, num_tasks=1, batch_size=2, max_length=64, device="cpu")
    out = score(full_batch(len(queries), len(products)))[..., 0]

    model = SentenceTransformer(str(minilm_package_dir()), device="cpu", local_files_only=True)
    model.max_seq_length = 64
    q = model.encode(queries, convert_to_tensor=True, normalize_embeddings=True)
    p = model.encode(products, convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(out, q @ p.T, rtol=0, atol=1e-5)
