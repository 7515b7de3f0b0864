"""The cross-encoder as one ONNX graph (ids -> ``[N, K]`` scores), checked against PyTorch.

Written by :func:`ranking.serving.export.export_model`; the student's towers are
:mod:`ranking.serving.onnx_student`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn

from ranking.serving.exported import SAMPLE_PAIRS, _quiet, check_parity

log = logging.getLogger(__name__)


class _CrossEncoderGraph(nn.Module):
    """The cross-encoder as ``(input_ids, attention_mask[, token_type_ids], region[, features])
    -> scores [N, K]`` for ``torch.onnx.export`` (no data-dependent checks inside)."""

    def __init__(self, scorer: nn.Module, uses_types: bool, uses_features: bool) -> None:
        super().__init__()
        self.scorer, self.uses_types, self.uses_features = scorer, uses_types, uses_features

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        from ranking.nn.encoders import pool

        inputs = list(inputs)
        ids, attention = inputs.pop(0), inputs.pop(0)
        kwargs = {"input_ids": ids, "attention_mask": attention}
        if self.uses_types:
            kwargs["token_type_ids"] = inputs.pop(0)
        region = inputs.pop(0)
        features = inputs.pop(0) if self.uses_features else None
        prior = inputs.pop(0) if self.scorer.prior is not None else None
        hidden = self.scorer.encoder(**kwargs).last_hidden_state
        h = pool(hidden, attention, self.scorer.pooling)
        tower = self.scorer.tower
        if tower.region_mask is not None:
            h, _ = tower.region_mask(h, region, features)
        scores = tower.score(h).scores
        return scores if prior is None else scores + self.scorer.prior(prior)


def onnx_input_names(module: Any) -> list[str]:
    """The inputs of ``cross_encoder.onnx`` for this module, in order."""
    names = ["input_ids", "attention_mask"]
    if module.model.uses_token_type_ids:
        names.append("token_type_ids")
    names.append("region")
    if module.region_feature_dim:
        names.append("region_features")
    if getattr(module, "prior_feature_names", None):
        names.append("pair_features")  # [N, P] first-stage scores of a model with a prior
    return names


def _onnx_feeds(
    module: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], seed: int
) -> dict[str, np.ndarray]:
    max_length = int(module.hparams.encoder.get("max_length", 64))
    q, p = zip(*pairs, strict=True)
    encoded = tokenizer(
        list(q),
        list(p),
        truncation="longest_first",
        max_length=max_length,
        padding=True,
        return_token_type_ids=True,
        return_tensors="np",
    )
    n = len(pairs)
    rng = np.random.default_rng(seed)
    feeds = {
        "input_ids": encoded["input_ids"].astype(np.int64),
        "attention_mask": encoded["attention_mask"].astype(np.int64),
        "token_type_ids": encoded["token_type_ids"].astype(np.int64),
        "region": rng.integers(0, len(module.model_regions), n).astype(np.int64),
        "region_features": rng.normal(size=(n, max(module.region_feature_dim, 1))).astype(
            np.float32
        ),
        "pair_features": rng.uniform(
            -1, 1, size=(n, max(len(getattr(module, "prior_feature_names", []) or []), 1))
        ).astype(np.float32),
    }
    return {name: feeds[name] for name in onnx_input_names(module)}


def export_cross_encoder_onnx(
    module: Any, tokenizer: Any, out_dir: str | Path, tolerance: float = 1e-4
) -> dict[str, Any]:
    """Export the cross-encoder to ``<out_dir>/cross_encoder.onnx`` and check it with onnxruntime.

    Inputs (:func:`onnx_input_names`): int64 ``input_ids``, ``attention_mask``[,
    ``token_type_ids``] ``[N, T]`` (both axes dynamic), int64 ``region [N]`` (model region ids),
    [float ``region_features [N, F]``]; output ``scores [N, K]`` (logits). Exported with the
    ``torch.export``-based exporter like the student's towers (``dynamo=True``), then run on
    pairs of other shapes than the export example.

    Returns:
        ``{"path", "inputs", "max_abs_diff"}``.

    Raises:
        RuntimeError: The graph differs from PyTorch by more than ``tolerance``.
    """
    import onnxruntime as ort

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "cross_encoder.onnx"
    names = onnx_input_names(module)
    graph = _CrossEncoderGraph(
        module.model, "token_type_ids" in names, "region_features" in names
    ).eval()
    example = _onnx_feeds(module, tokenizer, SAMPLE_PAIRS[:3], seed=0)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    dynamic = {
        name: (
            {0: batch, 1: seq}
            if name in ("input_ids", "attention_mask", "token_type_ids")
            else {0: batch}
        )
        for name in names
    }
    # The id range check is data-dependent control flow, which torch.export cannot trace; the
    # graph leaves it to onnxruntime (an id past the embedding fails there).
    no_check = mock.patch("ranking.nn.towers.region_mask.check_region_ids", lambda *_: None)
    with torch.no_grad(), _quiet(), no_check:
        torch.onnx.export(
            graph,
            tuple(torch.from_numpy(example[n]) for n in names),
            str(path),
            input_names=names,
            output_names=["scores"],
            # forward(*inputs): one positional tuple holding every input's axes
            dynamic_shapes=(tuple(dynamic[n] for n in names),),
            dynamo=True,
            external_data=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = _onnx_feeds(module, tokenizer, SAMPLE_PAIRS, seed=1)
    with torch.no_grad():
        want = graph(*(torch.from_numpy(feeds[n]) for n in names)).numpy()
    got = session.run(None, feeds)[0]
    diff = check_parity("cross_encoder.onnx", got, want, tolerance)
    tokenizer.save_pretrained(str(out_dir / "tokenizer"))
    log.info("ONNX cross-encoder written to %s (max abs diff vs PyTorch %.2e)", path, diff)
    return {"path": str(path), "inputs": names, "max_abs_diff": diff}
