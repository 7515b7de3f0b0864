"""Every benchmark in one go: ``make bench`` (``--quick`` for a short version).

Order (each step's output feeds the next, all in one scratch directory):

1. ``bench_losses``: every loss vs its per-list loop (time, memory), and the six allRank has vs
   allRank itself when its side environment exists (``make allrank-venv``; ratio <= 1).
2. ``bench_framework``: Lightning vs a bare loop (target >= 0.95), data pipeline vs model
   consumption (target >= 20x).
3. ``bench_inference``: a MiniLM cross-encoder (fine-tuned on Home Depot for a few steps) scoring
   held-out lists in every ``inference.mode`` vs float32 PyTorch (target >= 3x at |NDCG@10
   change| < 0.002).
3b. ``bench_finetune``: MiniLM cross-encoder *training* on the same batches in fp32 as before and
   with each speed lever (fused AdamW, length buckets, frozen vocabulary, bf16): pairs/s and
   NDCG@10 of the same short fine-tune (target >= 2x training throughput within seed noise).
4. ``bench_memory``: peak RSS of the default experiment (``make train``; target <= 4 GB). Its run
   is kept: it is the teacher of step 5.
5. ``experiments.distill`` of that teacher into a bi-encoder student.
6. ``bench_latency``: teacher vs student per-query latency (target >= 10x) and NDCG@10 (target
   >= 95 % of the teacher's).

Writes ``bench/results.json`` (every step's numbers) and ``bench/results.md`` (one summary table).
``--quick`` (a few minutes on 2 CPU cores): quick loss timings, fewer framework steps, a shorter
inference study, the teacher trained as ``experiment=smoke`` (and the student distilled on the
same smoke data, 1 epoch), 50 latency queries: ratios only, not the figures to report.
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

from bench import (
    bench_finetune,
    bench_framework,
    bench_inference,
    bench_latency,
    bench_losses,
    bench_memory,
)

RESULTS = Path("bench/results")
SMOKE_EXPERIMENT = Path("conf/experiment/smoke.yaml")


def smoke_overrides(path: Path = SMOKE_EXPERIMENT) -> list[str]:
    """``experiment=smoke`` as plain ``key=value`` overrides.

    ``experiments.distill`` has no ``experiment`` group, and its student must read the data its
    teacher was trained on (the same generator settings, splits and seed), so the smoke recipe is
    passed to it key by key.
    """
    from omegaconf import OmegaConf

    recipe = OmegaConf.to_container(OmegaConf.load(path), resolve=True)

    def flatten(node: Any, prefix: str) -> list[str]:
        if isinstance(node, dict):
            return [o for k, v in node.items() for o in flatten(v, f"{prefix}{k}.")]
        return [f"{prefix[:-1]}={node}"]

    return flatten(recipe, "")


def teacher_overrides(quick: bool) -> list[str]:
    """The teacher's (``experiments.train``) overrides: the default experiment, or smoke."""
    return ["experiment=smoke"] if quick else []


def distill_command(teacher: Path, root: Path, quick: bool) -> list[str]:
    """``experiments.distill`` of ``teacher`` into a student, on the teacher's data."""
    return [
        sys.executable,
        "-m",
        "experiments.distill",
        f"teacher_ckpt={teacher}",
        f"paths.root_dir={root}",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
        *(smoke_overrides() if quick else []),  # smoke trains 1 epoch
    ]


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
    bench_losses.main(["--out", str(RESULTS / "losses.json"), *short])  # + allRank if installed
    results["losses"] = json.loads((RESULTS / "losses.json").read_text())

    bench_framework.main(["--out", str(RESULTS / "framework.json"), *short])
    results["framework"] = json.loads((RESULTS / "framework.json").read_text())

    inference_args = ["--out", str(RESULTS / "inference.json"), *short]
    bench_inference.main(inference_args)
    results["inference"] = json.loads((RESULTS / "inference.json").read_text())

    bench_finetune.main(["--out", str(RESULTS / "finetune.json"), *short])
    results["finetune"] = json.loads((RESULTS / "finetune.json").read_text())

    with tempfile.TemporaryDirectory(prefix="shoprank-bench-") as scratch:
        root = Path(scratch)
        bench_memory.main(
            ["--out", str(RESULTS / "memory.json"), "--root", str(root), *teacher_overrides(quick)]
        )
        results["memory"] = json.loads((RESULTS / "memory.json").read_text())

        teacher_run = _newest("logs/train/runs/*", root)
        teacher = _best_checkpoint(teacher_run)
        subprocess.run(distill_command(teacher, root, quick), check=True, stdout=subprocess.DEVNULL)
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
    inf = results.get("inference")
    if inf:
        for name, row in inf["modes"].items():
            if name == inf["reference"]:
                continue
            rows.append(
                (
                    f"cross-encoder inference {name}: x fp32 pairs/s (NDCG@10 change)",
                    f"{row['speedup']:.2f}x ({row['ndcg@10_change']:+.4f})",
                    ">= 3x (< 0.002)" if name == inf["auto_mode"] else "",
                )
            )
    allrank = (results["losses"].get("allrank") or {}).get("rows")
    if allrank:
        worst = max(allrank, key=lambda r: r["ratio"])
        rows.append(
            (
                "losses / allRank time, worst of 6 losses x 2 sizes",
                f"{worst['ratio']:.2f} ({worst['loss']}, L={worst['list_size']})",
                "<= 1.0",
            )
        )
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores "
        f"(load at start {results['load_at_start'][0]:.1f}); quick={results['quick']}.",
        "",
        "| benchmark | result | target |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        *loss_table(results["losses"]),
        *allrank_table(results["losses"]),
        *inference_table(results.get("inference")),
        *finetune_table(results.get("finetune")),
    ]
    return "\n".join(lines)


def finetune_table(finetune: dict[str, Any] | None) -> list[str]:
    """Markdown rows of ``bench_finetune``: each training lever against fp32 as before."""
    return ["", bench_finetune.markdown(finetune)] if finetune else []


def allrank_table(losses: dict[str, Any]) -> list[str]:
    """Markdown rows: per loss and list size, our time / allRank's on the same tensors."""
    rows = (losses.get("allrank") or {}).get("rows")
    if not rows:
        return ["", "Losses vs allRank: skipped (allRank's environment not installed)."]
    sizes = sorted({r["list_size"] for r in rows})
    by_loss: dict[str, dict[int, dict[str, Any]]] = {}
    for row in rows:
        by_loss.setdefault(row["loss"], {})[row["list_size"]] = row
    lines = [
        "",
        "Losses vs allRank 1.4.3, forward + backward, B=64, one thread, same tensors, "
        "interleaved (ours ms / allRank ms = ratio):",
        "",
        "| loss | " + " | ".join(f"L={n}" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for name, cells in by_loss.items():
        lines.append(
            f"| {name} | "
            + " | ".join(
                f"{c['ours_ms']:.3g} / {c['allrank_ms']:.3g} = **{c['ratio']:.2f}**"
                for c in (cells[n] for n in sizes)
            )
            + " |"
        )
    return lines


def inference_table(inference: dict[str, Any] | None) -> list[str]:
    """Markdown rows of ``bench_inference``: every mode against float32 PyTorch."""
    if not inference:
        return []
    return [
        "",
        f"Cross-encoder inference on CPU ({inference['model']['data']}, "
        f"{inference['pairs']} pairs of {inference['lists']} held-out lists, "
        f"{inference['machine']['threads']} thread(s); reference: {inference['reference']}; "
        f"auto = {inference['auto_mode']}):",
        "",
        *bench_inference.format_table(inference),
    ]


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
