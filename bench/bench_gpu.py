"""GPU benchmark, ready for when a CUDA device is lent: ``make bench-gpu`` (< 10 min).

Run: ``python -m bench.bench_gpu [--quick] [--out bench/results_gpu.json]``. Without a CUDA device
it prints one line and exits 0.

On the first CUDA device, with the pretrained MiniLM (all-MiniLM-L6-v2) cross-encoder:

1. **Training throughput and MFU** (bf16 autocast, AdamW, synthetic pairs of ``--seq`` tokens):
   pairs/s after warm-up, and model FLOPs utilisation = counted FLOPs per second / the device's
   peak dense bf16 tensor FLOPs (:data:`PEAK_BF16_TFLOPS`, matched on the device name;
   ``--peak-tflops`` for another). FLOPs are counted analytically (:func:`encoder_flops`: every
   matrix product of the encoder, its pooler and the head; :func:`training_flops`: each product
   once forward and twice backward) and the count is checked against
   ``torch.utils.flop_counter`` on a small config in the tests. Target: >= 40 % MFU.
2. **The ``trainer=gpu`` DDP path on one device**: ``experiments.train trainer=gpu
   trainer.strategy=ddp trainer.devices=1 encoder=minilm_l6`` for a few steps on the synthetic
   data, in a child process (:func:`ddp_command`); wall time and whether it finished.
3. **Evaluation throughput**: pairs/s of scoring (no gradients) in float32 and in bf16 autocast.
4. **Student vs teacher latency**: ranking 100 candidates for one query, the cross-encoder
   (100 pairs in one pass) against a bi-encoder student (one query encoding with the same
   MiniLM, dot products with 100 precomputed product vectors); median milliseconds.

Writes ``--out`` (default ``bench/results_gpu.json``). CUDA timings synchronise before reading
the clock.
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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

#: Peak dense bf16 tensor-core throughput (TFLOP/s, no sparsity), by device-name fragment; the
#: first fragment found in ``torch.cuda.get_device_name()`` wins (longer names first).
PEAK_BF16_TFLOPS: dict[str, float] = {
    "GB200": 2500.0,
    "B200": 2250.0,
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM
    "GH200": 989.0,
    "H800": 989.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 6000 Ada": 364.0,
    "A6000": 155.0,
}
TARGET_MFU = 0.40
NO_CUDA = "bench-gpu: no CUDA device here (torch.cuda.is_available() is False); nothing measured"


def peak_tflops(device_name: str) -> float | None:
    """The device's peak dense bf16 TFLOP/s from :data:`PEAK_BF16_TFLOPS`, or None."""
    for fragment in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if fragment.lower() in device_name.lower():
            return PEAK_BF16_TFLOPS[fragment]
    return None


def encoder_flops(config: Any, seq_len: int, num_tasks: int = 1, pooler: bool = True) -> int:
    """Forward FLOPs of one (query, product) pair through a BERT encoder and a linear head.

    Counts every matrix product (2 FLOPs per multiply-add), per layer and token: the Q, K, V and
    output projections ``4 * 2 H^2``, the feed-forward ``2 * 2 H I``, attention scores and
    weighted values ``2 * 2 T H``; per pair: the pooler ``2 H^2`` (when the model has one) and the
    head ``2 H K``. Element-wise work (softmax, GELU, LayerNorm) is not counted, as usual for
    MFU.

    Args:
        config: A Hugging Face BERT config (``hidden_size``, ``intermediate_size``,
            ``num_hidden_layers``).
        seq_len: T, tokens per pair.
        num_tasks: K, scores per pair.
        pooler: the model computes BERT's pooler layer.
    """
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_token = 8 * h * h + 4 * h * i + 4 * seq_len * h
    return layers * seq_len * per_token + (2 * h * h if pooler else 0) + 2 * h * num_tasks


def training_flops(config: Any, seq_len: int, num_tasks: int = 1, pooler: bool = True) -> int:
    """FLOPs of one pair in a training step: every product once forward and twice backward,
    except BERT's pooler, whose output the cross-encoder does not use (no gradient reaches it)."""
    forward = encoder_flops(config, seq_len, num_tasks, pooler=False)
    return 3 * forward + (2 * config.hidden_size**2 if pooler else 0)


def ddp_command(device_count: int, steps: int, root: Path) -> list[str] | None:
    """The ``trainer=gpu`` DDP run on one device (None without a device)."""
    if device_count < 1:
        return None
    return [
        sys.executable,
        "-m",
        "experiments.train",
        "trainer=gpu",
        "trainer.strategy=ddp",
        "trainer.devices=1",
        "encoder=minilm_l6",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        f"paths.root_dir={root}",
        f"hydra.run.dir={root}/ddp",
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, warmup: int, reps: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _cross_encoder(encoder_spec: dict[str, Any], device: torch.device) -> Any:
    from ranking.nn.cross_encoder import CrossEncoder
    from ranking.nn.encoders import load_encoder_model, load_tokenizer
    from ranking.nn.towers import build_tower

    tokenizer = load_tokenizer(encoder_spec)
    encoder = load_encoder_model(encoder_spec, vocab_size=len(tokenizer))
    tower = build_tower(
        "shared_bottom",
        hidden_size=encoder.config.hidden_size,
        num_tasks=1,
        num_regions=1,
        hidden_dims=[],
    )
    return CrossEncoder(encoder, tower, pooling=encoder_spec.get("pooling", "cls")).to(device)


def _pairs(model: Any, n: int, seq: int, device: torch.device, seed: int = 0) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    vocab = int(model.encoder.config.vocab_size)
    ids = torch.randint(1000 % vocab, vocab, (n, seq), generator=generator)
    types = torch.zeros_like(ids)
    types[:, seq // 3 :] = 1
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "token_type_ids": types.to(device),
        "region": torch.zeros(n, dtype=torch.long, device=device),
    }


def training_throughput(
    model: Any, device: torch.device, batch: int, seq: int, steps: int, peak: float | None
) -> dict[str, Any]:
    """Pairs/s and MFU of bf16-autocast training steps (forward, backward, AdamW)."""
    model.train()
    inputs = _pairs(model, batch, seq, device)
    target = torch.rand(batch, 1, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            scores = model(**inputs).scores
        torch.nn.functional.mse_loss(scores.float(), target).backward()
        optimizer.step()

    times = _timed(step, device, warmup=3, reps=steps)
    seconds = statistics.median(times)
    flops = batch * training_flops(
        model.encoder.config, seq, pooler=getattr(model.encoder, "pooler", None) is not None
    )
    achieved = flops / seconds / 1e12
    return {
        "batch_pairs": batch,
        "seq_len": seq,
        "steps": steps,
        "step_ms_median": seconds * 1e3,
        "pairs_per_s": batch / seconds,
        "train_flops_per_step": flops,
        "achieved_tflops": achieved,
        "peak_bf16_tflops": peak,
        "mfu": achieved / peak if peak else None,
        "target_mfu": TARGET_MFU,
    }


def evaluation_throughput(
    model: Any, device: torch.device, batch: int, seq: int, reps: int
) -> dict[str, Any]:
    """Pairs/s of scoring without gradients, float32 and bf16 autocast."""
    model.eval()
    inputs = _pairs(model, batch, seq, device, seed=1)
    out: dict[str, Any] = {"batch_pairs": batch, "seq_len": seq}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):

        @torch.inference_mode()
        def score(dtype: torch.dtype | None = dtype) -> None:
            if dtype is None:
                model(**inputs)
            else:
                with torch.autocast(device.type, dtype=dtype):
                    model(**inputs)

        out[f"{name}_pairs_per_s"] = batch / statistics.median(_timed(score, device, 2, reps))
    return out


def student_teacher_latency(
    model: Any, device: torch.device, candidates: int, seq: int, query_len: int, reps: int
) -> dict[str, Any]:
    """Median ms to rank ``candidates`` products for one query: cross-encoder vs bi-encoder."""
    from ranking.nn.encoders import pool

    model.eval()
    pairs = _pairs(model, candidates, seq, device, seed=2)
    query = _pairs(model, 1, query_len, device, seed=3)
    hidden = model.encoder.config.hidden_size
    products = torch.nn.functional.normalize(torch.randn(candidates, hidden, device=device), dim=-1)

    @torch.inference_mode()
    def teacher() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            torch.topk(model(**pairs).scores[:, 0], 10)

    @torch.inference_mode()
    def student() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model.encoder(
                input_ids=query["input_ids"], attention_mask=query["attention_mask"]
            ).last_hidden_state
            q = torch.nn.functional.normalize(pool(out, query["attention_mask"], "mean"), dim=-1)
            torch.topk((products @ q[0].to(products.dtype)), 10)

    t = statistics.median(_timed(teacher, device, 3, reps))
    s = statistics.median(_timed(student, device, 3, reps))
    return {
        "candidates": candidates,
        "teacher_ms": t * 1e3,
        "student_ms": s * 1e3,
        "speedup": t / s,
    }


def run_ddp(device_count: int, steps: int, timeout_s: float) -> dict[str, Any]:
    """The ``trainer=gpu`` DDP path on one device, in a child process."""
    with tempfile.TemporaryDirectory(prefix="shoprank-bench-gpu-") as scratch:
        command = ddp_command(device_count, steps, Path(scratch))
        if command is None:
            return {"ran": False, "reason": "no CUDA device"}
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"ran": True, "ok": False, "reason": f"timed out after {timeout_s:.0f} s"}
        result: dict[str, Any] = {
            "ran": True,
            "ok": done.returncode == 0,
            "seconds": time.perf_counter() - start,
            "command": " ".join(command[1:]),
        }
        if done.returncode != 0:
            result["error"] = (done.stderr.strip().splitlines() or ["?"])[-1][:500]
        metrics = Path(scratch) / "ddp" / "metrics.json"
        if metrics.is_file():
            result["metrics"] = json.loads(metrics.read_text())
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    parser.add_argument("--out", type=Path, default=Path("bench/results_gpu.json"))
    parser.add_argument("--batch", type=int, default=256, help="pairs per training step")
    parser.add_argument("--seq", type=int, default=128, help="tokens per pair")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 peak")
    parser.add_argument("--ddp-steps", type=int, default=30)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    device = torch.device("cuda", 0)
    name = torch.cuda.get_device_name(device)
    peak = args.peak_tflops or peak_tflops(name)
    torch.backends.cuda.matmul.allow_tf32 = True
    steps, reps = (10, 10) if args.quick else (30, 30)
    spec = {"source": "package", "pooling": "cls", "max_length": args.seq}
    started = time.perf_counter()
    model = _cross_encoder(spec, device)
    print(f"{name}: training ...", flush=True)
    train = training_throughput(model, device, args.batch, args.seq, steps, peak)
    print(f"{name}: evaluation, latency ...", flush=True)
    evaluation = evaluation_throughput(model, device, args.batch * 4, args.seq, reps)
    latency = student_teacher_latency(model, device, 100, 64, 16, reps * 3)
    del model
    torch.cuda.empty_cache()
    print(f"{name}: trainer=gpu DDP on one device ...", flush=True)
    ddp = run_ddp(torch.cuda.device_count(), 10 if args.quick else args.ddp_steps, 300)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": name,
        "device_count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "model": "all-MiniLM-L6-v2 cross-encoder (CLS pooling, linear head)",
        "training": train,
        "evaluation": evaluation,
        "student_teacher_latency": latency,
        "ddp_one_device": ddp,
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    mfu = f"{train['mfu']:.1%}" if train["mfu"] is not None else "n/a (unknown peak)"
    print(
        f"{name}: training {train['pairs_per_s']:.0f} pairs/s, {train['achieved_tflops']:.1f} "
        f"TFLOP/s, MFU {mfu} (target {TARGET_MFU:.0%}); evaluation bf16 "
        f"{evaluation['bf16_pairs_per_s']:.0f} pairs/s; student {latency['speedup']:.1f}x faster "
        f"than teacher; DDP one device: {'ok' if ddp.get('ok') else ddp}; written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
