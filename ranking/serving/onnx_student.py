"""The bi-encoder student's query and product towers as ONNX graphs, and serving them.

:func:`export_onnx` writes the towers (``torch.onnx.export``, dynamic batch and sequence axes)
and checks them against PyTorch with onnxruntime; :class:`OnnxBiEncoder` serves them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from data_modules.errors import ConfigError
from ranking.nn.bi_encoder import BiEncoder

log = logging.getLogger(__name__)


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
