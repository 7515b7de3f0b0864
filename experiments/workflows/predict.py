"""``predict(cfg)``: rank every candidate of a split with a checkpoint -> TREC run + parquet.

Scoring itself is the library's (:mod:`ranking.serving.scoring`); this is the workflow behind
``python -m experiments.predict``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from data_modules.errors import ConfigError
from experiments.workflows.config import build_datamodule, check_config_values
from experiments.workflows.run_dir import guard_output_dir
from ranking.analysis.report import write_json
from ranking.modules.bi_encoder import BiEncoderModule
from ranking.nn.encoders import load_tokenizer
from ranking.nn.inference import inference_options
from ranking.scorers.prior_features import attach_prior_features
from ranking.serving.checkpoints import file_sha256, load_checkpoint
from ranking.serving.onnx_student import OnnxBiEncoder, export_onnx
from ranking.serving.scoring import (
    BACKENDS,
    LabelsOptional,
    build_product_index,
    score_bi_encoder,
    score_cross_encoder,
    scores_frame,
    torch_encoder,
    write_trec_run,
)
from ranking.serving.trec import check_run_name, pair_frame, write_trec_files

log = logging.getLogger(__name__)


def _mandatory(cfg: Any, key: str, hint: str) -> str:
    try:
        value = cfg.get(key)
    except MissingMandatoryValue:
        value = None
    if value in (None, "", "???"):
        raise ConfigError(f"{key} is not set: {hint}")
    return str(value)


def _rank_with_student(
    cfg: Any,
    module: BiEncoderModule,
    datamodule: Any,
    split: str,
    ckpt: Path,
    summary: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """Student scores of ``split``: (ONNX export,) product index (reused if saved), queries."""
    backend, device = cfg.get("backend", "torch"), cfg.get("device", "cpu")
    batch_size = int(cfg.get("batch_size", 256))
    opts = module.bi_options
    model = module.model.eval()
    texts = module.build_texts(datamodule)
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("export_onnx") or backend == "onnx":
        exported = export_onnx(model.cpu(), output_dir / "onnx")
        module.tokenizer().save_pretrained(str(output_dir / "onnx" / "tokenizer"))
        summary["onnx"] = {k: str(v) if isinstance(v, Path) else v for k, v in exported.items()}
    if backend == "onnx":
        runtime = OnnxBiEncoder(
            exported["query"], exported["product"], opts["similarity"], opts["temperature"]
        )
        encode_q, encode_p = runtime.encode_queries, runtime.encode_products
    else:
        model.to(device)
        encode_q, encode_p = (
            torch_encoder(model, "query", device),
            torch_encoder(model, "product", device),
        )
    start = time.perf_counter()
    index, reused = build_product_index(
        encode_p,
        texts,
        module.pad_token_id,
        cfg.paths.cache_dir,
        f"{file_sha256(ckpt)}|{backend}",
        batch_size,
    )
    summary["product_vectors"] = {
        "path": str(Path(cfg.paths.cache_dir) / "product_vectors" / index.key),
        "products": len(index.product_ids),
        "reused": reused,
        "seconds": round(time.perf_counter() - start, 3),
    }
    start = time.perf_counter()
    rows, scores = score_bi_encoder(
        encode_q,
        index,
        texts,
        datamodule,
        split,
        module.pad_token_id,
        opts["similarity"],
        float(opts["temperature"]),
        batch_size,
    )
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return rows, scores


def predict(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rank every candidate of every query of ``cfg.split`` with ``cfg.ckpt_path``.

    Writes into ``cfg.paths.output_dir``: ``run.trec`` (ordered by ``cfg.rank_by``, default the
    model's first task), ``run.<task>.trec`` per task and ``qrels.<task>.txt`` per task whose
    labels the data has (ids with whitespace numbered, ``qids.tsv``/``docids.tsv`` map them
    back; :mod:`ranking.serving.trec`), ``scores.parquet`` (query_id, product_id, region,
    ``score_<task>`` per task, rank), ``predictions.json`` (what was done, paths, timings)
    and, for a student with ``export_onnx``, ``onnx/``. A student's product vectors are saved under
    ``<paths.cache_dir>/product_vectors/`` and reused by later calls.

    Returns:
        ``(summary, objects)``: the ``predictions.json`` payload and the frame, module, datamodule.
    """
    check_config_values(cfg)
    guard_output_dir(Path(cfg.paths.output_dir), resumable=False)
    ckpt = Path(_mandatory(cfg, "ckpt_path", "pass ckpt_path=<checkpoint of a model>"))
    backend = cfg.get("backend", "torch")
    inference = inference_options(cfg.get("inference"))  # checked before any work
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    module = load_checkpoint(ckpt)
    student = isinstance(module, BiEncoderModule)
    if backend == "onnx" and not student:
        raise ConfigError("backend=onnx serves bi-encoder students only; this is a cross-encoder")
    rank_by = cfg.get("rank_by") or module.task_names[0]
    if rank_by not in module.task_names:
        raise ConfigError(f"rank_by: unknown task {rank_by!r}; the model's: {module.task_names}")
    run_name = str(cfg.get("run_name", "shoprank"))
    check_run_name(run_name)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    split = cfg.split
    with open_dict(cfg):
        if split == "all":
            cfg.data.splits = {"test": 1.0}
            split = "test"
        cfg.data.eval_max_list_size = None  # rank every candidate
        # The cross-encoder reads pairs at its training length; a student reads its own tokens.
        cfg.data.max_length = int(module.hparams.encoder.get("max_length", 64))
    datamodule = build_datamodule(cfg, load_tokenizer(module.hparams.encoder), module.label_columns)
    datamodule.source = LabelsOptional(datamodule.source, module.label_columns)
    if cfg.split != "all":  # the model's own split: split=test ranks its test queries only
        datamodule.use_split(module.data_split, str(ckpt))
    datamodule.setup("predict")
    if split not in datamodule.lists:
        raise ConfigError(
            f"split: the data has no '{split}' split (data.splits: {datamodule.splits})"
        )
    # Written once the data passed its checks: a stopped call leaves no run behind it.
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    device = cfg.get("device", "cpu")
    summary: dict[str, Any] = {
        "checkpoint": str(ckpt),
        "kind": "bi_encoder" if student else "cross_encoder",
        "split": cfg.split,
        "rank_by": rank_by,
        "tasks": module.task_names,
        "labels_filled": datamodule.source.filled,
    }
    if student:
        rows, scores = _rank_with_student(cfg, module, datamodule, split, ckpt, summary)
    else:
        attach_prior_features(module, datamodule)
        start = time.perf_counter()
        rows, scores = score_cross_encoder(module, datamodule, split, device, inference)
        summary["seconds"] = round(time.perf_counter() - start, 3)
        summary["inference_mode"] = module.fast_scorer.mode if module.fast_scorer else "fp32"

    frame = scores_frame(datamodule, rows, scores, module.task_names, rank_by)
    frame.write_parquet(output_dir / "scores.parquet")
    write_trec_run(frame, output_dir / "run.trec", f"score_{rank_by}", run_name)
    # Per task: run.<task>.trec, and qrels.<task>.txt where the data has the task's labels.
    label_tasks = [
        t
        for t, column in zip(module.task_names, module.label_columns, strict=True)
        if column not in datamodule.source.filled
    ]
    files = write_trec_files(
        output_dir,
        pair_frame(datamodule, rows, scores, module.task_names, label_tasks),
        module.task_names,
        label_tasks,
        run_name,
    )
    summary["trec_files"] = {k: files[k] for k in ("runs", "qrels", "levels", "id_maps")}
    summary.update(
        queries=int(frame.get_column("query_id").n_unique()),
        pairs=frame.height,
        run_file=str(output_dir / "run.trec"),
        scores_file=str(output_dir / "scores.parquet"),
    )
    write_json(output_dir / "predictions.json", summary)
    log.info(
        "Ranked %d candidates of %d queries in %.1f s -> %s",
        frame.height,
        summary["queries"],
        summary["seconds"],
        output_dir,
    )
    return summary, {"frame": frame, "module": module, "datamodule": datamodule}
