"""The one fit routine of ``train``, ``distill`` and ``pretrain``: run dir, seed, resume, best.

Every training workflow goes through the same steps, in this order, so they cannot drift apart:

1. :func:`start_run` - config values checked, the output directory guarded (no run is ever
   overwritten; ``ckpt_path=last`` may continue one), everything seeded;
2. :func:`resume_checkpoint` - the output directory created, ``ckpt_path`` resolved (``last``:
   the run's own newest last checkpoint, with a config that must match the run's) and read
   safely, of the expected kind, before any data is loaded;
3. :func:`write_run_config` - the resolved ``config.yaml`` written once every check has passed,
   on rank 0 only (a run stopped by a user error leaves nothing that looks like a run);
4. :func:`traced_trainer` - the Trainer built from the config, the resolved config and the W&B
   run id recorded (a resumed run continues its W&B run);
5. :func:`fit_model` - ``trainer.fit``, then the best checkpoint and the monitored value, with a
   clear error when the monitored metric was never logged;
6. :func:`finishing_wandb` - the W&B run closed on return, so the next job of a multirun gets
   its own.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import lightning.pytorch as L
from omegaconf import DictConfig, OmegaConf

from data_modules.errors import ConfigError
from experiments.workflows.config import build_trainer, check_config_values
from experiments.workflows.resume import prepare_resume
from experiments.workflows.run_dir import guard_output_dir, is_rank_zero
from experiments.workflows.wandb_run import finish_wandb, log_resolved_config, record_run_id
from ranking.serving.checkpoints import check_checkpoint

T = TypeVar("T")


def finishing_wandb(fn: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """``fn(cfg)``, then the W&B run (if any) finished, whether ``fn`` returned or raised."""

    @functools.wraps(fn)
    def run(cfg: DictConfig) -> T:
        try:
            return fn(cfg)
        finally:
            finish_wandb()

    return run


def start_run(cfg: DictConfig, resumable: bool = True) -> Path:
    """Check the config's values, guard ``cfg.paths.output_dir``, seed everything.

    Args:
        cfg: The job's config.
        resumable: The workflow can continue a run (``ckpt_path=last``); otherwise an output
            directory that already holds a run is always refused.

    Returns:
        The output directory (not created yet).
    """
    check_config_values(cfg)
    output_dir = Path(cfg.paths.output_dir)
    if resumable:
        guard_output_dir(output_dir, resume=str(cfg.get("ckpt_path")) == "last")
    else:
        guard_output_dir(output_dir, resumable=False)
    L.seed_everything(cfg.seed, workers=True)
    return output_dir


def resume_checkpoint(
    cfg: DictConfig, output_dir: Path, kind: str
) -> tuple[str | None, dict[str, Any] | None]:
    """Create ``output_dir``; resolve ``cfg.ckpt_path`` and read it (``weights_only``).

    Args:
        cfg: The job's config (``ckpt_path``: null, ``last`` or a file).
        output_dir: The run directory (its ``checkpoints/`` and ``config.yaml`` for ``last``).
        kind: ``cross_encoder`` or ``bi_encoder``: the other kind is refused.

    Returns:
        ``(ckpt_path, checkpoint)``: the file ``trainer.fit`` resumes from and its content, or
        ``(None, None)`` for a fresh run.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = prepare_resume(
        cfg.get("ckpt_path"), output_dir, OmegaConf.to_container(cfg, resolve=True)
    )
    if not ckpt_path:
        return None, None
    return ckpt_path, check_checkpoint(ckpt_path, "ckpt_path", kind)


def write_run_config(output_dir: Path, config_text: str) -> None:
    """``<output_dir>/config.yaml`` on rank 0, once every check of the run has passed."""
    if is_rank_zero():
        (output_dir / "config.yaml").write_text(config_text)


def traced_trainer(cfg: DictConfig, output_dir: Path, job_type: str, **overrides: Any) -> Any:
    """The config's Trainer; the resolved config and the W&B run id recorded for it."""
    trainer = build_trainer(cfg, job_type=job_type, **overrides)
    log_resolved_config(trainer, OmegaConf.to_container(cfg, resolve=True))
    record_run_id(trainer, output_dir)
    return trainer


def fit_model(
    trainer: L.Trainer,
    module: L.LightningModule,
    monitor: str | None,
    ckpt_path: str | None = None,
    **data: Any,
) -> dict[str, Any]:
    """``trainer.fit(module, **data)``; the best checkpoint and the monitored value.

    Args:
        trainer: The Trainer.
        module: The LightningModule.
        monitor: The metric the checkpoints are chosen by; ``None`` for a fit without one.
        ckpt_path: The checkpoint to resume from.
        **data: ``datamodule=`` or ``train_dataloaders=`` / ``val_dataloaders=``.

    Returns:
        ``{"monitor": monitor, monitor: best value, "best_checkpoint": path or None}`` (empty
        without a monitor); the value is the best checkpoint's score, else the last logged.

    Raises:
        ConfigError: ``monitor`` was never logged although validation metrics were.
    """
    trainer.fit(module, ckpt_path=ckpt_path, **data)
    if monitor is None:
        return {}
    checkpoint = trainer.checkpoint_callback
    best_path = getattr(checkpoint, "best_model_path", "") or None
    best_score = getattr(checkpoint, "best_model_score", None)
    if monitor not in trainer.callback_metrics and not trainer.sanity_checking:
        logged = sorted(k for k in trainer.callback_metrics if k.startswith("val/"))
        if logged and best_path is None:
            raise ConfigError(f"monitor '{monitor}' was never logged; logged: {logged[:12]} ...")
    value = (
        float(best_score)
        if best_score is not None
        else float(trainer.callback_metrics.get(monitor, math.nan))
    )
    return {"monitor": monitor, monitor: value, "best_checkpoint": best_path}
