"""``export(cfg)``: ship a trained ranker (Hugging Face dir, sentence-transformers, ONNX, card).

Writes the model as a Hugging Face directory with its task heads, ``shoprank.json`` and a model
card, plus sentence-transformers and ONNX copies, each checked against PyTorch
(:mod:`ranking.serving.export`). ``Ranker.from_pretrained(<dir>)`` loads it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from data_modules.errors import ConfigError
from ranking.serving.api import TextOptions, run_config_of
from ranking.serving.checkpoints import load_checkpoint
from ranking.serving.export import export_model


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` into ``cfg.out``; the model card reads the checkpoint's run."""
    try:
        ckpt = cfg.ckpt_path
    except MissingMandatoryValue:
        ckpt = None
    if not ckpt:
        raise ConfigError("ckpt_path is not set: pass ckpt_path=<checkpoint> out=<new directory>")
    module = load_checkpoint(str(ckpt))
    config = run_config_of(str(ckpt))
    text = TextOptions.from_run_config(config) if config else TextOptions()
    summary = export_model(
        module,
        Path(str(cfg.out)),
        text.to_dict(),
        run_dir=config.parent if config else None,
        onnx=bool(cfg.onnx),
        sentence_transformers=bool(cfg.sentence_transformers),
        tolerance=float(cfg.tolerance),
    )
    print(json.dumps({k: summary[k] for k in ("out", "kind", "checks")}, indent=2))
    return summary
