"""Fast cross-encoder inference: length-sorted chunks and a choice of numeric backend.

Scoring candidates (evaluation, prediction) runs the encoder over every (query, product) pair.
:class:`FastCrossEncoder` wraps a trained :class:`~ranking.nn.cross_encoder.CrossEncoder` for that:

* **Length-sorted chunks** (dynamic padding): the pairs of a batch are sorted by token count and
  encoded ``chunk_size`` at a time, each chunk cut to its own longest pair, so short pairs are not
  padded to the batch's longest one.
* **Backends** (``inference.mode``):

  ========== =================================================================================
  fp32       PyTorch, float32 (the reference)
  bf16       PyTorch under ``torch.autocast("cpu", bfloat16)`` where the CPU has bf16 matrix
             instructions (AVX512-BF16 or AMX); float32 elsewhere, with a warning
  int8       PyTorch with the encoder's linear layers quantised to int8 per call
             (``torch.ao.quantization.quantize_dynamic``: int8 weights, activations quantised
             on the fly)
  onnx       ONNX Runtime, float32: the encoder and pooling exported with ``torch.onnx.export``
  onnx_int8  the same graph quantised by ``onnxruntime.quantization.quantize_dynamic``
  auto       the default: :data:`AUTO_MODE` (int8), the fastest mode ``make bench`` measured on
             CPU within its NDCG@10 bound, for pretrained-size encoders; fp32 for small ones
  ========== =================================================================================

The tower (heads, region mask) always runs in PyTorch float32: it is a few small layers, and its
checks (region ids) stay in force. Only the encoder changes. ``bench/bench_inference.py`` measures
every mode against float32 PyTorch on the same pairs (pairs/s and NDCG@10 change).

The ONNX export here is the minimal one these modes need (encoder + pooling, dynamic batch and
sequence axes, written to a temporary directory and checked against PyTorch); exporting a whole
model for serving elsewhere is :mod:`ranking.serving.scoring`'s job.
"""

from __future__ import annotations

import copy
import functools
import logging
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from data_modules.errors import ConfigError
from ranking.nn.cross_encoder import CrossEncoder
from ranking.nn.encoders import pool
from ranking.nn.towers import TowerOutput

log = logging.getLogger(__name__)

MODES = ("auto", "fp32", "bf16", "int8", "onnx", "onnx_int8")
#: What ``auto`` resolves to on CPU for an encoder of at least :data:`AUTO_INT8_MIN_HIDDEN` units:
#: the fastest mode within the NDCG@10 bound in ``bench/bench_inference.py`` (README,
#: "Performance": about 4x float32 within 0.001 NDCG@10 on 1,248 held-out Home Depot lists,
#: fine-tuned MiniLM). Smaller encoders get ``fp32`` (length-sorted chunks, exact): on the tiny
#: random-init test model int8 moved test NDCG@10 by 0.01. int8 uses PyTorch's eager dynamic
#: quantisation, deprecated upstream in favour of torchao; where it is unavailable it falls back
#: to fp32.
AUTO_MODE = "int8"
AUTO_INT8_MIN_HIDDEN = 256
DEFAULT_CHUNK = 32

EncodeFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]  # (ids, mask, types) -> h [n, H]


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16).

    Read from ``/proc/cpuinfo`` where it exists (Linux), else from oneDNN's own check. Without
    them, ``torch.autocast`` on CPU emulates bf16 and is slower than float32.
    """
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = set()
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(checker()) if checker is not None else False
    except RuntimeError:  # pragma: no cover - a build without oneDNN
        return False


def resolve_mode(
    mode: str, device: torch.device | str = "cpu", hidden_size: int | None = None
) -> str:
    """The backend a requested ``inference.mode`` runs with on ``device``.

    ``auto`` is :data:`AUTO_MODE` on CPU for encoders of ``hidden_size`` >=
    :data:`AUTO_INT8_MIN_HIDDEN` (or unknown), ``fp32`` for smaller ones and on other devices (on a
    GPU, bf16 mixed precision is the trainer's business); ``bf16`` falls back to ``fp32`` on a CPU
    without bf16 instructions.

    Raises:
        ConfigError: an unknown mode, or an ONNX or int8 mode on a non-CPU device.
    """
    if mode not in MODES:
        raise ConfigError(f"inference.mode must be one of {list(MODES)}, got {mode!r}")
    device = torch.device(device)
    if mode == "auto":
        small = hidden_size is not None and hidden_size < AUTO_INT8_MIN_HIDDEN
        return AUTO_MODE if device.type == "cpu" and not small else "fp32"
    if device.type != "cpu" and mode not in ("fp32", "bf16"):
        raise ConfigError(f"inference.mode={mode} runs on CPU only; the model is on {device}")
    if mode == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        log.warning("inference.mode=bf16: this CPU has no bf16 instructions; using fp32")
        return "fp32"
    return mode


def inference_options(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``inference`` config group checked: ``{"mode", "chunk_size"}`` with defaults.

    Raises:
        ConfigError: an unknown key, an unknown mode or a chunk size that is not a positive int,
            naming ``inference.<key>``.
    """
    options: dict[str, Any] = {"mode": "auto", "chunk_size": DEFAULT_CHUNK, **dict(spec or {})}
    unknown = sorted(set(options) - {"mode", "chunk_size"})
    if unknown:
        raise ConfigError(
            f"inference.{unknown[0]} is not an option; valid keys: inference.mode, "
            "inference.chunk_size"
        )
    if options["mode"] not in MODES:
        raise ConfigError(f"inference.mode must be one of {list(MODES)}, got {options['mode']!r}")
    chunk = options["chunk_size"]
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"inference.chunk_size must be a positive int, got {chunk!r}")
    return options


class _PooledEncoder(nn.Module):
    """``(input_ids, attention_mask, token_type_ids) -> pooled h [n, H]``: what is exported."""

    def __init__(self, encoder: nn.Module, pooling: str) -> None:
        super().__init__()
        self.encoder, self.pooling = encoder, pooling

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return pool(hidden, attention_mask, self.pooling)


def _torch_encoder(encoder: nn.Module, pooling: str, bf16: bool = False) -> EncodeFn:
    pooled = _PooledEncoder(encoder, pooling).eval()

    def encode(ids: Tensor, mask: Tensor, types: Tensor | None) -> Tensor:
        types = torch.zeros_like(ids) if types is None else types
        if bf16:
            with torch.autocast(ids.device.type, dtype=torch.bfloat16):
                return pooled(ids, mask, types).float()
        return pooled(ids, mask, types)

    return encode


def quantize_int8(encoder: nn.Module) -> nn.Module:
    """A copy of ``encoder`` with every ``nn.Linear`` dynamically quantised to int8."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch's notes on its move to torchao, once per model
        warnings.filterwarnings("ignore", message=".*(torchao|quantiz).*")
        return quantize_dynamic(copy.deepcopy(encoder).eval(), {nn.Linear}, dtype=torch.qint8)


def export_pooled_encoder(
    encoder: nn.Module, pooling: str, path: str | Path, vocab_size: int, tolerance: float = 1e-4
) -> Path:
    """Export encoder + pooling to ONNX (dynamic batch and sequence axes) and check it.

    Uses the ``torch.export``-based exporter (``dynamo=True``), as
    :func:`ranking.serving.onnx_student.export_onnx` does. After export, onnxruntime runs the graph
    on other shapes than the example's and must agree with PyTorch within ``tolerance``.

    Raises:
        RuntimeError: the exported graph differs from PyTorch by more than ``tolerance``.
    """
    path = Path(path)
    module = _PooledEncoder(encoder, pooling).eval()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    axes = {0: batch, 1: seq}
    torch.onnx.export(
        module,
        _example(vocab_size, 3, 12, seed=0),
        str(path),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["pooled"],
        dynamic_shapes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    session = _session(path)
    ids, mask, types = _example(vocab_size, 5, 9, seed=1)
    with torch.inference_mode():
        reference = module(ids, mask, types)
    got = _run_session(session, ids, mask, types)
    diff = float((got - reference).abs().max())
    if diff > tolerance:
        raise RuntimeError(f"ONNX encoder differs from PyTorch by {diff:.2e} (> {tolerance:.0e})")
    return path


def _example(vocab: int, batch: int, length: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000 % vocab, vocab, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, length // 2 :] = 0  # one padded row: the export must keep the mask path
    ids[0, length // 2 :] = 0
    types = torch.zeros_like(ids)
    types[:, length // 3 :] = 1
    return ids, mask, types


def _session(path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as err:  # pragma: no cover - an optional extra
        raise ConfigError(
            "inference.mode=onnx needs onnxruntime (pip install 'shoprank[serve]')"
        ) from err
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # timings compare with PyTorch's
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_session(session: Any, ids: Tensor, mask: Tensor, types: Tensor) -> Tensor:
    feeds = {
        "input_ids": ids.cpu().numpy().astype("int64"),
        "attention_mask": mask.cpu().numpy().astype("int64"),
        "token_type_ids": types.cpu().numpy().astype("int64"),
    }
    return torch.from_numpy(session.run(None, feeds)[0])


def _onnx_encoder(encoder: nn.Module, pooling: str, quantize: bool) -> EncodeFn:
    vocab = int(getattr(encoder.config, "vocab_size", 1000))
    with tempfile.TemporaryDirectory(prefix="shoprank-onnx-") as scratch:
        path = export_pooled_encoder(encoder, pooling, Path(scratch) / "encoder.onnx", vocab)
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = Path(scratch) / "encoder.int8.onnx"
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
            path = quantized
        session = _session(path)  # the session holds the graph in memory: the files may go

    def encode(ids: Tensor, mask: Tensor, types: Tensor | None) -> Tensor:
        types = torch.zeros_like(ids) if types is None else types
        return _run_session(session, ids, mask, types)

    return encode


class FastCrossEncoder:
    """A cross-encoder for inference only: length-sorted chunks, the encoder on a chosen backend.

    Called like :class:`~ranking.nn.cross_encoder.CrossEncoder` (``(input_ids, attention_mask,
    token_type_ids, region, region_features=None) -> TowerOutput``), so that
    :func:`ranking.nn.cross_encoder.score_lists` can use either. It holds its own copy of the
    encoder where the backend needs one (int8, ONNX): build it after the weights are final.

    Args:
        scorer: The trained cross-encoder (in eval mode; not modified).
        mode: One of :data:`MODES` (``auto`` resolved with :func:`resolve_mode`).
        chunk_size: Pairs per encoder call.
    """

    def __init__(self, scorer: CrossEncoder, mode: str = "auto", chunk_size: int = DEFAULT_CHUNK):
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"inference.chunk_size must be a positive int, got {chunk_size!r}")
        device = next(scorer.parameters()).device
        self.mode = resolve_mode(mode, device, int(scorer.tower.hidden_size))
        self.requested = mode
        self.chunk_size = chunk_size
        self.tower = scorer.tower
        encoder, pooling = scorer.encoder, scorer.pooling
        if self.mode in ("fp32", "bf16"):
            self.encode = _torch_encoder(encoder, pooling, bf16=self.mode == "bf16")
        elif self.mode == "int8":
            try:
                quantized = quantize_int8(encoder)
            except (ImportError, AttributeError, RuntimeError) as err:  # no quantised engine
                log.warning("inference.mode=int8 unavailable here (%s); using fp32", err)
                self.mode, quantized = "fp32", encoder
            self.encode = _torch_encoder(quantized, pooling)
        else:
            self.encode = _onnx_encoder(encoder, pooling, quantize=self.mode == "onnx_int8")
        self.hidden_size = int(scorer.tower.hidden_size)
        # what newer scorers add around the encoder, applied the same way when present
        self.prior = getattr(scorer, "prior", None)
        self.uses_types = bool(getattr(scorer, "uses_token_type_ids", True))

    @torch.inference_mode()
    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None,
        region: Tensor,
        region_features: Tensor | None = None,
        pair_features: Tensor | None = None,
    ) -> TowerOutput:
        h = self.pooled(input_ids, attention_mask, token_type_ids if self.uses_types else None)
        out = (
            self.tower(h, region)
            if region_features is None
            else self.tower(h, region, region_features)
        )
        if self.prior is None:  # a scorer with a score prior adds it as the scorer does
            return out
        if pair_features is None:
            raise ConfigError("the model has a score prior but the batch carries no pair_features")
        return out._replace(scores=out.scores + self.prior(pair_features).to(out.scores.dtype))

    def pooled(self, input_ids: Tensor, attention_mask: Tensor, types: Tensor | None) -> Tensor:
        """``[N, H]`` pooled encoder outputs, in the order of the inputs."""
        lengths = attention_mask.sum(dim=-1)
        order = torch.argsort(lengths, stable=True)
        parts = []
        for start in range(0, len(order), self.chunk_size):
            index = order[start : start + self.chunk_size]
            width = max(1, int(lengths[index].max()))
            parts.append(
                self.encode(
                    input_ids[index, :width],
                    attention_mask[index, :width],
                    None if types is None else types[index, :width],
                ).float()
            )
        out = input_ids.new_empty((len(order), self.hidden_size), dtype=torch.float32)
        if parts:
            out[order] = torch.cat(parts)
        return out
