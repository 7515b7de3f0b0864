"""Per-query latency and NDCG@10 of a cross-encoder teacher and its bi-encoder student.

Run: ``python -m bench.bench_latency [--student CKPT] [--teacher CKPT] [--out FILE]``
(``make bench-latency``). Without ``--student`` the newest distillation run under
``logs/distill/runs`` is used (its best checkpoint, and the teacher its ``metrics.json`` names).

In one process, on the same machine, with ``torch.set_num_threads(--threads)`` (default 1):

* **Latency** of ranking ``--candidates`` (default 100) products for one query, end to end from
  raw text to the top 10, for ``--queries`` validation queries after ``--warmup`` untimed ones.
  Candidates: the query's own list plus random other catalogue products up to 100.
  - teacher: tokenise 100 (query, product) pairs, one cross-encoder pass over the 100 pairs
    (dynamic padding), top-k;
  - student: tokenise the query, one query-tower pass, dot products with the 100 precomputed
    product vectors (computed once before timing, as in serving), top-k;
  - student (ONNX, ``--onnx``): the same with the query tower in onnxruntime.
  Teacher and student run alternately on each query, so machine noise hits both alike. Median,
  p95 and mean in milliseconds.
* **Quality**: NDCG@10 (mean over tasks, and per task) of both on the same validation lists
  (whole lists, the metric code of training).

Writes ``--out`` (default ``bench/results/latency.json``) and prints the speed-up (teacher median /
student median) and the NDCG ratio (student / teacher) against the targets (>= 10x, >= 95 %).
Timings on a shared machine are noisy: the file records the load average at start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

TARGET_SPEEDUP = 10.0
TARGET_NDCG_RATIO = 0.95


def newest_distill_run(log_dir: Path) -> tuple[Path, Path, Path]:
    """``(student ckpt, teacher ckpt, run config)`` of the newest finished distillation run."""
    for metrics in sorted((log_dir / "distill" / "runs").glob("*/metrics.json"), reverse=True):
        saved = json.loads(metrics.read_text())
        student, teacher = saved.get("best_checkpoint"), saved.get("teacher_ckpt")
        if student and teacher and Path(student).is_file() and Path(teacher).is_file():
            return Path(student), Path(teacher), metrics.parent / "config.yaml"
    raise SystemExit(
        f"error: no finished distillation run under {log_dir}/distill/runs; run `make train`, then "
        "`make distill ARGS=teacher_ckpt=<ckpt>`, or pass --student and --teacher"
    )


def summary(times_s: list[float]) -> dict[str, float]:
    ms = np.asarray(times_s) * 1000.0
    return {
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
    }


def quality(teacher: Any, student: Any, datamodule: Any, texts: Any, split: str) -> dict:
    """NDCG@10 of both models on the same whole lists of ``split``."""
    from data_modules.student import StudentDataModule
    from ranking.scorers.baselines import evaluate_scorer

    metrics = ["ndcg@10"]
    names, regions = teacher.task_names, datamodule.region_names
    teacher.use_data_regions(regions)
    student.use_data_regions(regions)
    with torch.inference_mode():
        t = evaluate_scorer(
            datamodule.eval_dataloader(split), teacher, names, regions, metrics, stage=split
        )
        loader = StudentDataModule(datamodule, texts, student.pad_token_id).loader(split)
        s = evaluate_scorer(loader, student, names, regions, metrics, stage=split)
    keys = [f"{split}/ndcg@10", *[f"{split}/{task}/ndcg@10" for task in names]]
    return {"teacher": {k: t[k] for k in keys}, "student": {k: s[k] for k in keys}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, help="bi-encoder checkpoint (experiments.distill)")
    parser.add_argument("--teacher", type=Path, help="cross-encoder checkpoint")
    parser.add_argument("--config", type=Path, help="run config.yaml whose data to use")
    parser.add_argument("--log-dir", type=Path, default=Path("logs"))
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--split", default="val")
    parser.add_argument("--onnx", action="store_true", help="also time the ONNX query tower")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/latency.json"))
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from omegaconf import OmegaConf, open_dict

    from experiments.workflows.config import build_datamodule
    from ranking.nn.encoders import load_tokenizer
    from ranking.scorers.prior_features import attach_prior_features
    from ranking.scorers.text_baselines import embed_texts, load_minilm
    from ranking.serving.checkpoints import load_checkpoint
    from ranking.serving.onnx_student import OnnxBiEncoder, export_onnx
    from ranking.serving.scoring import encode_tokens, torch_encoder

    if args.student is None:
        student_ckpt, teacher_ckpt, config = newest_distill_run(args.log_dir)
    else:
        if args.teacher is None:
            raise SystemExit("error: --teacher is needed with --student")
        student_ckpt, teacher_ckpt = args.student, args.teacher
        config = args.student.parent.parent / "config.yaml"
    config = args.config or config
    if not config.is_file():
        raise SystemExit(f"error: {config} does not exist; pass --config <run config.yaml>")
    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()

    teacher = load_checkpoint(teacher_ckpt, "--teacher", expect="cross_encoder")
    student = load_checkpoint(student_ckpt, "--student", expect="bi_encoder")
    cfg = OmegaConf.load(config)
    with open_dict(cfg):
        cfg.data.max_length = int(teacher.hparams.encoder.get("max_length", cfg.data.max_length))
    teacher_tok = load_tokenizer(teacher.hparams.encoder)
    datamodule = build_datamodule(cfg, teacher_tok, teacher.label_columns)
    datamodule.setup("fit")
    # A teacher with a score prior reads its first-stage feature (e.g. the zero-shot cosine).
    attach_prior_features(teacher, datamodule)
    prior_names = list(getattr(teacher, "prior_feature_names", []) or [])
    if prior_names and prior_names != ["minilm_cosine"]:
        raise SystemExit(f"error: no per-request serving path for prior features {prior_names}")
    texts = student.build_texts(datamodule)
    print(f"quality on {args.split} ...", file=sys.stderr)
    ndcg = quality(teacher, student, datamodule, texts, args.split)

    # ---- serving state: product vectors computed once, before any timing
    student_tok = student.tokenizer()
    model = student.model.eval()
    opts = student.bi_options
    vectors = encode_tokens(
        torch_encoder(model, "product"),
        texts.products,
        np.arange(len(texts.products)),
        student.pad_token_id,
        256,
    )
    product_vectors = torch.from_numpy(vectors)
    runtime = None
    if args.onnx:
        onnx_dir = Path(tempfile.mkdtemp(prefix="shoprank-onnx-"))  # removed at the end
        exported = export_onnx(model, onnx_dir)
        runtime = OnnxBiEncoder(
            exported["query"],
            exported["product"],
            opts["similarity"],
            opts["temperature"],
            threads=args.threads,
        )

    lists = datamodule.lists[args.split]
    if len(lists) == 0:
        raise SystemExit(f"error: the {args.split} split has no lists to time queries on")
    # Small splits: fewer warm-up queries rather than none timed.
    warmup = min(args.warmup, max(0, len(lists) - args.queries))
    rng = np.random.default_rng(args.seed)
    chosen = rng.permutation(len(lists))[: args.queries + warmup]
    num_products = len(texts.products)
    q_max, max_length = int(opts["query_max_length"]), int(cfg.data.max_length)
    scale = 1.0 / float(opts["temperature"]) if opts["similarity"] == "cosine" else 1.0
    teacher.use_data_regions(datamodule.region_names)
    # The teacher's score prior is served like the student: product embeddings once, up front;
    # per request the query is embedded and compared with its candidates.
    prior_model = load_minilm(device="cpu") if prior_names else None
    prior_products = embed_texts(texts.product_texts, prior_model) if prior_names else None
    times: dict[str, list[float]] = {"teacher": [], "student": [], "student_onnx": []}
    for n, i in enumerate(chosen):
        rows = lists.rows[i]
        own = texts.pair_product[rows]
        pool = np.setdiff1d(np.arange(num_products), own)
        extra = min(len(pool), max(0, args.candidates - len(own)))
        others = rng.choice(pool, extra, replace=False)
        candidates = np.concatenate([own, others])[: args.candidates]
        query = texts.query_texts[texts.pair_query[rows[0]]]
        products = [texts.product_texts[c] for c in candidates]
        region = teacher.region_lookup[int(lists.regions[i])]
        cand = torch.from_numpy(candidates)

        with torch.inference_mode():
            start = time.perf_counter()
            enc = teacher_tok(
                [query] * len(products),
                products,
                truncation="longest_first",
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            prior = None
            if prior_model is not None:  # [N, 1] zero-shot cosine of the query and each product
                prior = (prior_products[cand] @ embed_texts([query], prior_model)[0])[:, None]
            out = teacher.model(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                token_type_ids=enc["token_type_ids"],
                region=region.expand(len(products)),
                pair_features=prior,
            ).scores
            torch.topk(out[:, 0], min(10, len(products)))
            t_teacher = time.perf_counter() - start

            start = time.perf_counter()
            enc = student_tok([query], truncation=True, max_length=q_max, return_tensors="pt")
            q = model.encode_queries(enc["input_ids"], enc["attention_mask"])
            scores = (q * product_vectors[cand]).sum(-1) * scale
            torch.topk(scores[:, 0], min(10, len(products)))
            t_student = time.perf_counter() - start

        t_onnx = None
        if runtime is not None:
            start = time.perf_counter()
            enc = student_tok([query], truncation=True, max_length=q_max, return_tensors="np")
            q = runtime.encode_queries(enc["input_ids"], enc["attention_mask"])
            scores = np.einsum("kd,nkd->nk", q[0], vectors[candidates]) * scale
            np.argpartition(-scores[:, 0], min(10, len(products)) - 1)[:10]
            t_onnx = time.perf_counter() - start
        if n >= warmup:
            times["teacher"].append(t_teacher)
            times["student"].append(t_student)
            if t_onnx is not None:
                times["student_onnx"].append(t_onnx)

    if runtime is not None:
        shutil.rmtree(onnx_dir, ignore_errors=True)
    latency = {name: summary(values) for name, values in times.items() if values}
    speedup = latency["teacher"]["median_ms"] / latency["student"]["median_ms"]
    ratio = ndcg["student"][f"{args.split}/ndcg@10"] / ndcg["teacher"][f"{args.split}/ndcg@10"]
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_at_start": [round(x, 2) for x in load_at_start],
        },
        "teacher_ckpt": str(teacher_ckpt),
        "student_ckpt": str(student_ckpt),
        "queries": len(times["teacher"]),
        "candidates": args.candidates,
        # The teacher's time includes its score prior (query embedded per request).
        "teacher_prior_features": prior_names,
        "latency": latency,
        "speedup_median": speedup,
        "speedup_p95": latency["teacher"]["p95_ms"] / latency["student"]["p95_ms"],
        "ndcg@10": ndcg,
        "ndcg@10_ratio": ratio,
        "targets": {
            f"speedup >= {TARGET_SPEEDUP:g}x": speedup >= TARGET_SPEEDUP,
            f"ndcg ratio >= {TARGET_NDCG_RATIO:g}": ratio >= TARGET_NDCG_RATIO,
        },
    }
    if "student_onnx" in latency:
        result["speedup_median_onnx"] = (
            latency["teacher"]["median_ms"] / latency["student_onnx"]["median_ms"]
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    for name, values in latency.items():
        print(f"{name:>13}: median {values['median_ms']:8.2f} ms   p95 {values['p95_ms']:8.2f} ms")
    print(
        f"speed-up (median): {speedup:.1f}x   NDCG@10 {args.split}: student "
        f"{ndcg['student'][f'{args.split}/ndcg@10']:.4f} / teacher "
        f"{ndcg['teacher'][f'{args.split}/ndcg@10']:.4f} = {ratio:.1%}"
    )
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
