"""Fine-tuning a pretrained cross-encoder on CPU: each speed lever against today's fp32 path.

Run: ``python -m bench.bench_finetune [--out bench/results/finetune.json] [--quick]``.

Every mode fine-tunes its own copy of MiniLM-L6 (``encoder=minilm_l6``, same initial weights and
seed) on the *same* training batches in the same order, interleaved in rounds of ``--round``
steps so that machine load hits all modes alike; then each is scored on the same held-out lists.
Reported per mode: training pairs/s (real pairs over the summed step time: forward, loss,
backward, clipping, AdamW), NDCG@10 after the fine-tune and its paired difference to the fp32
baseline (95 % bootstrap interval over queries). Modes, each adding one lever:

* ``fp32 before``: today's path before this work: one encoder call padded to the batch's longest
  pair, the whole vocabulary trained, AdamW's ``foreach`` kernel;
* ``+ fused AdamW``: ``torch.optim.AdamW(fused=True)`` (the same update);
* ``+ length buckets``: ``model.bucket_tokens`` (pairs encoded sorted by length, the same scores);
* ``+ frozen vocabulary``: ``encoder.freeze_word_embeddings=true`` (the fast fp32 path);
* ``fast + bf16``: the fast path under ``torch.autocast("cpu", dtype=torch.bfloat16)``;
* ``fast, seed 1``: the fast path from another seed (head initialisation, dropout): the seed noise
  that the NDCG@10 differences are read against;
* ``fast + lower 3 layers frozen``: ``encoder.freeze_layers=3`` on top of the fast path (backward
  through the upper half of MiniLM-L6 only).

Then inference (eval mode, the fast fp32 model after its fine-tune) on the held-out lists:
pairs/s of one padded call per batch of lists vs length buckets vs buckets + bf16, and the NDCG@10
change of each against the first.

Data: Home Depot (``../shared/data``, the real relevance labels) when present, else the embedded
synthetic data. Threads: ``--threads`` (default: all cores, as training uses).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from experiments.workflows.config import build_datamodule, build_module, task_list
from ranking.analysis.compare import paired_difference
from ranking.metrics import ndcg
from ranking.modules.optim import adamw_with_warmup
from ranking.nn.encoders import load_tokenizer

CONF = Path(__file__).resolve().parents[1] / "conf"
HOMEDEPOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "homedepot" / "train.csv"


@dataclass(frozen=True)
class Mode:
    """One way of running the same fine-tune."""

    name: str
    bucket_tokens: int | None
    freeze_vocabulary: bool
    fused: bool
    bf16: bool = False
    seed: int = 0
    freeze_layers: int = 0


BUCKET = 2048
MODES = (
    Mode("fp32 before", None, False, False),
    Mode("+ fused AdamW", None, False, True),
    Mode("+ length buckets", BUCKET, False, True),
    Mode("+ frozen vocabulary", BUCKET, True, True),
    Mode("fast + bf16", BUCKET, True, True, bf16=True),
    Mode("fast, seed 1", BUCKET, True, True, seed=1),
    Mode("fast + lower 3 layers frozen", BUCKET, True, True, freeze_layers=3),
)
BASELINE, FAST = MODES[0].name, MODES[3].name


@dataclass
class Run:
    mode: Mode
    module: Any
    optimizer: Any
    seconds: list[float] = field(default_factory=list)
    pairs: int = 0


def config(cache_dir: str, overrides: list[str]) -> Any:
    data = (
        ["data=homedepot", f"data.source.path={HOMEDEPOT}", "data/engagement=none"]
        if HOMEDEPOT.is_file()
        else []
    )
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "encoder=minilm_l6",
                "tasks.order=[relevance]",
                f"paths.cache_dir={cache_dir}",
                "paths.output_dir=/tmp",
                "logger=none",
                *data,
                *overrides,
            ],
        )


def autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def build_run(cfg: Any, datamodule: Any, mode: Mode, lr: float) -> Run:
    torch.manual_seed(mode.seed)
    cfg.encoder.freeze_word_embeddings = mode.freeze_vocabulary
    cfg.model.bucket_tokens = mode.bucket_tokens
    cfg.encoder.freeze_layers = mode.freeze_layers
    module = build_module(cfg, datamodule.region_names, datamodule)
    module.train()
    optimizer = adamw_with_warmup(
        module.parameters(), total_steps=10**6, lr=lr, warmup_ratio=0.0, fused=mode.fused
    )
    return Run(mode, module, optimizer["optimizer"])


def train_steps(run: Run, batches: list[dict], clip: float) -> None:
    torch.manual_seed(run.mode.seed + len(run.seconds))  # dropout: per mode and step
    for batch in batches:
        start = time.perf_counter()
        with autocast(run.mode.bf16):
            scores, aux = run.module.score(batch)
        loss = run.module.compute_loss(scores.float(), batch, aux)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(
            [p for p in run.module.parameters() if p.requires_grad], clip
        )
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.seconds.append(time.perf_counter() - start)
        run.pairs += int(batch["mask"].sum())


@torch.inference_mode()
def score_lists(module: Any, batches: list[dict], bf16: bool) -> tuple[np.ndarray, float, int]:
    """``(per-list NDCG@10 of lists with a positive, seconds, pairs)``."""
    module.eval()
    values, seconds, pairs = [], 0.0, 0
    for batch in batches:
        start = time.perf_counter()
        with autocast(bf16):
            scores = module(batch)[..., 0].float()
        seconds += time.perf_counter() - start
        pairs += int(batch["mask"].sum())
        labels, mask = batch["labels"][..., 0], batch["mask"]
        keep = ((labels > 0) & mask).any(-1)
        values.append(ndcg(scores[keep], labels[keep], mask[keep], k=10).numpy())
    return np.concatenate(values), seconds, pairs


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="shoprank-bench-ft-") as cache:
        cfg = config(cache, [f"data.source.max_queries={args.queries}", *args.set])
        tokenizer = load_tokenizer(dict(cfg.encoder))
        datamodule = build_datamodule(cfg, tokenizer, [t["label"] for t in task_list(cfg)])
        datamodule.setup("fit")
    batches: list[dict] = []
    loader = datamodule.train_dataloader()
    while len(batches) < args.steps:  # as many epochs as the steps need
        batches += list(itertools.islice(iter(loader), args.steps - len(batches)))
    eval_batches = list(datamodule.eval_dataloader("val"))
    lr, clip = float(cfg.encoder.lr), float(cfg.trainer.gradient_clip_val)
    modes = [m for m in MODES if not args.modes or m.name in args.modes]
    runs = [build_run(cfg, datamodule, mode, lr) for mode in modes]
    for run in runs:  # warm-up: one step each, not timed
        train_steps(run, batches[:1], clip)
        run.seconds.clear()
        run.pairs = 0
    for start in range(0, len(batches), args.round):
        for run in runs:
            train_steps(run, batches[start : start + args.round], clip)
        print(f"  trained {min(start + args.round, len(batches))}/{len(batches)} steps per mode")

    scored = {run.mode.name: score_lists(run.module, eval_batches, run.mode.bf16) for run in runs}
    base_values = scored[BASELINE][0] if BASELINE in scored else None
    training = []
    for run in runs:
        values = scored[run.mode.name][0]
        row: dict[str, Any] = {
            "mode": run.mode.name,
            "pairs_per_s": run.pairs / sum(run.seconds),
            "median_step_s": statistics.median(run.seconds),
            "ndcg@10": float(values.mean()),
        }
        if base_values is not None:
            diff, low, high, p = paired_difference(values, base_values)
            row.update({"ndcg_diff": diff, "ndcg_diff_low": low, "ndcg_diff_high": high, "p": p})
        training.append(row)
    base = next((r for r in training if r["mode"] == BASELINE), None)
    for row in training:
        row["speedup"] = row["pairs_per_s"] / base["pairs_per_s"] if base else float("nan")

    inference = []
    fast = next((run for run in runs if run.mode.name == FAST), None)
    if fast is not None:
        scorer = fast.module.model
        variants = [("one padded call", None, False), ("length buckets", BUCKET, False)]
        variants.append(("length buckets + bf16", BUCKET, True))
        reference = None
        for _ in range(args.repeats):
            for name, bucket, bf16 in variants:
                scorer.bucket_tokens = bucket
                values, seconds, pairs = score_lists(fast.module, eval_batches, bf16)
                reference = values if reference is None else reference
                inference.append(
                    {
                        "mode": name,
                        "pairs_per_s": pairs / seconds,
                        "ndcg@10": float(values.mean()),
                        "ndcg_change": float(values.mean() - reference.mean()),
                    }
                )
        inference = _median_rows(inference)
        first = inference[0]["pairs_per_s"]
        for row in inference:
            row["speedup"] = row["pairs_per_s"] / first
    return {
        "data": "homedepot" if HOMEDEPOT.is_file() else "synthetic",
        "train_lists": len(datamodule.lists["train"]),
        "eval_lists": len(scored[runs[0].mode.name][0]),
        "steps": args.steps,
        "threads": args.threads,
        "lr": lr,
        "training": training,
        "inference": inference,
        "seed_noise_ndcg": _seed_noise(training),
    }


def _median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    speeds: dict[str, list[float]] = {}
    for row in rows:
        out.setdefault(row["mode"], row)
        speeds.setdefault(row["mode"], []).append(row["pairs_per_s"])
    for name, row in out.items():
        row["pairs_per_s"] = statistics.median(speeds[name])
    return list(out.values())


def _seed_noise(training: list[dict[str, Any]]) -> float | None:
    by_mode = {r["mode"]: r["ndcg@10"] for r in training}
    if FAST in by_mode and "fast, seed 1" in by_mode:
        return abs(by_mode[FAST] - by_mode["fast, seed 1"])
    return None


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"MiniLM-L6 cross-encoder fine-tune on {result['data']} ({result['train_lists']} training "
        f"lists, {result['steps']} steps, {result['threads']} threads; NDCG@10 on "
        f"{result['eval_lists']} held-out lists):",
        "",
        "| training mode | pairs/s | speed-up | NDCG@10 | vs fp32 before (95% CI) |",
        "|---|---|---|---|---|",
    ]
    for r in result["training"]:
        ci = (
            f"{r['ndcg_diff']:+.4f} [{r['ndcg_diff_low']:+.4f}, {r['ndcg_diff_high']:+.4f}]"
            if "ndcg_diff" in r
            else "-"
        )
        lines.append(
            f"| {r['mode']} | {r['pairs_per_s']:.1f} | {r['speedup']:.2f}x | "
            f"{r['ndcg@10']:.4f} | {ci} |"
        )
    if result.get("seed_noise_ndcg") is not None:
        lines += ["", f"Seed noise (fast path, seed 0 vs 1): {result['seed_noise_ndcg']:.4f}."]
    if result["inference"]:
        lines += [
            "",
            "| inference mode | pairs/s | speed-up | NDCG@10 change |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['mode']} | {r['pairs_per_s']:.1f} | {r['speedup']:.2f}x | "
            f"{r['ndcg_change']:+.4f} |"
            for r in result["inference"]
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/finetune.json")
    parser.add_argument(
        "--quick", action="store_true", help="20 steps on 400 queries, three modes (a smoke run)"
    )
    parser.add_argument("--steps", type=int, default=120, help="training steps per mode")
    parser.add_argument("--queries", type=int, default=1500, help="queries of the data used")
    parser.add_argument("--round", type=int, default=10, help="steps per mode per round")
    parser.add_argument("--repeats", type=int, default=3, help="inference passes per mode")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--modes", nargs="*", default=[], help="a subset of the mode names")
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.queries, args.repeats = 20, 400, 1
        args.modes = args.modes or [BASELINE, FAST, "fast + bf16"]
    result = measure(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
