"""A run directory holds one run: a new run never writes into the directory of another.

Re-running a command into an existing run directory (``hydra.run.dir=<run>`` reused, or the
resume command without its ``ckpt_path=last``) would train from scratch and overwrite the old
run's checkpoints, ``metrics.json``, ``per_query.parquet`` and ``config.yaml``.
:func:`guard_output_dir` refuses that with one line before anything is written; only
``ckpt_path=last`` (resume) may continue in a directory that holds a run.
"""

from __future__ import annotations

import os
from pathlib import Path

from data_modules.errors import ConfigError

# What the entry points write: any of them present means the directory holds a run.
RUN_FILES = (
    "config.yaml",
    "metrics.json",
    "per_query.parquet",
    "split.parquet",
    "predictions.json",
    "scores.parquet",
    "run.trec",
    "pretrain_metrics.json",
)
RUN_DIRS = ("checkpoints", "encoder")  # counted when not empty


def run_artefacts(output_dir: str | Path) -> list[str]:
    """The run files and non-empty run folders in ``output_dir`` (``[]``: none, or no folder)."""
    directory = Path(output_dir)
    if not directory.is_dir():
        return []
    found = [name for name in RUN_FILES if (directory / name).is_file()]
    for name in RUN_DIRS:
        folder = directory / name
        if folder.is_dir() and any(folder.iterdir()):
            found.append(f"{name}/")
    return found


def is_rank_zero() -> bool:
    """Whether this process is rank 0 (or not distributed), from the environment.

    Lightning gives the DDP ranks it starts ``LOCAL_RANK``/``RANK``; SLURM gives every task
    ``SLURM_PROCID``. Ranks >= 1 run in the directory rank 0 has already started writing.
    """
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        value = os.environ.get(name)
        if value not in (None, ""):
            return value == "0"
    return True


def guard_output_dir(output_dir: str | Path, resume: bool = False, resumable: bool = True) -> None:
    """Refuse to start a run in a directory that already holds one.

    Args:
        output_dir: The run's output directory.
        resume: The run continues the one in ``output_dir`` (``ckpt_path=last``): allowed.
        resumable: The entry point can resume (train, distill): the message says how.

    Raises:
        ConfigError: ``output_dir`` holds a run; the message names it, what is in it, and how to
            resume or where else to write.
    """
    if resume or not is_rank_zero():
        return
    found = run_artefacts(output_dir)
    if not found:
        return
    how = "resume it with ckpt_path=last, or " if resumable else ""
    raise ConfigError(
        f"{output_dir} already holds a run ({', '.join(found)}) and a run is never overwritten: "
        f"{how}write to a new directory with hydra.run.dir=<new dir>"
    )
