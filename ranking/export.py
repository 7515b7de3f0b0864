"""Export a trained ranker: a Hugging Face directory, sentence-transformers models, ONNX, a card.

``export_model(module, out_dir, text)`` writes (no pickle anywhere; weights are safetensors):

Cross-encoder (:class:`ranking.module.RankingModule`)::

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

Bi-encoder student (:class:`ranking.bi_encoder.BiEncoderModule`)::

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
import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn

from data_modules.errors import ConfigError
from ranking.exported import (
    CONFIG_FILE,
    EXPORT_FORMAT,
    HEADS_FILE,
    _quiet,
    load_export_dir,
)

log = logging.getLogger(__name__)

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
        text: :class:`ranking.api.TextOptions` as a dict (how the run built its texts).
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
    from ranking.bi_encoder import BiEncoderModule

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


def _check(name: str, got: np.ndarray, want: np.ndarray, tolerance: float) -> float:
    diff = float(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)).max())
    if not diff <= tolerance:
        raise RuntimeError(f"export: {name} differs from PyTorch by {diff:.2e} (> {tolerance:.0e})")
    return diff


def _export_cross_encoder(
    module: Any,
    out: Path,
    summary: dict[str, Any],
    sentence_transformers: bool,
    onnx: bool,
    tolerance: float,
) -> None:
    from ranking.api import Ranker
    from ranking.encoders import load_tokenizer

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
            summary["checks"]["sentence_transformers"] = _check(
                "sentence_transformers.CrossEncoder", got, reference, tolerance
            )
            summary["sentence_transformers"] = "."
        else:
            summary["sentence_transformers"] = f"not written: {reason}"
    if not (out / "config.json").is_file():  # without the CrossEncoder: the encoder alone
        module.scorer.encoder.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    heads = {k: v for k, v in module.scorer.state_dict().items() if not k.startswith("encoder.")}
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
    summary["checks"]["reload"] = _check(
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
    from ranking.api import Ranker
    from ranking.serving import export_onnx

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
            diff = _check_st_student(path, queries, products, reference[..., k], module, tolerance)
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
    summary["checks"]["reload"] = _check("the reloaded export", got, reference, tolerance)


# ---------------------------------------------------------------------------------------- ST
def st_cross_encoder_unsupported(module: Any) -> str | None:
    """Why the cross-encoder has no sentence-transformers form (``None``: it has one)."""
    tower = dict(module.hparams.get("tower") or {"name": "shared_bottom"})
    if module.uses_region_mask:
        return "a region-masked model needs the region id (use ranking.Ranker)"
    if getattr(module, "prior_feature_names", None):
        return "a model with a score prior needs its first-stage scores (use ranking.Ranker)"
    if tower.get("name") != "shared_bottom":
        return f"tower '{tower.get('name')}' is not a stack of dense layers (use ranking.Ranker)"
    if len(module.task_names) > 1 and list(tower.get("hidden_dims") or []):
        return "several tasks with hidden layers are parallel MLPs (use ranking.Ranker)"
    return None


def build_st_cross_encoder(module: Any, tokenizer: Any, out: Path) -> Any:
    """A ``sentence_transformers.CrossEncoder`` computing the module's scores.

    Transformer (``feature-extraction``, the module's ``max_length``) -> Pooling (the module's
    ``cls``/``mean``) -> Dense layers (the task heads; ReLU between hidden layers, Identity at the
    end, output ``scores``), activation ``Identity`` so that ``predict`` returns logits.
    """
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    scorer = module.scorer
    scorer.encoder.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    max_length = int(module.hparams.encoder.get("max_length", 64))
    transformer = Transformer(str(out), transformer_task="feature-extraction")
    transformer.max_seq_length = max_length
    hidden = int(scorer.encoder.config.hidden_size)
    pooling = Pooling(hidden, pooling_mode=scorer.pooling)
    layers = _dense_layers(scorer.tower.heads)
    dense = []
    for i, (linear, last) in enumerate(layers):
        block = Dense(
            linear.in_features,
            linear.out_features,
            activation_function=None if last else nn.ReLU(),
            init_weight=linear.weight.detach().clone(),
            init_bias=linear.bias.detach().clone(),
            module_output_name="scores" if i == len(layers) - 1 else None,
        )
        dense.append(block)
    return CrossEncoder(
        modules=[transformer, pooling, *dense], activation_fn=nn.Identity(), device="cpu"
    )


def _dense_layers(heads: nn.ModuleList) -> list[tuple[nn.Linear, bool]]:
    """The heads as a chain of linear layers: one head's MLP, or K linear heads stacked."""
    linears = [[m for m in head if isinstance(m, nn.Linear)] for head in heads]
    if len(heads) == 1:
        chain = linears[0]
        return [(layer, i == len(chain) - 1) for i, layer in enumerate(chain)]
    stacked = nn.Linear(linears[0][0].in_features, len(heads))
    with torch.no_grad():
        stacked.weight.copy_(torch.cat([h[0].weight for h in linears]))
        stacked.bias.copy_(torch.cat([h[0].bias for h in linears]))
    return [(stacked, True)]


def build_st_student(module: Any, tokenizer: Any, task: int) -> Any:
    """A ``SentenceTransformer`` of one task of the student: a query route and a document route.

    Each route: Transformer (its side's encoder and max length) -> Pooling -> Dense (the task's
    rows of that side's projection) -> Normalize when the student's similarity is cosine. The
    model's ``similarity_fn_name`` is ``cosine`` or ``dot`` accordingly.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Router, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    model, opts = module.model, module.bi_options
    dim = int(opts["dim"])
    routes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side, encoder, head, length in (
            ("query", model.query_encoder, model.query_head, opts["query_max_length"]),
            (
                "document",
                model.product_encoder or model.query_encoder,
                model.product_head,
                opts["product_max_length"],
            ),
        ):
            path = Path(tmp) / side
            encoder.save_pretrained(str(path))
            tokenizer.save_pretrained(str(path))
            transformer = Transformer(str(path), transformer_task="feature-extraction")
            transformer.max_seq_length = int(length)
            rows = slice(task * dim, (task + 1) * dim)
            hidden = int(encoder.config.hidden_size)
            modules = [
                transformer,
                Pooling(hidden, pooling_mode=opts["pooling"]),
                Dense(
                    hidden,
                    dim,
                    activation_function=None,
                    init_weight=head.weight[rows].detach().clone(),
                    init_bias=head.bias[rows].detach().clone(),
                ),
            ]
            if opts["similarity"] == "cosine":
                modules.append(Normalize())
            routes[side] = modules
        router = Router.for_query_document(routes["query"], routes["document"])
        similarity = "cosine" if opts["similarity"] == "cosine" else "dot"
        return SentenceTransformer(modules=[router], similarity_fn_name=similarity, device="cpu")


def _check_st_student(
    path: Path,
    queries: Sequence[str],
    products: Sequence[str],
    reference: np.ndarray,
    module: Any,
    tolerance: float,
) -> float:
    from sentence_transformers import SentenceTransformer

    loaded = SentenceTransformer(str(path), local_files_only=True, device="cpu")
    q = loaded.encode_query(list(queries), convert_to_tensor=True)
    p = loaded.encode_document(list(products), convert_to_tensor=True)
    scores = loaded.similarity(q, p).numpy()
    if module.bi_options["similarity"] == "cosine":
        scores = scores / float(module.bi_options["temperature"])
    return _check(f"SentenceTransformer {path.name}", scores, reference, tolerance)


# ---------------------------------------------------------------------------------------- ONNX
class _CrossEncoderGraph(nn.Module):
    """The cross-encoder as ``(input_ids, attention_mask[, token_type_ids], region[, features])
    -> scores [N, K]`` for ``torch.onnx.export`` (no data-dependent checks inside)."""

    def __init__(self, scorer: nn.Module, uses_types: bool, uses_features: bool) -> None:
        super().__init__()
        self.scorer, self.uses_types, self.uses_features = scorer, uses_types, uses_features

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        from ranking.encoders import pool

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
    if module.scorer.uses_token_type_ids:
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
        module.scorer, "token_type_ids" in names, "region_features" in names
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
    no_check = mock.patch("ranking.towers.region_mask.check_region_ids", lambda *_: None)
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
    diff = _check("cross_encoder.onnx", got, want, tolerance)
    tokenizer.save_pretrained(str(out_dir / "tokenizer"))
    log.info("ONNX cross-encoder written to %s (max abs diff vs PyTorch %.2e)", path, diff)
    return {"path": str(path), "inputs": names, "max_abs_diff": diff}


# ---------------------------------------------------------------------------------------- card
def _run_files(run_dir: Path | None) -> tuple[dict, dict, Any]:
    import polars as pl
    import yaml

    if run_dir is None:
        return {}, {}, None
    config = (
        yaml.safe_load((run_dir / "config.yaml").read_text())
        if (run_dir / "config.yaml").is_file()
        else {}
    )
    metrics = (
        json.loads((run_dir / "metrics.json").read_text())
        if (run_dir / "metrics.json").is_file()
        else {}
    )
    per_query = (
        pl.read_parquet(run_dir / "per_query.parquet")
        if (run_dir / "per_query.parquet").is_file()
        else None
    )
    return config or {}, metrics, per_query


def _metric_lines(module: Any, metrics: dict, per_query: Any) -> list[str]:
    import polars as pl

    from ranking.compare import bootstrap_interval

    if per_query is None or not metrics.get("test"):
        return ["No test metrics were found beside the checkpoint."]
    scorers = [s for s in ("model", "teacher", "random", "bm25") if s in set(per_query["scorer"])]
    lines = [
        f"Test split of the training run ({metrics.get('split', 'test')}), mean over queries with "
        "a positive label for the task, [95% percentile bootstrap interval over queries]:",
        "",
        "| task | metric | " + " | ".join(scorers) + " | queries |",
        "|---|---|" + "---|" * len(scorers) + "---|",
    ]
    for task in module.task_names:
        for spec in module.hparams.metrics:
            cells = []
            count = 0
            for scorer in scorers:
                values = per_query.filter(
                    (pl.col("scorer") == scorer)
                    & (pl.col("task") == task)
                    & (pl.col("metric") == spec)
                )["value"].to_numpy()
                mean, low, high = bootstrap_interval(values, resamples=1000)
                count = max(count, len(values))
                cells.append("n/a" if math.isnan(mean) else f"{mean:.3f} [{low:.3f}, {high:.3f}]")
            lines.append(f"| {task} | {spec} | " + " | ".join(cells) + f" | {count} |")
    return lines


def model_card(
    module: Any, config: Mapping[str, Any], summary: Mapping[str, Any], run_dir: Path | None
) -> str:
    """``README.md`` of an export: data, recipe, metrics with intervals, use, limits."""
    run_config, metrics, per_query = _run_files(run_dir)
    data = run_config.get("data") or {}
    hp = config["hparams"]
    kind = config["kind"]
    text = config["text"]
    prefix = (
        hp.get("bi_encoder", {}).get("query_region_prefix")
        if kind == "bi_encoder"
        else text["region_in_query"]
    )
    query_form = '`"{region} | {query}"`' if prefix else "the query text alone"
    st = summary.get("sentence_transformers")
    if kind == "cross_encoder" and st == ".":
        st_use = [
            "```python",
            "from sentence_transformers import CrossEncoder",
            "model = CrossEncoder('<this dir>')",
            "scores = model.predict([(query_text, product_text), ...])  # logits, [N] or [N, K]",
            "```",
        ]
    elif kind == "bi_encoder" and isinstance(st, Mapping):
        st_use = [
            "```python",
            "from sentence_transformers import SentenceTransformer",
            f"model = SentenceTransformer('<this dir>/sentence_transformers/{config['tasks'][0]}')",
            "scores = model.similarity(model.encode_query([query_text]), "
            "model.encode_document(product_texts))",
            "```",
        ]
    else:
        st_use = [f"sentence-transformers: {st}." if st else ""]
    recipe = {
        "encoder": (run_config.get("encoder") or {}).get("name") or hp["encoder"].get("name"),
        "pooling": hp["encoder"].get("pooling"),
        "max_length": hp["encoder"].get("max_length"),
        "tower": (hp.get("tower") or {}).get("name") if kind == "cross_encoder" else "bi-encoder",
        "region_mask": (hp.get("region_mask") or {}).get("name", "none")
        if kind == "cross_encoder"
        else "none",
        "loss": (hp.get("loss") or {}).get("name"),
        "lr": (hp.get("optimizer") or {}).get("lr"),
        "epochs": (run_config.get("trainer") or {}).get("max_epochs"),
        "seed": run_config.get("seed"),
    }
    if kind == "bi_encoder":
        recipe["distillation"] = hp.get("distillation")
        recipe["similarity"] = hp.get("bi_encoder", {}).get("similarity")
    checks = ", ".join(f"{k} {v:.1e}" for k, v in summary.get("checks", {}).items())
    lines = [
        "---",
        "library_name: shoprank",
        "tags: [shoprank, learning-to-rank, e-commerce, "
        + ("cross-encoder" if kind == "cross_encoder" else "bi-encoder")
        + "]",
        "---",
        "",
        f"# shoprank {kind.replace('_', '-')}: {', '.join(config['tasks'])}",
        "",
        "A product ranker trained with shoprank: one score per "
        f"task ({', '.join(config['tasks'])}), higher is better (logits, not probabilities).",
        "",
        "## Data",
        "",
        f"- source: `{data.get('_target_', 'unknown').rsplit('.', 1)[-1]}`"
        + (f" ({data['name']})" if data.get("name") else ""),
        *([f"- file: `{data['path']}`"] if data.get("path") else []),
        *(
            [f"- engagement labels simulated: `{data['engagement']}`"]
            if data.get("engagement")
            else []
        ),
        f"- regions: {', '.join(config['regions'])}",
        f"- splits by query: {data.get('splits', 'unknown')}, seed {data.get('seed', 'unknown')}",
        f"- product text: fields {', '.join(text['product_text_fields'])} joined by ` ; `",
        f"- query text: {query_form}",
        "",
        "## Recipe",
        "",
        *[f"- {k}: {v}" for k, v in recipe.items() if v is not None],
        "",
        "## Metrics",
        "",
        *_metric_lines(module, metrics, per_query),
        "",
        "## Use",
        "",
        "```python",
        "from ranking import Ranker",
        "ranker = Ranker.from_pretrained('<this dir>')",
        "ranker.rank('red running shoes', ['Nike Air Zoom ; Nike ; red', 'Blue wool hat'], "
        f"region='{config['regions'][0]}')",
        "```",
        "",
        *st_use,
        "",
        "ONNX: `onnx/` with its tokenizer (inputs and outputs in `export.json`).",
        f"Every copy was checked against the PyTorch model (max abs score difference: {checks}).",
        "",
        "## Intended use and limits",
        "",
        "- Re-ranking a short list of candidate products for a query (tens to hundreds); "
        + (
            "a cross-encoder reads every pair, so it does not scale to retrieval over a catalogue."
            if kind == "cross_encoder"
            else "product vectors can be precomputed; queries are encoded online."
        ),
        "- Trained on the data above only: other markets, languages or catalogues need their own "
        "evaluation before use; a region mask knows only its training regions.",
        "- The metrics are from one training run (one seed) on held-out queries of the same "
        "data; the intervals cover query sampling, not training randomness.",
        "- Engagement labels may be simulated (see the run's config, `data.engagement`); scores "
        "then reflect the simulator, not real shoppers.",
        "",
    ]
    return "\n".join(lines)
