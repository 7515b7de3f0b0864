"""Benchmark every loss: forward+backward time and peak memory, vectorised vs per-list loop, and
the six losses allRank also has against allRank 1.4.3 itself, on the same tensors in one run.

Run: ``python -m bench.bench_losses [--out bench/results/losses.json] [--quick]
[--allrank-python .venv-allrank/bin/python]``.

**Against allRank** (``make allrank-venv`` puts allRank into a side environment with
``../shared/tools/setup_allrank_venv.sh``: its pins cannot be installed beside this project). A
worker process in that environment (``bench/allrank_worker.py``, one thread) receives the same
tensors (``torch.save``; padding marked ``y_true = -1`` as allRank expects) and times allRank's
function; this process times ours, as training calls it (``build_loss(name, **options)(s, y,
mask)``, which checks its inputs), with the options that reproduce allRank (``allrank_options``:
the same computation, and the values are compared).

Repetitions of the two are interleaved in rounds (each round times both, in an order that
alternates, after untimed passes, with garbage collection off as ``timeit`` does), so that
load from other jobs on a shared machine falls on both; the medians of all
repetitions and their ratio (ours / allRank; < 1 = ours faster) are reported. Where allRank's
environment is missing the comparison is skipped with one line and the rest runs.

For B=64 lists of L=50 and L=200 items (about 20% padding, graded labels 0-3, float32), each
loss with its default options is timed on CPU (and CUDA when available) against the
straightforward per-list Python loop of the same formula in ``tests.reference_losses``.

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
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from ranking.losses import LOSSES, allrank_options, build_loss
from tests.reference_losses import NAIVE_LOSSES

BATCH = 64
LENGTHS = (50, 200)
#: Options per loss for the benchmark (defaults otherwise); graded labels need max_label for BCE.
OPTIONS: dict[str, dict[str, Any]] = {"bce": {"max_label": 3.0}}
#: Our loss -> (allRank function, its keyword arguments). LambdaLoss with the paper's best scheme.
ALLRANK: dict[str, tuple[str, dict[str, Any]]] = {
    "approx_ndcg": ("approxNDCGLoss", {}),
    "listnet": ("listNet", {}),
    "listmle": ("listMLE", {}),
    "ranknet": ("rankNet", {}),
    "lambdaloss": ("lambdaLoss", {"weighing_scheme": "ndcgLoss2PP_scheme"}),
    "neural_ndcg": ("neuralNDCG", {}),
}
DEFAULT_ALLRANK_PYTHON = Path(".venv-allrank/bin/python")
WORKER = Path(__file__).with_name("allrank_worker.py")


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


class AllRankWorker:
    """A process in allRank's environment that times its losses (``bench/allrank_worker.py``)."""

    def __init__(self, python: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
        self.proc = subprocess.Popen(
            [str(python), str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("allRank worker exited")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"allRank worker: {reply['error']}")
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _reps_for(seconds_per_call: float, budget_s: float, min_reps: int, max_reps: int) -> int:
    return int(min(max_reps, max(min_reps, budget_s / max(seconds_per_call, 1e-6))))


def compare_allrank(
    python: Path, quick: bool, rounds: int = 5, budget_s: float | None = None
) -> dict[str, Any]:
    """Ours vs allRank, interleaved, on the same tensors (see the module docstring)."""
    budget = budget_s if budget_s is not None else (0.6 if quick else 3.0)
    # fast losses: long blocks, so that switching processes (cold caches) weighs little
    min_reps, max_reps = (3, 300) if quick else (5, 2000)
    worker = AllRankWorker(python)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="shoprank-allrank-") as scratch:
            for size in LENGTHS:
                scores, labels, mask = make_batch(BATCH, size, torch.device("cpu"))
                path = Path(scratch) / f"batch{size}.pt"
                torch.save({"y_pred": scores, "y_true": torch.where(mask, labels, -1.0)}, path)
                info = worker.ask(cmd="load", path=str(path))
                for name, (allrank_name, kwargs) in ALLRANK.items():
                    rows.append(
                        _compare_one(
                            worker,
                            name,
                            allrank_name,
                            kwargs,
                            (scores, labels, mask),
                            rounds,
                            budget,
                            min_reps,
                            max_reps,
                        )
                    )
                    print(_format_allrank_row(rows[-1]), flush=True)
    finally:
        worker.close()
    return {"allrank_torch": info.get("torch"), "rounds": rounds, "rows": rows}


def _compare_one(
    worker: AllRankWorker,
    name: str,
    allrank_name: str,
    kwargs: dict[str, Any],
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    rounds: int,
    budget: float,
    min_reps: int,
    max_reps: int,
) -> dict[str, Any]:
    cpu = torch.device("cpu")
    options = allrank_options(name, **kwargs)
    ours = build_loss(name, **options)
    # calibration: one timed pass of each (after a warm-up pass) sets the repetitions
    probe = {"ours": time_step(ours, inputs, cpu, 1, 1)}
    reply = worker.ask(cmd="time", loss=allrank_name, kwargs=kwargs, reps=1, warmup=1)
    probe["allrank"] = reply["seconds"][0]
    # the same number of repetitions for both, set by the slower one's time
    reps = _reps_for(max(probe.values()), budget, min_reps, max_reps)
    per_round = {key: max(1, -(-reps // rounds)) for key in probe}
    times: dict[str, list[float]] = {key: [] for key in probe}
    # untimed passes at the start of each block: 3 for fast losses, 1 for slow ones
    warmup = {key: 3 if probe[key] < 0.01 else 1 for key in probe}
    allrank_value = reply["value"]
    for r in range(rounds):
        order = ["ours", "allrank"]
        for key in order if r % 2 == 0 else order[::-1]:
            if key == "allrank":
                reply = worker.ask(
                    cmd="time",
                    loss=allrank_name,
                    kwargs=kwargs,
                    reps=per_round[key],
                    warmup=warmup[key],
                )
                times[key] += reply["seconds"]
            else:
                times[key] += _timed(ours, inputs, per_round[key], warmup=warmup[key])
    medians = {key: statistics.median(values) for key, values in times.items()}
    ours_value = float(ours(*inputs))
    return {
        "loss": name,
        "list_size": inputs[0].shape[-1],
        "batch": inputs[0].shape[0],
        "allrank_function": allrank_name,
        "allrank_kwargs": kwargs,
        "options": options,
        "allrank_ms": medians["allrank"] * 1e3,
        "ours_ms": medians["ours"] * 1e3,
        "ratio": medians["ours"] / medians["allrank"],
        "reps": {key: len(values) for key, values in times.items()},
        "value": ours_value,
        "allrank_value": allrank_value,
        # allRank's ListMLE breaks label ties at random (graded labels here have many)
        "value_rel_diff": None
        if name == "listmle"
        else abs(ours_value - allrank_value) / max(abs(allrank_value), 1e-12),
    }


def _timed(fn: Callable[..., torch.Tensor], inputs, reps: int, warmup: int) -> list[float]:
    """``warmup`` untimed then ``reps`` timed passes, garbage collection off (as ``timeit``; the
    allRank worker times the same way)."""
    for _ in range(warmup):
        _step(fn, *inputs)
    times = []
    gc.disable()
    try:
        for _ in range(reps):
            start = time.perf_counter()
            _step(fn, *inputs)
            times.append(time.perf_counter() - start)
    finally:
        gc.enable()
    return times


ALLRANK_HEADER = (
    f"{'loss':<12} {'L':>4} {'allRank ms':>10} {'ours ms':>9} {'ratio':>6} {'reps':>5} "
    f"{'value diff':>10}"
)


def _format_allrank_row(row: dict[str, Any]) -> str:
    diff = "ties" if row["value_rel_diff"] is None else f"{row['value_rel_diff']:.1e}"
    return (
        f"{row['loss']:<12} {row['list_size']:>4} {row['allrank_ms']:>10.3f} "
        f"{row['ours_ms']:>9.3f} {row['ratio']:>6.2f} {min(row['reps'].values()):>5} {diff:>10}"
    )


def resolve_allrank_python(given: Path | None) -> Path | None:
    """The allRank environment's Python: ``--allrank-python``, ``$SHOPRANK_ALLRANK_PYTHON`` or
    ``.venv-allrank/bin/python``; None when none of them exists."""
    env = os.environ.get("SHOPRANK_ALLRANK_PYTHON")
    for candidate in (given, Path(env) if env else None, DEFAULT_ALLRANK_PYTHON):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


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
    parser.add_argument(
        "--allrank-python",
        type=Path,
        default=None,
        help="Python of allRank's side environment (default: $SHOPRANK_ALLRANK_PYTHON or "
        f"{DEFAULT_ALLRANK_PYTHON})",
    )
    parser.add_argument(
        "--allrank-only", action="store_true", help="only the comparison with allRank"
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
    if args.allrank_only:
        result: dict[str, Any] = {"meta": {"quick": args.quick}, "rows": []}
    else:
        print(HEADER)
        print("-" * len(HEADER), flush=True)
        result = run(args.quick, args.repeats, devices)
    python = resolve_allrank_python(args.allrank_python)
    if python is None:
        print(
            "allRank is not installed (make allrank-venv, or --allrank-python PATH): "
            "comparison with allRank skipped"
        )
        result["allrank"] = None
    else:
        print(f"\nagainst allRank ({python}), same tensors, interleaved, ratio = ours / allRank")
        print(ALLRANK_HEADER)
        print("-" * len(ALLRANK_HEADER), flush=True)
        load = os.getloadavg()[0]
        result["allrank"] = compare_allrank(python, args.quick)
        result["allrank"]["load_before"] = load
        result["allrank"]["load_after"] = os.getloadavg()[0]
        worst = max(r["ratio"] for r in result["allrank"]["rows"])
        print(f"worst ratio {worst:.2f} (load average {load:.1f} -> {os.getloadavg()[0]:.1f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
