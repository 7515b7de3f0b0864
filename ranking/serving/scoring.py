"""Scoring with a trained model: every candidate of each query; TREC run + parquet.

* A cross-encoder scores every (query, candidate) pair. A bi-encoder student encodes every product
  once into a :class:`ProductIndex` (``[P, K, D]`` vectors saved as ``.npy`` with a parquet of
  product ids, keyed by the checkpoint's bytes and the catalogue, and reused), then encodes each
  query online and scores its candidates with one product of vectors.
* :func:`write_trec_run` writes ``qid Q0 docid rank score run_name`` lines; ``predict``
  (:mod:`experiments.workflows.predict`) also writes ``run.<task>.trec`` and ``qrels.<task>.txt``
  per task (:mod:`ranking.serving.trec`) and the scores of every task to parquet.
* The student's ONNX towers: :mod:`ranking.serving.onnx_student`.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from data_modules.student import RaggedTokens, StudentTexts, pair_table
from ranking.modules.cross_encoder import RankingModule
from ranking.nn.bi_encoder import BiEncoder, similarity_scores
from ranking.nn.inference import inference_options
from ranking.serving.trec import TrecIds, check_run_name, write_run

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
EncodeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (ids [N, T], mask [N, T]) -> [N, K, D]


class LabelsOptional:
    """A table source whose missing label columns are filled with 0 (prediction needs no labels).

    Args:
        source: The wrapped :class:`data_modules.sources.TableSource`.
        label_columns: The model's label columns.
    """

    def __init__(self, source: Any, label_columns: Sequence[str]) -> None:
        self.source = source
        self.name = source.name
        self.label_columns = list(label_columns)
        self.filled: list[str] = []

    def load(self) -> pl.DataFrame:
        table = self.source.load()
        self.filled = [c for c in self.label_columns if c not in table.columns]
        if self.filled:
            log.info("%s: no column(s) %s; filled with 0 for prediction", self.name, self.filled)
        return table.with_columns(pl.lit(0.0).alias(c) for c in self.filled)


# ---------------------------------------------------------------------------------------- index
def encode_tokens(
    encode: EncodeFn, tokens: RaggedTokens, index: np.ndarray, pad_id: int, batch_size: int
) -> np.ndarray:
    """Vectors ``[len(index), K, D]`` of texts ``index``, encoded ``batch_size`` at a time.

    Texts are sorted by length first so each batch pads to a similar length (dynamic padding).
    """
    index = np.asarray(index, dtype=np.int64)
    order = np.argsort(tokens.offsets[index + 1] - tokens.offsets[index], kind="stable")
    parts = []
    for start in range(0, len(order), batch_size):
        ids, attention = tokens.pad(index[order[start : start + batch_size]], pad_id)
        parts.append(encode(ids, attention))
    vectors = np.concatenate(parts) if parts else np.zeros((0, 0, 0), np.float32)
    out = np.empty_like(vectors)
    out[order] = vectors
    return out


def torch_encoder(model: BiEncoder, side: str, device: str = "cpu") -> EncodeFn:
    """``(ids, mask) -> [N, K, D]`` numpy vectors from the PyTorch ``side`` tower."""
    encode = model.encode_queries if side == "query" else model.encode_products

    @torch.no_grad()
    def run(ids: np.ndarray, attention: np.ndarray) -> np.ndarray:
        out = encode(torch.from_numpy(ids).to(device), torch.from_numpy(attention).to(device))
        return out.float().cpu().numpy()

    return run


@dataclass(frozen=True)
class ProductIndex:
    """Precomputed product vectors: ``vectors[i]`` (``[K, D]``) belongs to ``product_ids[i]``.

    Entry ``i`` is catalogue entry ``i`` of the :class:`StudentTexts` it was built from (one per
    unique (product_id, product text)).
    """

    product_ids: list[str]
    vectors: np.ndarray  # [P, K, D] float32
    key: str

    def save(self, directory: str | Path) -> Path:
        """Write ``product_vectors.npy`` and ``products.parquet`` (product_id, row) atomically."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
        pl.DataFrame(
            {"product_id": self.product_ids, "row": np.arange(len(self.product_ids))}
        ).write_parquet(staging / "products.parquet")
        (staging / "meta.json").write_text(json.dumps({"key": self.key}) + "\n")
        np.save(staging / "product_vectors.npy", self.vectors)  # last: marks a complete entry
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ProductIndex:
        directory = Path(directory)
        ids = pl.read_parquet(directory / "products.parquet").sort("row")
        key = json.loads((directory / "meta.json").read_text())["key"]
        vectors = np.load(directory / "product_vectors.npy")
        return cls(ids.get_column("product_id").to_list(), vectors, key)


def build_product_index(
    encode_products: EncodeFn,
    texts: StudentTexts,
    pad_id: int,
    cache_dir: str | Path | None,
    model_key: str,
    batch_size: int = 256,
) -> tuple[ProductIndex, bool]:
    """Encode every catalogue product once; reuse a saved index of the same model and catalogue.

    Args:
        encode_products: The product tower (:func:`torch_encoder` or :class:`OnnxBiEncoder`).
        texts: The student's tokens (its catalogue is indexed).
        pad_id: The student tokenizer's padding id.
        cache_dir: Root of saved indexes (``<cache_dir>/product_vectors/<key>``); ``None``: none.
        model_key: Identity of the model (e.g. checkpoint sha256 + backend).
        batch_size: Products per encoding batch.

    Returns:
        ``(index, reused)``.
    """
    import hashlib

    key = hashlib.sha256(f"{model_key}|{texts.product_key}".encode()).hexdigest()[:24]
    entry = Path(cache_dir) / "product_vectors" / key if cache_dir is not None else None
    if entry is not None and (entry / "product_vectors.npy").is_file():
        log.info("Product vectors reused: %s", entry)
        return ProductIndex.load(entry), True
    start = time.perf_counter()
    vectors = encode_tokens(
        encode_products, texts.products, np.arange(len(texts.products)), pad_id, batch_size
    )
    log.info("Encoded %d products in %.1f s", len(vectors), time.perf_counter() - start)
    index = ProductIndex(list(texts.product_ids), vectors.astype(np.float32), key)
    if entry is not None:
        index.save(entry)
        log.info("Product vectors saved: %s", entry)
    return index, False


# ---------------------------------------------------------------------------------------- ranking
@torch.no_grad()
def score_cross_encoder(
    module: RankingModule,
    datamodule: Any,
    split: str,
    device: str = "cpu",
    inference: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows [N], scores [N, K])`` of every pair of ``split``'s lists, by the cross-encoder.

    ``inference``: ``{mode, chunk_size}`` for :class:`ranking.nn.inference.FastCrossEncoder`
    (default: ``auto``).
    """
    module = module.to(device).eval()
    module.use_data_regions(datamodule.region_names)
    module.use_inference(**inference_options(inference))
    module.prepare_inference()
    rows, scores = [], []
    for batch in datamodule.eval_dataloader(split):
        batch = {k: v.to(device) for k, v in batch.items()}
        mask = batch["mask"]
        scores.append(module(batch)[mask].float().cpu().numpy())
        rows.append(batch["rows"][mask].cpu().numpy())
    return np.concatenate(rows), np.concatenate(scores)


def score_bi_encoder(
    encode_queries: EncodeFn,
    index: ProductIndex,
    texts: StudentTexts,
    datamodule: Any,
    split: str,
    pad_id: int,
    similarity: str,
    temperature: float,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows [N], scores [N, K])`` of ``split``: queries encoded now, products from ``index``."""
    lists = datamodule.lists[split]
    rows = np.concatenate(lists.rows) if len(lists) else np.zeros(0, np.int64)
    query_of_row = texts.pair_query[rows]
    queries, row_query = np.unique(query_of_row, return_inverse=True)
    query_vectors = encode_tokens(encode_queries, texts.queries, queries, pad_id, batch_size)
    products = index.vectors[texts.pair_product[rows]]  # [N, K, D]
    scores = similarity_scores(query_vectors[row_query], products, similarity, temperature)
    return rows, scores.astype(np.float32)


def scores_frame(
    datamodule: Any, rows: np.ndarray, scores: np.ndarray, task_names: Sequence[str], rank_by: str
) -> pl.DataFrame:
    """One row per scored pair: ``query_id, product_id, region, score_<task>..., rank``.

    ``rank`` is 1-based within the query by ``score_<rank_by>`` descending, ties broken by
    product_id descending (trec_eval's own order, so its evaluation agrees with the file).
    """
    meta = pair_table(datamodule).select("pair", "query_id", "product_id", "region")
    score_columns = {
        f"score_{t}": scores[:, k].astype(np.float32) for k, t in enumerate(task_names)
    }
    frame = pl.DataFrame({"pair": rows.astype(np.int64), **score_columns}).join(
        meta, on="pair", how="left"
    )
    return (
        frame.sort(["query_id", f"score_{rank_by}", "product_id"], descending=[False, True, True])
        .with_columns(pl.int_range(1, pl.len() + 1).over("query_id").alias("rank"))
        .select("query_id", "product_id", "region", *score_columns, "rank")
    )


def write_trec_run(
    frame: pl.DataFrame, path: str | Path, score_column: str, run_name: str = "shoprank"
) -> Path:
    """Write a TREC run file: ``qid Q0 docid rank score run_name`` per line, best first.

    Ids that are empty or hold whitespace are numbered, with ``qids.tsv`` / ``docids.tsv``
    beside the file (see :mod:`ranking.serving.trec`).

    Args:
        frame: Output of :func:`scores_frame` (``query_id``, ``product_id``, scores).
        path: The file.
        score_column: Column written as the score (and ranked by).
        run_name: Run tag (no whitespace).

    Raises:
        ConfigError: ``run_name`` is empty or holds whitespace.
    """
    check_run_name(run_name)
    ids = TrecIds.for_ids(
        frame.get_column("query_id").cast(pl.String).to_list(),
        frame.get_column("product_id").cast(pl.String).to_list(),
    )
    path = write_run(ids.apply(frame), path, score_column, run_name)
    ids.write_maps(Path(path).parent)
    return path
