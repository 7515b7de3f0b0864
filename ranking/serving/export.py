"""Export a trained ranker: a Hugging Face directory, sentence-transformers models, ONNX, a card.

``export_model(module, out_dir, text)`` writes (no pickle anywhere; weights are safetensors):

Cross-encoder (:class:`ranking.modules.cross_encoder.RankingModule`)::

    out/config.json, model.safetensors, tokenizer files   the encoder (AutoModel loads it)
    out/heads.safetensors                                  the tower: task heads, region mask
    out/shoprank.json                                      model hyper-parameters, text options
    out/README.md                                          model card
    out/modules.json, 1_Pooling/, 2_Dense/, ...            sentence-transformers CrossEncoder
    out/onnx/cross_encoder.onnx                            ids -> [N, K] scores (+ parity check)

The sentence-transformers part is written when the tower is expressible as pooling plus dense
layers: one task with any ``tower.hidden_dims``, or several tasks with linear heads
(shared-bottom, ``hidden_dims: []``), and no region mask. ``CrossEncoder(out).predict(pairs)``
then returns shoprank's logits (activation ``Identity``; ``[N, K]`` for K tasks), checked to
``tolerance`` on sample pairs. Multi-task MMoE/SEQ towers and region-masked models load with
:meth:`ranking.Ranker.from_pretrained` (or :func:`load_exported`) only.

Bi-encoder student (:class:`ranking.modules.bi_encoder.BiEncoderModule`)::

    out/query_encoder/                  the query (shared) encoder + tokenizer, Hugging Face
    out/heads.safetensors               projection heads (and the product encoder if separate)
    out/shoprank.json, out/README.md
    out/sentence_transformers/<task>/   one SentenceTransformer per task (Router: query/document)
    out/onnx/{query,product}_encoder.onnx

``SentenceTransformer(out/sentence_transformers/<task>)``: ``encode_query`` / ``encode_document``
give the student's vectors of that task and ``similarity`` its score (``cos`` for a cosine
student, which shoprank divides by the temperature; the dot product otherwise), checked to
``tolerance``.

Queries: a model trained with ``data.region_in_query`` (the default) reads ``"{region} |
{query}"``; :class:`ranking.Ranker` adds the prefix itself, the sentence-transformers and ONNX
models expect it in the text (the model card says which).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_modules.errors import ConfigError
from ranking.serving.export_st import (
    build_st_cross_encoder,
    build_st_student,
    check_st_student,
    st_cross_encoder_unsupported,
)
from ranking.serving.exported import (
    CONFIG_FILE,
    EXPORT_FORMAT,
    HEADS_FILE,
    SAMPLE_PAIRS,
    _quiet,
    check_parity,
    load_export_dir,
)
from ranking.serving.model_card import model_card
from ranking.serving.onnx_cross_encoder import export_cross_encoder_onnx

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- helpers
def _plain(value: Any) -> Any:
    """JSON-ready copy of hyper-parameters (tuples -> lists, mappings -> dicts)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _encoder_spec(spec: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The encoder spec of an exported model: its saved directory (relative to the export)."""
    keep = {k: spec[k] for k in ("name", "pooling", "max_length", "lr") if k in spec}
    return {**keep, "source": "path", "path": path}


def _save_safetensors(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def _staging(out_dir: Path) -> Path:
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(
            f"out: {out_dir} exists and is not empty; export into a new directory (an export is "
            "never written over another)"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))


def _publish(staging: Path, out_dir: Path) -> None:
    if out_dir.exists():
        out_dir.rmdir()  # empty (checked before any work)
    staging.rename(out_dir)


# ---------------------------------------------------------------------------------------- export
def export_model(
    module: Any,
    out_dir: str | Path,
    text: Mapping[str, Any],
    run_dir: str | Path | None = None,
    onnx: bool = True,
    sentence_transformers: bool = True,
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Write ``module`` as the module docstring describes, check every copy against it.

    Args:
        module: A loaded cross-encoder or bi-encoder student.
        out_dir: A new (or empty) directory.
        text: :class:`ranking.serving.api.TextOptions` as a dict (how the run built its texts).
        run_dir: The training run (its ``config.yaml``, ``metrics.json`` and
            ``per_query.parquet`` fill the model card); ``None``: a card without them.
        onnx: Also write and check the ONNX graph(s).
        sentence_transformers: Also write and check the sentence-transformers model(s).
        tolerance: Largest accepted absolute score difference of every copy.

    Returns:
        ``{"out", "kind", "files", "checks": {name: max_abs_diff}, "sentence_transformers":
        reason-or-path}`` (also written to ``<out>/export.json``).

    Raises:
        ConfigError: ``out_dir`` is not empty.
        RuntimeError: A copy differs from the PyTorch model by more than ``tolerance``.
    """
    from ranking.modules.bi_encoder import BiEncoderModule

    out_dir = Path(out_dir).expanduser()
    for wanted, package, extra in (
        (onnx, "onnxruntime", "serve"),
        (onnx, "onnxscript", "serve"),
        (sentence_transformers, "sentence_transformers", "core"),
    ):
        if wanted and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"export needs {package} (pip install 'shoprank[{extra}]'), or turn that part "
                f"off: {'onnx' if package != 'sentence_transformers' else package}=false"
            )
    staging = _staging(out_dir)
    module = module.cpu().eval()
    student = isinstance(module, BiEncoderModule)
    summary: dict[str, Any] = {
        "out": str(out_dir),
        "kind": "bi_encoder" if student else "cross_encoder",
        "checks": {},
    }
    try:
        if student:
            _export_student(module, staging, summary, sentence_transformers, onnx, tolerance)
        else:
            _export_cross_encoder(module, staging, summary, sentence_transformers, onnx, tolerance)
        config = {
            "format": EXPORT_FORMAT,
            "kind": summary["kind"],
            "tasks": list(module.task_names),
            "regions": list(module.model_regions),
            "text": dict(text),
            "hparams": summary.pop("hparams"),
        }
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        card = model_card(module, config, summary, Path(run_dir) if run_dir else None)
        (staging / "README.md").write_text(card)
        summary["files"] = sorted(
            str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file()
        )
        (staging / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "Exported %s to %s; max abs score difference of each copy: %s",
        summary["kind"],
        out_dir,
        summary["checks"],
    )
    return summary


def _export_cross_encoder(
    module: Any,
    out: Path,
    summary: dict[str, Any],
    sentence_transformers: bool,
    onnx: bool,
    tolerance: float,
) -> None:
    from ranking.nn.encoders import load_tokenizer
    from ranking.serving.api import Ranker

    tokenizer = load_tokenizer(module.hparams.encoder)
    # Saved tokenizers truncate where training did (CrossEncoder and ONNX users call them).
    tokenizer.model_max_length = int(module.hparams.encoder.get("max_length", 64))
    hparams = _plain(dict(module.hparams))
    hparams["encoder"] = _encoder_spec(module.hparams.encoder, ".")
    summary["hparams"] = hparams
    reference = Ranker(module, device="cpu").score_pairs(list(SAMPLE_PAIRS))
    if sentence_transformers:
        reason = st_cross_encoder_unsupported(module)
        if reason is None:
            model = build_st_cross_encoder(module, tokenizer, out)
            model.save(str(out))
            from sentence_transformers import CrossEncoder

            loaded = CrossEncoder(str(out), local_files_only=True, device="cpu")
            got = loaded.predict(list(SAMPLE_PAIRS), batch_size=4, show_progress_bar=False)
            got = np.asarray(got).reshape(len(SAMPLE_PAIRS), -1)
            summary["checks"]["sentence_transformers"] = check_parity(
                "sentence_transformers.CrossEncoder", got, reference, tolerance
            )
            summary["sentence_transformers"] = "."
        else:
            summary["sentence_transformers"] = f"not written: {reason}"
    if not (out / "config.json").is_file():  # without the CrossEncoder: the encoder alone
        module.model.encoder.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    heads = {k: v for k, v in module.model.state_dict().items() if not k.startswith("encoder.")}
    _save_safetensors(heads, out / HEADS_FILE)
    if onnx:
        result = export_cross_encoder_onnx(module, tokenizer, out / "onnx", tolerance)
        summary["checks"]["onnx"] = result["max_abs_diff"]
        summary["onnx"] = {
            "path": "onnx/cross_encoder.onnx",
            "inputs": result["inputs"],
            "outputs": ["scores"],
            "tokenizer": "onnx/tokenizer",
        }
    # The exported directory rebuilds the same model.
    rebuilt, _ = load_export_dir(out, json.loads(json.dumps(hparams)), "cross_encoder")
    summary["checks"]["reload"] = check_parity(
        "the reloaded export",
        Ranker(rebuilt, device="cpu").score_pairs(list(SAMPLE_PAIRS)),
        reference,
        tolerance,
    )


def _export_student(
    module: Any,
    out: Path,
    summary: dict[str, Any],
    sentence_transformers: bool,
    onnx: bool,
    tolerance: float,
) -> None:
    from ranking.serving.api import Ranker
    from ranking.serving.onnx_student import export_onnx

    tokenizer = module.tokenizer()
    model = module.model
    encoder_dir = out / "query_encoder"
    model.query_encoder.save_pretrained(str(encoder_dir))
    tokenizer.save_pretrained(str(encoder_dir))
    heads = {k: v for k, v in model.state_dict().items() if not k.startswith("query_encoder.")}
    _save_safetensors(heads, out / HEADS_FILE)
    hparams = _plain(dict(module.hparams))
    hparams["encoder"] = _encoder_spec(module.hparams.encoder, "query_encoder")
    summary["hparams"] = hparams
    ranker = Ranker(module, device="cpu")
    queries = sorted({q for q, _ in SAMPLE_PAIRS})
    products = [p for _, p in SAMPLE_PAIRS]
    reference = np.stack([ranker._score_student(q, products) for q in queries])  # [Q, P, K]
    if sentence_transformers:
        summary["sentence_transformers"] = {}
        for k, task in enumerate(module.task_names):
            path = out / "sentence_transformers" / task
            build_st_student(module, tokenizer, k).save(str(path))
            diff = check_st_student(path, queries, products, reference[..., k], module, tolerance)
            summary["checks"][f"sentence_transformers/{task}"] = diff
            summary["sentence_transformers"][task] = str(path.relative_to(out))
    if onnx:
        with _quiet():
            result = export_onnx(model, out / "onnx", tolerance)
        tokenizer.save_pretrained(str(out / "onnx" / "tokenizer"))
        summary["checks"]["onnx"] = result["max_abs_diff"]
        summary["onnx"] = {
            "paths": ["onnx/query_encoder.onnx", "onnx/product_encoder.onnx"],
            "inputs": ["input_ids", "attention_mask"],
            "outputs": ["vectors"],
            "tokenizer": "onnx/tokenizer",
        }
    rebuilt, _ = load_export_dir(out, json.loads(json.dumps(hparams)), "bi_encoder")
    again = Ranker(rebuilt, device="cpu")
    got = np.stack([again._score_student(q, products) for q in queries])
    summary["checks"]["reload"] = check_parity("the reloaded export", got, reference, tolerance)
