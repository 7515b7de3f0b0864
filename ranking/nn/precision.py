"""Which numeric precision a run uses: ``precision: auto`` picks bf16 only where it is faster."""

from __future__ import annotations

import torch

AUTO = "auto"


def cpu_has_amx() -> bool:
    """Whether this CPU exposes AMX tiles (Intel Sapphire Rapids and later, when not masked).

    AMX multiplies bf16 matrices several times faster than AVX-512 FP32 FMA. Without it, bf16 on
    CPU runs on AVX512-BF16 dot-product kernels, which on the machines this project was
    measured on (AVX512-BF16 and AVX512-FP16 but no AMX exposed to the VM) were *slower* than
    fp32: a 2048x384x1536 GEMM on one core ran at 84 GFLOP/s in bf16 against 156 in fp32, and a
    MiniLM training step was no faster under bf16 autocast (``make bench``).
    """
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if callable(probe) else False


def resolve_precision(precision: str | int, accelerator: str) -> tuple[str | int, str]:
    """The Lightning ``precision`` to use and why.

    ``auto``: ``bf16-mixed`` on a CUDA device that supports bf16 and on a CPU with AMX, else
    ``32-true``. Any other value is returned unchanged.

    Args:
        precision: ``trainer.precision``.
        accelerator: ``trainer.accelerator`` (``cpu``, ``gpu``, ``cuda``, ``auto``).

    Returns:
        ``(precision, reason)``.
    """
    if str(precision) != AUTO:
        return precision, "as configured"
    wants_gpu = accelerator in ("gpu", "cuda") or (
        accelerator == "auto" and torch.cuda.is_available()
    )
    if wants_gpu:
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16-mixed", "CUDA device with bf16"
        return "32-true", "no CUDA device with bf16"
    if cpu_has_amx():
        return "bf16-mixed", "CPU with AMX (bf16 matrix tiles)"
    return "32-true", "CPU without AMX: bf16 is not faster than fp32 here"
