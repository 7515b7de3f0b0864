"""Peak resident memory of ``make train`` (the default experiment), in a child process.

Run: ``python -m bench.bench_memory [--quick] [overrides ...]``; ``--quick`` trains
``experiment=smoke`` instead of the full default experiment. The figure is the child's
``ru_maxrss`` (peak RSS, Linux reports KiB), which includes Python, torch and the tokenizer.
Target: <= 4 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_GB = 4.0


def measure(overrides: list[str], root: str | None = None) -> dict[str, Any]:
    """Train in a child process under ``root`` (kept) or a temporary directory (removed)."""
    with tempfile.TemporaryDirectory() as scratch:
        root = root or scratch
        command = [
            sys.executable,
            "-m",
            "experiments.train",
            f"paths.root_dir={root}",
            "callbacks.progress_bar=null",
            "trainer.enable_progress_bar=false",
            *overrides,
        ]
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=os.environ.copy())
        # wait4: the peak of this child alone (RUSAGE_CHILDREN would be the largest of every
        # child this process ever waited for, e.g. an earlier benchmark's MiniLM training)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            raise subprocess.CalledProcessError(child.returncode, command)
        seconds = time.perf_counter() - start
    peak_kib = usage.ru_maxrss
    peak_gb = peak_kib * 1024 / 1e9
    return {
        "command": " ".join(command[1:]),
        "peak_rss_gb": peak_gb,
        "seconds": seconds,
        "target_gb": TARGET_GB,
        "meets_target": peak_gb <= TARGET_GB,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/memory.json"))
    parser.add_argument("--quick", action="store_true", help="experiment=smoke")
    parser.add_argument("--root", help="keep the run under this paths.root_dir")
    parser.add_argument("override", nargs="*")
    args = parser.parse_args(argv)
    overrides = (["experiment=smoke"] if args.quick else []) + args.override
    result = measure(overrides, args.root)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"peak RSS {result['peak_rss_gb']:.2f} GB (target <= {TARGET_GB} GB), "
        f"{result['seconds']:.0f} s: {result['command']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
