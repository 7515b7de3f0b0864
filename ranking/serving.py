"""Serving: rank each query's candidates with a checkpoint; TREC run + parquet; ONNX towers.

* :func:`load_checkpoint` opens any shoprank checkpoint (cross-encoder or bi-encoder student) and
  rebuilds it from its hyper-parameters alone.
* A cross-encoder scores every (query, candidate) pair. A bi-encoder student encodes every product
  once into a :class:`ProductIndex` (``[P, K, D]`` vectors saved as ``.npy`` with a parquet of
  product ids, keyed by the checkpoint's bytes and the catalogue, and reused), then encodes each
  query online and scores its candidates with one product of vectors.
* :func:`write_trec_run` writes ``qid Q0 docid rank score run_name`` lines; :func:`predict`
  also writes ``run.<task>.trec`` and ``qrels.<task>.txt`` per task (:mod:`ranking.trec`) and the
  scores of every task to parquet.
* :func:`export_onnx` writes the student's query and product towers as ONNX graphs
  (``torch.onnx.export``, dynamic batch and sequence axes) and checks them against PyTorch with
  onnxruntime; :class:`OnnxBiEncoder` serves them.
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
from torch import nn

from data_modules.errors import ConfigError
from ranking.bi_encoder import (
    BiEncoder,
    BiEncoderModule,
    RaggedTokens,
    StudentTexts,
    pair_table,
)
from ranking.checkpoints import check_checkpoint, read_checkpoint
from ranking.checkpoints import checkpoint_kind as _checkpoint_kind
from ranking.inference import inference_options
from ranking.module import RankingModule
from ranking.trec import TrecIds, check_run_name, write_run

log = logging.getLogger(__name__)

KINDS = ("cross_encoder", "bi_encoder")
BACKENDS = ("torch", "onnx")
EncodeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (ids [N, T], mask [N, T]) -> [N, K, D]


# ---------------------------------------------------------------------------------------- loading
def checkpoint_kind(path: str | Path, key: str = "ckpt_path") -> str:
    """``"cross_encoder"`` or ``"bi_encoder"``: what a shoprank checkpoint holds.

    The file is read with ``weights_only=True`` (:func:`ranking.checkpoints.read_checkpoint`): a
    pickle payload is refused before it can run.

    Raises:
        ConfigError: The file is missing, is not a PyTorch checkpoint, pickles more than tensors
            and plain containers, or holds no shoprank hyper-parameters; the message names
            ``key`` and the file.
    """
    return _checkpoint_kind(read_checkpoint(path, key), path, key)


def load_checkpoint(
    path: str | Path, key: str = "ckpt_path", expect: str | None = None
) -> RankingModule | BiEncoderModule:
    """Rebuild a model from a checkpoint's hyper-parameters and weights (no Hydra), in eval mode.

    Args:
        path: The ``.ckpt`` file.
        key: Config key quoted in errors (``ckpt_path``, ``teacher_ckpt``).
        expect: ``cross_encoder`` or ``bi_encoder`` to refuse the other kind.

    Raises:
        ConfigError: Missing or unreadable file, or not the expected kind.
    """
    kind = _checkpoint_kind(check_checkpoint(path, key, expect), path, key)
    cls = BiEncoderModule if kind == "bi_encoder" else RankingModule
    return cls.load_from_checkpoint(
        str(Path(path).expanduser()), map_location="cpu", weights_only=True
    ).eval()


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
def encode_texts(
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


def similarity_scores(
    queries: np.ndarray, products: np.ndarray, similarity: str, temperature: float
) -> np.ndarray:
    """Scores ``[..., K]`` of broadcastable vectors ``[..., K, D]`` (as :class:`BiEncoder`)."""
    scores = np.einsum("...kd,...kd->...k", queries, products)
    return scores / temperature if similarity == "cosine" else scores


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
    vectors = encode_texts(
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

    ``inference``: ``{mode, chunk_size}`` for :class:`ranking.inference.FastCrossEncoder`
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
    query_vectors = encode_texts(encode_queries, texts.queries, queries, pad_id, batch_size)
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
    beside the file (see :mod:`ranking.trec`).

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


# ---------------------------------------------------------------------------------------- ONNX
class _Tower(nn.Module):
    """One side of a :class:`BiEncoder` as a plain ``(input_ids, attention_mask) -> [N, K, D]``."""

    def __init__(self, model: BiEncoder, side: str) -> None:
        super().__init__()
        self.model, self.side = model, side

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.side == "query":
            return self.model.encode_queries(input_ids, attention_mask)
        return self.model.encode_products(input_ids, attention_mask)


def _example(vocab_size: int, batch: int, length: int, seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000 % vocab_size, vocab_size, (batch, length), generator=generator)
    attention = torch.ones_like(ids)
    attention[0, length // 2 :] = 0  # one padded row: the export must keep the mask path
    ids[0, length // 2 :] = 0
    return ids, attention


def export_onnx(model: BiEncoder, out_dir: str | Path, tolerance: float = 1e-4) -> dict[str, Any]:
    """Export the query and product towers to ONNX and check them against PyTorch.

    Each file maps ``input_ids, attention_mask`` (int64 ``[N, T]``, both axes dynamic) to
    ``vectors [N, K, D]``. Exported with the ``torch.export``-based exporter (``dynamo=True``):
    the older tracing exporter bakes data-dependent branches of the attention-mask code into the
    graph. After export, onnxruntime runs both towers on inputs of other shapes than the export
    example and the largest absolute difference from PyTorch is returned.

    Args:
        model: The student (its weights are not changed).
        out_dir: Directory for ``query_encoder.onnx`` and ``product_encoder.onnx``.
        tolerance: Largest accepted absolute difference.

    Returns:
        ``{"query": path, "product": path, "max_abs_diff": float}``.

    Raises:
        RuntimeError: The exported graphs differ from PyTorch by more than ``tolerance``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    vocab = int(model.query_encoder.config.vocab_size)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    paths = {}
    for side in ("query", "product"):
        path = out_dir / f"{side}_encoder.onnx"
        torch.onnx.export(
            _Tower(model, side).eval(),
            _example(vocab, 3, 12, seed=0),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["vectors"],
            dynamic_shapes={
                "input_ids": {0: batch, 1: seq},
                "attention_mask": {0: batch, 1: seq},
            },
            dynamo=True,
            external_data=False,
        )
        paths[side] = path
    onnx_model = OnnxBiEncoder(
        paths["query"], paths["product"], model.similarity, model.temperature
    )
    ids, attention = _example(vocab, 5, 9, seed=1)
    diff = 0.0
    with torch.no_grad():
        for side, encode in (
            ("query", onnx_model.encode_queries),
            ("product", onnx_model.encode_products),
        ):
            reference = _Tower(model, side)(ids, attention).numpy()
            diff = max(
                diff, float(np.abs(encode(ids.numpy(), attention.numpy()) - reference).max())
            )
    model.train(was_training)
    if diff > tolerance:
        raise RuntimeError(f"ONNX export differs from PyTorch by {diff:.2e} (> {tolerance:.0e})")
    log.info("ONNX towers written to %s (max abs diff vs PyTorch %.2e)", out_dir, diff)
    return {"query": paths["query"], "product": paths["product"], "max_abs_diff": diff}


class OnnxBiEncoder:
    """The student's towers served by onnxruntime (CPU).

    Args:
        query_path: ``query_encoder.onnx``.
        product_path: ``product_encoder.onnx``.
        similarity: ``dot`` or ``cosine`` (as the student).
        temperature: tau of ``cosine``.
        threads: onnxruntime intra-op threads (``None``: torch's current thread count, so
            timings compare with PyTorch's).
    """

    def __init__(
        self,
        query_path: str | Path,
        product_path: str | Path,
        similarity: str = "dot",
        temperature: float = 1.0,
        threads: int | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:  # pragma: no cover - an optional extra
            raise ConfigError("backend=onnx needs onnxruntime (pip install onnxruntime)") from err
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.sessions = {
            side: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for side, path in (("query", query_path), ("product", product_path))
        }
        self.similarity, self.temperature = similarity, float(temperature)

    def _run(self, side: str, ids: np.ndarray, attention: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids.astype(np.int64), "attention_mask": attention.astype(np.int64)}
        return self.sessions[side].run(None, feeds)[0]

    def encode_queries(self, ids: np.ndarray, attention: np.ndarray) -> np.ndarray:
        return self._run("query", ids, attention)

    def encode_products(self, ids: np.ndarray, attention: np.ndarray) -> np.ndarray:
        return self._run("product", ids, attention)
