"""Benchmark every loss: forward+backward time and peak memory, vectorised vs per-list loop.

Run: ``python -m bench.bench_losses [--out bench/results/losses.json] [--quick]``.

For B=64 lists of L=50 and L=200 items (about 20% padding, graded labels 0-3, float32), each
loss with its default options is timed on CPU (and CUDA when available) against the
straightforward per-list Python loop of the same formula in ``ranking.losses._naive``.

* Time: median wall time of forward+backward over ``--repeats`` runs after warm-up runs (CUDA
  synchronised before reading the clock).
* Peak memory on CPU: ``tracemalloc`` does not see torch's allocator, and the process RSS high-water
  mark cannot be reset between measurements, so we replay one forward+backward under
  ``torch.profiler`` with ``profile_memory=True`` and take the maximum of the running sum of every
  operator's self allocations minus frees, in time order: the peak of live tensor bytes created
  during the step (inputs excluded), at operator granularity (a temporary freed inside one
  operator is not seen). On CUDA: ``torch.cuda.max_memory_allocated`` minus the bytes allocated
  before the step.
* ``ratio`` = vectorised time / naive time (lower is better for the vectorised code).
* ``--quick``: 3 timed runs (1 for the naive loop) and no memory figure for the naive loop.

Threads: ``--threads 1`` by default. On a busy 2-core machine every multi-threaded torch operator
waits at an OpenMP barrier for a descheduled thread, which made small operators 10-20x slower in
our measurements (e.g. softmax on [64, 50]: 0.8 ms with 1 thread, 20 ms with 2); one thread
measures the code rather than the scheduler. ``--threads 0`` keeps torch's default.

Timings on a shared machine are noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from ranking.losses import LOSSES, build_loss
from ranking.losses._naive import NAIVE_LOSSES

BATCH = 64
LENGTHS = (50, 200)
#: Options per loss for the benchmark (defaults otherwise); graded labels need max_label for BCE.
OPTIONS: dict[str, dict[str, Any]] = {"bce": {"max_label": 3.0}}


def make_batch(
    batch: int, size: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random float32 scores, graded labels 0-3 and a mask with ~20% padding at list ends."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, size, generator=gen)
    labels = torch.randint(0, 4, (batch, size), generator=gen).float()
    lengths = torch.randint(int(size * 0.6), size + 1, (batch,), generator=gen)
    mask = torch.arange(size)[None, :] < lengths[:, None]
    return scores.to(device), labels.to(device), mask.to(device)


def _step(fn: Callable[..., torch.Tensor], scores, labels, mask) -> None:
    leaf = scores.detach().requires_grad_(True)
    fn(leaf, labels, mask).backward()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(fn, inputs, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of one forward+backward."""
    for _ in range(warmup):
        _step(fn, *inputs)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        _step(fn, *inputs)
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Drop what native code writes to fd 2 (the profiler's ``USDT: profiler_start`` lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_bytes(fn, inputs, device: torch.device) -> int:
    """Peak live tensor bytes allocated during one forward+backward (see module docstring)."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        _step(fn, *inputs)
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    with (
        _native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        _step(fn, *inputs)
    deltas = sorted(
        (event.time_range.start, event.self_cpu_memory_usage)
        for event in prof.events()
        if event.self_cpu_memory_usage
    )
    live = peak = 0
    for _, delta in deltas:
        live += delta
        peak = max(peak, live)
    return peak


def run(quick: bool, repeats: int | None, devices: list[torch.device]) -> dict[str, Any]:
    warmup = 1 if quick else 3
    reps = repeats or (3 if quick else 15)
    naive_warmup, naive_reps = (0, 1) if quick else (1, max(3, reps // 3))
    rows = []
    for device in devices:
        for size in LENGTHS:
            inputs = make_batch(BATCH, size, device)
            for name in LOSSES:
                options = OPTIONS.get(name, {})
                vectorised = build_loss(name, **options)

                def naive(s, y, m, _name=name, _options=options):
                    return NAIVE_LOSSES[_name](s, y, m, **_options)

                vec_s = time_step(vectorised, inputs, device, warmup, reps)
                naive_s = time_step(naive, inputs, device, naive_warmup, naive_reps)
                row = {
                    "loss": name,
                    "device": device.type,
                    "batch": BATCH,
                    "list_size": size,
                    "vectorised_ms": vec_s * 1e3,
                    "naive_ms": naive_s * 1e3,
                    "ratio": vec_s / naive_s,
                    "vectorised_peak_mb": peak_bytes(vectorised, inputs, device) / 2**20,
                    # profiling the naive loop's thousands of small ops is slow: full runs only
                    "naive_peak_mb": None if quick else peak_bytes(naive, inputs, device) / 2**20,
                }
                rows.append(row)
                print(_format_row(row), flush=True)
    return {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "dtype": "float32",
            "quick": quick,
            "repeats": reps,
            "naive_repeats": naive_reps,
            "time": "median forward+backward wall time after warm-up",
            "memory": "CPU: peak running sum of torch.profiler self allocations (operator "
            "granularity); CUDA: max_memory_allocated - allocated before the step",
            "ratio": "vectorised_ms / naive_ms",
        },
        "rows": rows,
    }


HEADER = (
    f"{'loss':<12} {'dev':<4} {'L':>4} {'vec ms':>9} {'naive ms':>9} {'ratio':>7} "
    f"{'vec MB':>8} {'naive MB':>9}"
)


def _format_row(row: dict[str, Any]) -> str:
    naive_mb = "-" if row["naive_peak_mb"] is None else f"{row['naive_peak_mb']:.1f}"
    return (
        f"{row['loss']:<12} {row['device']:<4} {row['list_size']:>4} "
        f"{row['vectorised_ms']:>9.2f} {row['naive_ms']:>9.2f} {row['ratio']:>7.3f} "
        f"{row['vectorised_peak_mb']:>8.1f} {naive_mb:>9}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/losses.json"))
    parser.add_argument("--quick", action="store_true", help="fewer repeats (< 60 s on CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per loss")
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA even if available")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)"
    )
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    print(
        f"B={BATCH}, L in {LENGTHS}, float32, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads",
        flush=True,
    )
    print(HEADER)
    print("-" * len(HEADER), flush=True)
    result = run(args.quick, args.repeats, devices)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
