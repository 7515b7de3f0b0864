"""Framework overhead and data-pipeline throughput, side by side in one run.

Run: ``python -m bench.bench_framework [--out bench/results/framework.json] [--quick]``.

1. **Lightning vs a bare PyTorch loop**: the default model (tiny BERT cross-encoder, 4 tasks,
   shared-bottom tower) trains on the *same* pre-collated batches, once through
   ``Trainer.fit`` and once through a hand-written loop (forward, the module's loss, backward,
   AdamW step, zero_grad). Time is taken over the steady-state steps only (after ``--warmup``
   steps) with a callback in the Lightning case. ``ratio`` = Lightning throughput / bare
   throughput (target >= 0.95). The two are run alternately ``--repeats`` times; medians.
2. **Data pipeline**: lists/s that the DataModule's train loader produces (collation of
   cached, memory-mapped tokens; no model) on a cold cache (tokenisation included in the
   set-up time) and on a warm cache, against the lists/s the model consumes in training (the
   bare loop above). ``headroom`` = pipeline lists/s / model lists/s (target >= 20).

Threads: 1 (``--threads``), as in ``bench_losses``: on a busy 2-core machine multi-threaded
operators mostly measure the scheduler.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from experiments.workflows.config import build_datamodule, build_module, task_list
from ranking.nn.encoders import load_tokenizer

CONF = Path(__file__).resolve().parents[1] / "conf"


def default_config(cache_dir: str, overrides: list[str]) -> Any:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"paths.cache_dir={cache_dir}",
                "paths.output_dir=/tmp",
                "logger=none",
                *overrides,
            ],
        )
    return cfg


def build(cfg: Any) -> tuple[Any, Any]:
    tokenizer = load_tokenizer(dict(cfg.encoder))
    datamodule = build_datamodule(cfg, tokenizer, [t["label"] for t in task_list(cfg)])
    datamodule.setup("fit")
    module = build_module(cfg, datamodule.region_names, datamodule)
    return datamodule, module


class _StepClock(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0
        self.end = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


def time_lightning(cfg: Any, batches: list[dict], warmup: int) -> float:
    _, module = build(cfg)
    clock = _StepClock(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=len(batches),
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
        gradient_clip_val=float(cfg.trainer.gradient_clip_val),
    )
    loader = DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    return clock.end - clock.start


def time_bare(cfg: Any, batches: list[dict], warmup: int) -> float:
    _, module = build(cfg)
    module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=float(cfg.encoder.lr))
    clip = float(cfg.trainer.gradient_clip_val)
    start = 0.0
    for step, batch in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        scores, aux = module.score(batch)
        loss = module.compute_loss(scores, batch, aux)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def time_pipeline(cfg: Any, max_lists: int) -> tuple[float, float, int]:
    """``(setup seconds, iteration seconds, lists)`` of one pass over the train loader."""
    start = time.perf_counter()
    tokenizer = load_tokenizer(dict(cfg.encoder))
    datamodule = build_datamodule(cfg, tokenizer, [t["label"] for t in task_list(cfg)])
    datamodule.setup("fit")
    setup = time.perf_counter() - start
    lists = 0
    start = time.perf_counter()
    for batch in datamodule.train_dataloader():
        lists += batch["mask"].shape[0]
        if lists >= max_lists:
            break
    return setup, time.perf_counter() - start, lists


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    steps = args.steps
    with tempfile.TemporaryDirectory() as cache:
        cfg = default_config(cache, args.override)
        datamodule, _ = build(cfg)
        loader = datamodule.train_dataloader()
        batches = []
        for batch in loader:
            batches.append(batch)
            if len(batches) == steps:
                break
        lists_per_batch = statistics.mean(b["mask"].shape[0] for b in batches)
        timed = len(batches) - args.warmup
        light, bare = [], []
        for _ in range(args.repeats):
            bare.append(time_bare(cfg, batches, args.warmup))
            light.append(time_lightning(cfg, batches, args.warmup))
        bare_steps = timed / statistics.median(bare)
        light_steps = timed / statistics.median(light)

        with tempfile.TemporaryDirectory() as cold_cache:
            cold_cfg = default_config(cold_cache, args.override)
            cold = time_pipeline(cold_cfg, args.pipeline_lists)
            warm = time_pipeline(cold_cfg, args.pipeline_lists)
    model_lists = bare_steps * lists_per_batch
    return {
        "threads": args.threads,
        "overrides": args.override,
        "overhead": {
            "steps_timed": timed,
            "lists_per_step": lists_per_batch,
            "bare_steps_per_s": bare_steps,
            "lightning_steps_per_s": light_steps,
            "ratio": light_steps / bare_steps,
            "target": ">= 0.95",
            "bare_s": bare,
            "lightning_s": light,
        },
        "data_pipeline": {
            "cold_setup_s": cold[0],
            "warm_setup_s": warm[0],
            "cold_lists_per_s": cold[2] / cold[1],
            "warm_lists_per_s": warm[2] / warm[1],
            "model_lists_per_s": model_lists,
            "headroom": (warm[2] / warm[1]) / model_lists,
            "target": ">= 20",
        },
    }


def summary(result: dict[str, Any]) -> str:
    o, d = result["overhead"], result["data_pipeline"]
    return "\n".join(
        [
            "| measure | value | target |",
            "|---|---|---|",
            f"| bare loop steps/s | {o['bare_steps_per_s']:.2f} | |",
            f"| Lightning steps/s | {o['lightning_steps_per_s']:.2f} | |",
            f"| Lightning / bare throughput | {o['ratio']:.3f} | {o['target']} |",
            f"| data set-up, cold cache (s) | {d['cold_setup_s']:.2f} | |",
            f"| data set-up, warm cache (s) | {d['warm_setup_s']:.2f} | |",
            f"| pipeline lists/s (warm) | {d['warm_lists_per_s']:.0f} | |",
            f"| model lists/s (training) | {d['model_lists_per_s']:.1f} | |",
            f"| pipeline / model | {d['headroom']:.0f}x | {d['target']} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/framework.json"))
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--steps", type=int, default=60, help="batches per timed loop")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pipeline-lists", type=int, default=2000)
    parser.add_argument("override", nargs="*", help="config overrides, e.g. data.batch_size=16")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.repeats = 25, 5, 1
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(summary(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
