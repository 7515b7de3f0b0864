"""Load a model back from a directory written by :func:`ranking.serving.export.export_model`.

The reading half of the export format (the writing half, :mod:`ranking.serving.export`, checks every
export by loading it back with :func:`load_export_dir`): ``shoprank.json`` holds the model's
hyper-parameters and text options, ``heads.safetensors`` its non-encoder weights, the encoder
is a Hugging Face directory inside the export.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_modules.errors import ConfigError

EXPORT_FORMAT = 1
CONFIG_FILE = "shoprank.json"
HEADS_FILE = "heads.safetensors"

# Parity-check pairs: short and long, one product longer than any max_length (truncation).
SAMPLE_PAIRS: tuple[tuple[str, str], ...] = (
    ("red running shoes", "Nike Air Zoom Pegasus ; Nike ; red"),
    ("red running shoes", "Blue wool winter hat ; Acme ; blue"),
    ("cordless drill", "20V MAX cordless drill driver kit with two batteries and charger"),
    ("4 inch pvc pipe", "Charlotte Pipe 4 in. x 10 ft. PVC schedule 40 DWV pipe"),
    ("sofa", "Three seat sofa ; " + "soft grey fabric, oak legs, " * 30),
    ("x", "y"),
    ("garden hose 50 ft", "Flexzilla garden hose 5/8 in. x 50 ft. ; Flexzilla ; green"),
)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' and loaders' per-tensor INFO lines (kept: warnings, errors)."""
    import transformers

    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    verbosity = transformers.logging.get_verbosity()
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        transformers.logging.set_verbosity(verbosity)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def load_export_dir(directory: Path, hparams: dict[str, Any], kind: str) -> Any:
    from ranking.modules.bi_encoder import BiEncoderModule
    from ranking.modules.cross_encoder import RankingModule

    spec = dict(hparams["encoder"])
    spec["path"] = str((directory / spec["path"]).resolve())
    hparams = {**hparams, "encoder": spec}
    cls = BiEncoderModule if kind == "bi_encoder" else RankingModule
    with _quiet():  # a BERT saved without its unused pooler is reported as "missing" keys
        module = cls(**hparams)
    target = module.model
    state = _load_safetensors(directory / HEADS_FILE)
    result = target.load_state_dict(state, strict=False)
    encoder_prefix = "query_encoder." if kind == "bi_encoder" else "encoder."
    # A BERT saved without its pooler (shoprank pools itself) gets a fresh, unused one on load.
    missing = [
        k for k in result.missing_keys if not k.startswith(encoder_prefix) and ".pooler." not in k
    ]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"{directory / HEADS_FILE} does not fit the model in {CONFIG_FILE}: missing "
            f"{missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return module.eval(), spec


def load_exported(directory: str | Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild the model of an exported directory: ``(module in eval mode, text options)``.

    Raises:
        ConfigError: The directory has no ``shoprank.json`` or a format this version cannot read.
    """
    directory = Path(directory).expanduser()
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{directory}: no {CONFIG_FILE}; not a directory of experiments.export")
    config = json.loads(path.read_text())
    if config.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"{path}: export format {config.get('format')!r} is not {EXPORT_FORMAT}")
    module, _ = load_export_dir(directory, config["hparams"], config["kind"])
    return module, config["text"]


def check_parity(name: str, got: np.ndarray, want: np.ndarray, tolerance: float) -> float:
    """Max abs difference of an exported form's scores from PyTorch's; above ``tolerance`` it
    raises ``RuntimeError`` (every export is checked before it is published)."""
    diff = float(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)).max())
    if not diff <= tolerance:
        raise RuntimeError(f"export: {name} differs from PyTorch by {diff:.2e} (> {tolerance:.0e})")
    return diff
