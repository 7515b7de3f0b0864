"""The one optimiser recipe of the library: AdamW with linear warm-up and linear decay."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformers import get_linear_schedule_with_warmup


def fusable(params: Sequence[torch.Tensor]) -> bool:
    """Whether ``torch.optim.AdamW(fused=True)`` takes these parameters (float, on CPU or CUDA).

    The fused kernel updates every tensor in one pass; on these CPUs it is about 10x faster than
    the default ``foreach`` implementation (MiniLM's 22.7 M parameters: 0.15 s vs 1.6 s a step).
    """
    return bool(params) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
    )


def adamw_with_warmup(
    params: Iterable[torch.nn.Parameter],
    total_steps: int,
    lr: float,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> dict[str, Any]:
    """AdamW (biases and LayerNorm weights not decayed) with linear warm-up and linear decay.

    ``lr_t = lr * t / w`` for ``t < w = warmup_ratio * total_steps``, then linear to 0 at
    ``total_steps`` (BERT's fine-tuning recipe, Devlin et al., 2019). Frozen parameters
    (``requires_grad=False``) are left out.

    Args:
        fused: Use the fused AdamW kernel; ``None``: whenever the parameters allow it
            (:func:`fusable`). The update is the same up to float rounding.

    Returns:
        Lightning's ``configure_optimizers`` dict, the scheduler stepping every optimiser step.
    """
    decay, no_decay = [], []
    for param in params:
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=tuple(betas),
        eps=eps,
        fused=(fusable(decay + no_decay) if fused is None else fused) or None,
    )
    total = max(1, int(total_steps))
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=int(warmup_ratio * total), num_training_steps=total
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
