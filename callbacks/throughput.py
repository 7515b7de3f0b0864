"""Training throughput in (query, product) pairs per second, on the progress bar and in the logs."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import lightning.pytorch as L


class PairThroughput(L.Callback):
    """Logs ``train/pairs_per_s``: real (unpadded) pairs scored per second of training step.

    The value is the sum of pairs over the sum of step times of the last ``window`` steps (from
    batch start to batch end: forward, backward, optimiser step; data loading excluded), so one
    slow step does not make it jump. Batches are listwise: their pairs are the True entries of
    ``batch["mask"]`` ``[B, L]``.

    Args:
        window: Number of recent steps averaged.
    """

    def __init__(self, window: int = 20) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._steps: deque[tuple[int, float]] = deque(maxlen=window)
        self._start: float | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._start is None or not isinstance(batch, dict) or "mask" not in batch:
            return
        self._steps.append((int(batch["mask"].sum()), time.perf_counter() - self._start))
        pairs = sum(n for n, _ in self._steps)
        seconds = sum(t for _, t in self._steps)
        if seconds > 0:
            pl_module.log(
                "train/pairs_per_s", pairs / seconds, prog_bar=True, on_step=True, on_epoch=False
            )
