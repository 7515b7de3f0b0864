"""Every benchmark in one go: ``make bench`` (``--quick`` for a short version).

Order (each step's output feeds the next, all in one scratch directory):

1. ``bench_losses``: every loss vs its per-list loop (time, memory).
2. ``bench_framework``: Lightning vs a bare loop (target >= 0.95), data pipeline vs model
   consumption (target >= 20x).
3. ``bench_memory``: peak RSS of the default experiment (``make train``; target <= 4 GB). Its run
   is kept: it is the teacher of step 4.
4. ``experiments.distill`` of that teacher into a bi-encoder student.
5. ``bench_latency``: teacher vs student per-query latency (target >= 10x) and NDCG@10 (target
   >= 95 % of the teacher's).

Writes ``bench/results.json`` (every step's numbers) and ``bench/results.md`` (one summary table).
``--quick`` (about 5 min on 2 CPU cores): quick loss timings, fewer framework steps,
``experiment=smoke`` for the teacher, a 1-epoch student, 50 latency queries — ratios only, not
the figures to report.
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

from bench import bench_framework, bench_latency, bench_losses, bench_memory

RESULTS = Path("bench/results")


def _newest(pattern: str, root: Path) -> Path:
    found = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"error: nothing matches {root}/{pattern}")
    return found[-1]


def _best_checkpoint(run_dir: Path) -> Path:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = metrics.get("best_checkpoint")
    return Path(best) if best else run_dir / "checkpoints" / "last.ckpt"


def run(quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {"quick": quick, "load_at_start": os.getloadavg()}
    start = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)

    short = ["--quick"] if quick else []
    bench_losses.main(["--out", str(RESULTS / "losses.json"), *short])
    results["losses"] = json.loads((RESULTS / "losses.json").read_text())

    bench_framework.main(["--out", str(RESULTS / "framework.json"), *short])
    results["framework"] = json.loads((RESULTS / "framework.json").read_text())

    with tempfile.TemporaryDirectory(prefix="shoprank-bench-") as scratch:
        root = Path(scratch)
        teacher_args = ["experiment=smoke"] if quick else []
        bench_memory.main(
            ["--out", str(RESULTS / "memory.json"), "--root", str(root), *teacher_args]
        )
        results["memory"] = json.loads((RESULTS / "memory.json").read_text())

        teacher_run = _newest("logs/train/runs/*", root)
        teacher = _best_checkpoint(teacher_run)
        distill = [
            sys.executable,
            "-m",
            "experiments.distill",
            f"teacher_ckpt={teacher}",
            f"paths.root_dir={root}",
            "callbacks.progress_bar=null",
            "trainer.enable_progress_bar=false",
            *(["trainer.max_epochs=1", *teacher_args] if quick else []),
        ]
        subprocess.run(distill, check=True, stdout=subprocess.DEVNULL)
        student_run = _newest("logs/distill/runs/*", root)
        latency_args = [
            "--student",
            str(_best_checkpoint(student_run)),
            "--teacher",
            str(teacher),
            "--config",
            str(student_run / "config.yaml"),
            "--onnx",
            "--out",
            str(RESULTS / "latency.json"),
            *(["--queries", "50"] if quick else []),
        ]
        bench_latency.main(latency_args)
        results["latency"] = json.loads((RESULTS / "latency.json").read_text())
    results["seconds"] = time.perf_counter() - start
    return results


def summary(results: dict[str, Any]) -> str:
    fw, mem, lat = results["framework"], results["memory"], results["latency"]
    data = fw["data_pipeline"]
    rows = [
        ("Lightning / bare-loop training throughput", f"{fw['overhead']['ratio']:.3f}", ">= 0.95"),
        (
            "data pipeline / model consumption (lists/s)",
            f"{fw['data_pipeline']['headroom']:.0f}x",
            ">= 20x",
        ),
        (
            "data set-up, cold / warm cache (s)",
            f"{data['cold_setup_s']:.1f} / {data['warm_setup_s']:.1f}",
            "",
        ),
        ("peak RSS of the default experiment (GB)", f"{mem['peak_rss_gb']:.2f}", "<= 4"),
    ]
    rows += [
        ("student speed-up, median per query (PyTorch)", f"{lat['speedup_median']:.1f}x", ">= 10x"),
        ("student speed-up, p95 per query (PyTorch)", f"{lat['speedup_p95']:.1f}x", ""),
    ]
    if lat.get("speedup_median_onnx"):
        rows.append(
            (
                "student speed-up, median (ONNX query tower)",
                f"{lat['speedup_median_onnx']:.1f}x",
                "",
            )
        )
    rows.append(("student / teacher NDCG@10", f"{100 * lat['ndcg@10_ratio']:.1f} %", ">= 95 %"))
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores "
        f"(load at start {results['load_at_start'][0]:.1f}); quick={results['quick']}.",
        "",
        "| benchmark | result | target |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        *loss_table(results["losses"]),
    ]
    return "\n".join(lines)


def loss_table(losses: dict[str, Any]) -> list[str]:
    """Markdown rows: per loss, vectorised ms and its ratio to the per-list loop per list size."""
    sizes = sorted({r["list_size"] for r in losses["rows"]})
    header = " | ".join(f"L={n}: ms (x loop)" for n in sizes)
    lines = [
        "",
        "Losses, forward + backward on 64 lists (time relative to a per-list Python loop):",
        "",
        f"| loss | {header} |",
        "|---|" + "---|" * len(sizes),
    ]
    by_loss: dict[str, dict[int, dict[str, Any]]] = {}
    for row in losses["rows"]:
        by_loss.setdefault(row["loss"], {})[row["list_size"]] = row
    for name, rows in by_loss.items():
        cells = [
            f"{rows[n]['vectorised_ms']:.2f} ({rows[n]['ratio']:.2f})" if n in rows else "-"
            for n in sizes
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--summarize", action="store_true", help="rewrite results.md from results.json only"
    )
    args = parser.parse_args(argv)
    if args.summarize:
        results = json.loads(Path("bench/results.json").read_text())
    else:
        results = run(args.quick)
    Path("bench/results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = summary(results)
    Path("bench/results.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
