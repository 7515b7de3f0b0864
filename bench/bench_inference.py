"""Cross-encoder inference on CPU: every ``inference.mode`` against float32 PyTorch, same pairs.

Run: ``python -m bench.bench_inference [--ckpt CKPT [--config RUN/config.yaml]] [--quick]
[--out bench/results/inference.json]``.

The model: a fine-tuned pretrained MiniLM cross-encoder. Without ``--ckpt`` the benchmark makes one:
``experiments.train encoder=minilm_l6 data=homedepot`` (graded relevance only, lr 1e-4) for
``--train-steps`` steps in a scratch directory (Home Depot from ``../shared/data``; synthetic
data when it is absent, and the result says so). The pairs: the test split's whole lists (held-out
queries; all of them, or the first ``--queries``).

Measured in one process, ``torch.set_num_threads(--threads)`` (default 1, as ``make bench``):

* ``fp32 (list batches)``: today's float32 path, as evaluation ran before this benchmark existed
  (:func:`ranking.nn.cross_encoder.score_lists`: each batch of lists packed to its real pairs and
  cut to its longest pair): the reference for speed and ranking quality.
* every mode of :class:`ranking.nn.inference.FastCrossEncoder` (length-sorted chunks of
  ``--chunk`` pairs; ``fp32``, ``bf16``, ``int8``, ``onnx``, ``onnx_int8``) on the same batches.

Each pass scores every pair (a full pass takes from ~20 s to ~2 min, which averages out short
bursts of load); with ``--rounds`` > 1 the passes repeat in rotating order and the median pairs/s
is reported, with the speed-up over the reference. Quality: mean NDCG@10 over the lists (the
metric code of evaluation) and its change against the reference, and the largest score
difference. Building a mode (quantising, exporting to ONNX) is timed apart. Target: a mode >= 3x
the reference's pairs/s with |NDCG@10 change| < 0.002.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

TARGET_SPEEDUP = 3.0
TARGET_NDCG_CHANGE = 0.002
MODES = ("fp32", "bf16", "int8", "onnx", "onnx_int8")
REFERENCE = "fp32 (list batches)"


def fine_tune(root: Path, steps: int, data: str) -> tuple[Path, Path]:
    """Fine-tune MiniLM as a cross-encoder for ``steps`` steps; ``(checkpoint, config.yaml)``.

    Learning rate 1e-4 (twice ``encoder=minilm_l6``'s): in a few hundred steps the default barely
    separates scores (their spread stays ~0.01), and how much a mode's rounding changes NDCG
    depends on that spread. It keeps the caller's threads (``make bench``: one): with two threads
    on a busy 2-core machine every operator can stall at an OpenMP barrier.
    """
    run_dir = root / "minilm"
    overrides = [
        "encoder=minilm_l6",
        "encoder.lr=1e-4",
        f"data={data}",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",  # nothing to monitor: the last weights are scored
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        "test_after_fit=false",
        f"hydra.run.dir={run_dir}",
        f"paths.root_dir={root}",
    ]
    if data == "homedepot":
        overrides += ["data/engagement=none", "tasks.order=[relevance]"]
    env = {**os.environ, "SHOPRANK_DATA_DIR": _data_dir()}
    command = [sys.executable, "-m", "experiments.train", *overrides]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return run_dir / "checkpoints" / "last.ckpt", run_dir / "config.yaml"


def _data_dir() -> str:
    """``$SHOPRANK_DATA_DIR`` or ``../shared/data`` (as ``conf/paths``), as an absolute path."""
    return str(Path(os.environ.get("SHOPRANK_DATA_DIR", "../shared/data")).resolve())


def _batches(cfg: Any, module: Any, queries: int) -> tuple[list[dict[str, torch.Tensor]], str]:
    """The first ``queries`` whole lists of the test split, as evaluation batches them."""
    from omegaconf import open_dict

    from experiments.workflows.config import build_datamodule
    from ranking.nn.encoders import load_tokenizer

    with open_dict(cfg):
        cfg.data.max_length = int(module.hparams.encoder.get("max_length", 64))
        cfg.data.eval_max_list_size = None
    datamodule = build_datamodule(cfg, load_tokenizer(module.hparams.encoder), module.label_columns)
    datamodule.setup("test")
    split = "test" if "test" in datamodule.lists else "val"
    module.use_data_regions(datamodule.region_names)
    batches, lists = [], 0
    for batch in datamodule.eval_dataloader(split):
        if lists >= queries:
            break
        take = min(queries - lists, batch["mask"].shape[0])
        batches.append(
            {k: v[:take] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        )
        lists += take
    return batches, split


def _score(scorer: Any, module: Any, batches: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    from ranking.nn.cross_encoder import score_lists

    with torch.inference_mode():
        return [
            score_lists(scorer, b, module.region_lookup[b["region"]])[0].float() for b in batches
        ]


def _ndcg(scores: list[torch.Tensor], batches: list[dict[str, torch.Tensor]]) -> float:
    """Mean NDCG@10 of the first task over lists with a positive label."""
    from ranking.metrics.functional import ndcg

    values = []
    for s, b in zip(scores, batches, strict=True):
        labels, mask = b["labels"][..., 0], b["mask"]
        keep = ((labels > 0) & mask).any(-1)
        values.append(ndcg(s[..., 0], labels, mask, k=10)[keep])
    return float(torch.cat(values).double().mean())


def run(args: argparse.Namespace) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from ranking.nn.inference import AUTO_MODE, FastCrossEncoder, cpu_supports_bf16
    from ranking.serving.checkpoints import load_checkpoint

    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="shoprank-bench-inference-") as scratch:
        data = "homedepot" if (Path(_data_dir()) / "homedepot").is_dir() else "synthetic"
        if args.ckpt is None:
            start = time.perf_counter()
            print(f"fine-tuning MiniLM on {data} for {args.train_steps} steps ...", flush=True)
            ckpt, config = fine_tune(Path(scratch), args.train_steps, data)
            train_s = time.perf_counter() - start
        else:
            ckpt, train_s = args.ckpt, None
            config = args.config or args.ckpt.parent.parent / "config.yaml"
            data = "from --config"
        module = load_checkpoint(ckpt, "--ckpt", expect="cross_encoder")
        cfg = OmegaConf.load(config)
        batches, split = _batches(cfg, module, args.queries)

    pairs = int(sum(int(b["mask"].sum()) for b in batches))
    tokens = [b["attention_mask"][b["mask"]].sum(-1).float() for b in batches]
    scorers: dict[str, Any] = {REFERENCE: module.model}
    build_s: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for mode in args.modes:
        if mode == "bf16" and not cpu_supports_bf16():
            skipped[mode] = "no bf16 instructions on this CPU"
            continue
        start = time.perf_counter()
        try:
            scorers[mode] = FastCrossEncoder(module.model, mode, chunk_size=args.chunk)
        except Exception as err:  # reported, the other modes still run
            skipped[mode] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            continue
        build_s[mode] = time.perf_counter() - start

    outputs: dict[str, list[torch.Tensor]] = {}
    rates: dict[str, list[float]] = {name: [] for name in scorers}
    names = list(scorers)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            outputs[name] = _score(scorers[name], module, batches)
            rates[name].append(pairs / (time.perf_counter() - start))
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{n} {v[-1]:.0f}" for n, v in rates.items())
            + " pairs/s",
            flush=True,
        )

    reference_ndcg = _ndcg(outputs[REFERENCE], batches)
    reference_rate = statistics.median(rates[REFERENCE])
    rows = {}
    for name in names:
        rate = statistics.median(rates[name])
        quality = _ndcg(outputs[name], batches)
        diff = max(
            float((a - b).abs().max())
            for a, b in zip(outputs[name], outputs[REFERENCE], strict=True)
        )
        rows[name] = {
            "pairs_per_s": rate,
            "speedup": rate / reference_rate,
            "ndcg@10": quality,
            "ndcg@10_change": quality - reference_ndcg,
            "max_abs_score_diff": diff,
            "build_s": build_s.get(name, 0.0),
            "meets_target": rate / reference_rate >= TARGET_SPEEDUP
            and abs(quality - reference_ndcg) < TARGET_NDCG_CHANGE,
        }
    eligible = [
        n for n in names if n != REFERENCE and abs(rows[n]["ndcg@10_change"]) < TARGET_NDCG_CHANGE
    ]
    best = max(eligible, key=lambda n: rows[n]["pairs_per_s"]) if eligible else None
    score_spread = float(
        torch.cat([o[b["mask"]] for o, b in zip(outputs[REFERENCE], batches, strict=True)]).std()
    )
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_bf16": cpu_supports_bf16(),
            "load_average_at_start": [round(x, 2) for x in load_at_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "model": {
            "checkpoint": str(args.ckpt)
            if args.ckpt
            else f"MiniLM fine-tuned {args.train_steps} steps",
            "data": data,
            "train_s": train_s,
            "score_std": score_spread,
        },
        "split": split,
        "lists": sum(int(b["mask"].shape[0]) for b in batches),
        "pairs": pairs,
        "mean_tokens_per_pair": float(torch.cat(tokens).mean()) if tokens else 0.0,
        "chunk_size": args.chunk,
        "rounds": args.rounds,
        "reference": REFERENCE,
        "modes": rows,
        "skipped": skipped,
        "best_mode": best,
        "auto_mode": AUTO_MODE,
        "targets": {
            "speedup": TARGET_SPEEDUP,
            "ndcg@10_change": TARGET_NDCG_CHANGE,
            "met_by": [n for n in names if rows[n]["meets_target"]],
        },
    }


def format_table(result: dict[str, Any]) -> list[str]:
    """Markdown rows, one per mode."""
    lines = [
        "| mode | pairs/s | x fp32 | NDCG@10 | change | max score diff | build s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["modes"].items():
        lines.append(
            f"| {name} | {row['pairs_per_s']:.0f} | {row['speedup']:.2f} | {row['ndcg@10']:.4f} | "
            f"{row['ndcg@10_change']:+.4f} | {row['max_abs_score_diff']:.2g} | "
            f"{row['build_s']:.1f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="a cross-encoder checkpoint (default: make one)")
    parser.add_argument("--config", type=Path, help="its run's config.yaml (the data to score)")
    parser.add_argument("--quick", action="store_true", help="fewer steps, lists and rounds")
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--queries", type=int, default=None, help="test lists scored (all)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=32, help="pairs per encoder call")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--out", type=Path, default=Path("bench/results/inference.json"))
    args = parser.parse_args(argv)
    args.train_steps = args.train_steps or (30 if args.quick else 200)
    args.queries = args.queries or (100 if args.quick else 10**9)
    args.rounds = args.rounds or 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['pairs']} pairs of {result['lists']} {result['split']} lists "
        f"({result['model']['data']}), {result['machine']['threads']} thread(s), reference "
        f"{REFERENCE}:"
    )
    print("\n".join(format_table(result)))
    for mode, why in result["skipped"].items():
        print(f"{mode}: skipped ({why})")
    print(
        f"best mode within NDCG@10 +-{TARGET_NDCG_CHANGE}: {result['best_mode']}; "
        f"meets >= {TARGET_SPEEDUP:g}x: {result['targets']['met_by'] or 'none'}; "
        f"written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
