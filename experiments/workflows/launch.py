"""Hydra jobs that stay correct under Lightning DDP, and the glue for sweeps and launchers.

With :mod:`experiments.workflows.config` it is where the workflows meet Hydra: it
needs the running job's Hydra state (its overrides and output directory) and Hydra's callback API.

**The trap it fixes.** With ``strategy=ddp`` (and every other strategy that Lightning starts
with ``_SubprocessScriptLauncher``: ``fsdp``, ``deepspeed``), rank 0 starts ranks 1..N-1 by
running the script again. Under Hydra, Lightning 2.6 builds that command from ``sys.argv``
(``lightning.fabric.strategies.launchers.subprocess_script._hydra_subprocess_cmd``). In a
``--multirun`` this re-enters ``@hydra.main`` with ``--multirun`` and the sweep's overrides: the
child runs a sweep of its own, in a sweep directory of its own, and under the Optuna sweeper it
trains with hyperparameters that the sweeper never chose for that job. And after the first job,
``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_PORT`` stay in ``os.environ`` and the process group stays
initialised: the next job's rank 0 takes itself for a process started by a cluster, starts no
children and waits for them forever.

**The fix.** :func:`run_job` wraps one Hydra job:

1. :func:`job_subprocess_cmd` replaces Lightning's child command for the duration of the job:
   the child runs in Hydra's RUN mode with *this job's* overrides (``hydra.overrides.task``),
   its output directory (``hydra.run.dir=<job dir>``) and ``hydra.output_subdir=null``, so every
   rank composes exactly the job's config and writes into the job's directory.
2. At the end of the job it waits for (on success) or stops (on failure) the child ranks,
   destroys the process group and restores the environment variables and thread count that
   Lightning set, so the next job of the sweep starts clean.

``ddp_spawn`` needs none of this (its workers are forked from the job and receive pickled
objects); the cleanup is harmless there. Under SLURM (``launcher=slurm``) every rank is a task
that SLURM starts and Lightning's ``SLURMEnvironment`` takes over: the child-relaunch path is
never used. The joblib launcher runs jobs in pool workers that cannot host DDP:
:func:`check_launcher` refuses that combination.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import get_original_cwd, to_absolute_path
from lightning.pytorch.strategies.launchers import subprocess_script as _lightning_launcher
from omegaconf import DictConfig, OmegaConf

from data_modules.errors import ConfigError
from experiments.workflows.cli import run_or_exit
from experiments.workflows.run_dir import guard_output_dir

log = logging.getLogger(__name__)

T = TypeVar("T")

# Environment variables that Lightning (launcher, DDP setup, seeding, thread tuning) writes into
# the job process; they are restored after each job.
LIGHTNING_ENV_VARS = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "RANK",
    "OMP_NUM_THREADS",
    "PL_GLOBAL_SEED",
    "PL_SEED_WORKERS",
)
# Hydra overrides that the child command sets itself (or must not inherit, like the MULTIRUN mode).
_CHILD_OWN_KEYS = frozenset(
    {"hydra.mode", "hydra.run.dir", "hydra.output_subdir", "hydra.job.name", "hydra.job.num"}
)
CHILD_EXIT_TIMEOUT_S = 300.0  # ranks >= 1 finish with rank 0; longer means they hang
DEBUG_RANKS_ENV = "SHOPRANK_DEBUG_RANKS"  # "1": every rank writes ddp_ranks/rank<r>.json
# Strategies whose ranks run in one process each (a pool worker cannot start them).
_MULTI_PROCESS_STRATEGIES = ("ddp", "fsdp", "deepspeed")


# --------------------------------------------------------------------------------------------
# Child command
# --------------------------------------------------------------------------------------------


def _override_key(override: str) -> str:
    """``"+a.b=1"`` -> ``"a.b"`` (the key an override sets, without its ``+``/``++``/``~``)."""
    return override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def quote_override_value(value: str) -> str:
    """``value`` as a quoted Hydra override value that composes back to exactly ``value``.

    Quoting keeps ``=``, ``,``, spaces and brackets literal. In a quoted Hydra value a backslash
    is literal except before a quote, so quotes are escaped and the backslashes before them (and
    before the closing quote) doubled; ``${`` is escaped so that a path never becomes an
    OmegaConf interpolation.
    """
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return "'" + escaped.replace("${", "\\${") + "'"


def job_subprocess_cmd(local_rank: int) -> tuple[list[str], str]:
    """The command and working directory that start rank ``local_rank`` of the current job.

    Drop-in for Lightning's ``_hydra_subprocess_cmd(local_rank) -> (command, cwd)``. Built from
    the running job's Hydra state, never from ``sys.argv``:

    ``python -m <entry> <job task overrides> <hydra overrides> hydra.mode=RUN
    hydra.run.dir='<job output dir>' hydra.output_subdir=null hydra.job.name=<name>_rank<r>
    [hydra.job.num=<n>]``

    so the child composes the job's config (not the sweep's), writes into the job's directory
    (no new run or sweep directory; no second ``.hydra/``) and logs to ``<name>_rank<r>.log``.
    """
    import __main__  # Lightning imports it late too (Lightning issue #15218)

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    task_overrides = list(hydra_cfg.overrides.task)
    hydra_overrides = [
        o for o in hydra_cfg.overrides.hydra if _override_key(o) not in _CHILD_OWN_KEYS
    ]
    command += [
        *task_overrides,
        *hydra_overrides,
        "hydra.mode=RUN",
        f"hydra.run.dir={quote_override_value(str(hydra_cfg.runtime.output_dir))}",
        "hydra.output_subdir=null",
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
    ]
    if not OmegaConf.is_missing(hydra_cfg.job, "num"):  # set in sweeps only
        command.append(f"hydra.job.num={hydra_cfg.job.num}")
    log.info("Starting DDP rank %d of this job: %s", local_rank, " ".join(command))
    return command, get_original_cwd()


# --------------------------------------------------------------------------------------------
# One job: child command in, clean state out
# --------------------------------------------------------------------------------------------


class _JobProcesses:
    """The child ranks Lightning starts during one job (recorded through its process observer)."""

    def __init__(self) -> None:
        self.watched: list[list[subprocess.Popen]] = []

    def observe(self, original: Callable[[list[subprocess.Popen]], None]) -> Callable:
        def record_and_observe(child_processes: list[subprocess.Popen]) -> None:
            self.watched.append(child_processes)
            original(child_processes)

        return record_and_observe

    def release(self) -> list[subprocess.Popen]:
        """Hand the children over from Lightning's observer thread to the caller.

        The observer SIGKILLs the main process when a child exits non-zero; emptying the list
        it watches ends it quietly, so that stopping a failed job's children does not kill the
        whole sweep.
        """
        children = [proc for procs in self.watched for proc in procs]
        for procs in self.watched:
            procs.clear()
        return children


def _wait_for(children: Sequence[subprocess.Popen], timeout_s: float) -> None:
    """Wait for ranks 1..N-1 to exit; on a hang or a non-zero exit stop them all and raise."""
    deadline = time.monotonic() + timeout_s
    for local_rank, proc in enumerate(children, start=1):
        try:
            code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _stop(children)
            raise RuntimeError(
                f"DDP rank {local_rank} (pid {proc.pid}) still running {timeout_s:.0f} s after "
                "rank 0 finished the job; stopped it"
            ) from None
        if code != 0:
            _stop(children)
            raise RuntimeError(
                f"DDP rank {local_rank} (pid {proc.pid}) exited with code {code}; see its log "
                f"<job dir>/<job name>_rank{local_rank}.log"
            )


def _stop(children: Sequence[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is left after ``grace_s``: a failed job leaves no rank behind."""
    alive = [proc for proc in children if proc.poll() is None]
    for proc in alive:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in alive:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _end_distributed_state(environ: dict[str, str | None], threads: int) -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key, value in environ.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    torch.set_num_threads(threads)


@contextlib.contextmanager
def distributed_job(child_exit_timeout_s: float = CHILD_EXIT_TIMEOUT_S) -> Iterator[None]:
    """Scope of one Hydra job under any Lightning strategy (see the module docstring).

    Inside: Lightning starts child ranks with :func:`job_subprocess_cmd`. On exit: waits for the
    child ranks (on success; a non-zero exit or a hang past ``child_exit_timeout_s`` raises
    ``RuntimeError``) or stops them (on failure), destroys the process group, and restores the
    environment variables in :data:`LIGHTNING_ENV_VARS` and ``torch.get_num_threads()``.
    """
    for name in ("_hydra_subprocess_cmd", "_launch_process_observer"):
        if not hasattr(_lightning_launcher, name):  # a Lightning release moved its internals
            raise RuntimeError(
                f"lightning.pytorch.strategies.launchers.subprocess_script.{name} is gone: "
                "experiments/workflows/launch.py needs updating for this Lightning version"
            )
    environ = {key: os.environ.get(key) for key in LIGHTNING_ENV_VARS}
    threads = torch.get_num_threads()
    processes = _JobProcesses()
    original_cmd = _lightning_launcher._hydra_subprocess_cmd
    original_observer = _lightning_launcher._launch_process_observer
    _lightning_launcher._hydra_subprocess_cmd = job_subprocess_cmd
    _lightning_launcher._launch_process_observer = processes.observe(original_observer)
    try:
        yield
    except BaseException:
        _stop(processes.release())
        raise
    else:
        _wait_for(processes.release(), child_exit_timeout_s)
    finally:
        _lightning_launcher._hydra_subprocess_cmd = original_cmd
        _lightning_launcher._launch_process_observer = original_observer
        _end_distributed_state(environ, threads)


def run_job(fn: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """``fn(cfg)`` as one Hydra job: launcher check, then :func:`distributed_job` around it."""
    check_launcher(cfg)
    with distributed_job():
        return fn(cfg)


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _device_count(devices: Any, accelerator: str) -> int | None:
    """Processes per node that ``trainer.devices`` asks for; ``None``: depends on the host."""
    if isinstance(devices, int):
        return None if devices == -1 else devices
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return len(devices)
    text = str(devices).strip()
    if text in ("auto", "-1"):
        return 1 if accelerator == "cpu" else None
    if "," in text:
        return len([part for part in text.split(",") if part.strip()])
    return int(text) if text.isdigit() else None


def processes_per_job(trainer: DictConfig | dict) -> int | None:
    """How many processes one job's Trainer runs (devices x nodes); ``None``: host-dependent."""
    accelerator = str(trainer.get("accelerator", "auto"))
    strategy = trainer.get("strategy", "auto")
    devices = _device_count(trainer.get("devices", "auto"), accelerator)
    nodes = int(trainer.get("num_nodes", 1) or 1)
    if devices is None:
        return None
    count = devices * nodes
    name = strategy if isinstance(strategy, str) else str(strategy.get("_target_", ""))
    if count == 1 and any(s in name.lower() for s in _MULTI_PROCESS_STRATEGIES):
        return 1  # a DDP strategy on one device runs in the job's own process
    return count


def current_launcher() -> str | None:
    """The ``hydra/launcher`` of the running multirun job (``basic``, ``joblib``, ...).

    ``None`` outside Hydra and in a single run (RUN mode), where no launcher is involved.
    """
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return hydra_cfg.runtime.choices.get("hydra/launcher")


def check_launcher(cfg: DictConfig, launcher: str | None = None) -> None:
    """Refuse a Trainer that needs several processes under the joblib launcher.

    joblib runs each job in a pool worker: Lightning cannot start DDP ranks from it (and
    ``ddp_spawn`` workers cannot be started from a daemonic pool process). DDP needs
    ``launcher=local`` (one job at a time, ranks started by Lightning) or ``launcher=slurm``
    (ranks started by SLURM).

    Raises:
        ConfigError: naming ``trainer.devices``/``trainer.strategy`` and the launcher.
    """
    launcher = launcher or current_launcher()
    if not launcher or "joblib" not in launcher:
        return
    trainer = cfg.get("trainer")
    if not trainer:  # no trainer group (predict, export, pretrain): the job is one process
        return
    count = processes_per_job(trainer)
    if count == 1:
        return
    devices = trainer.get("devices", "auto")
    strategy = trainer.get("strategy", "auto")
    why = "is host-dependent" if count is None else f"means {count} processes"
    raise ConfigError(
        f"launcher=joblib (hydra/launcher={launcher}) runs one process per job, but "
        f"trainer.devices={devices} (trainer.strategy={strategy}) {why}: DDP cannot run in a "
        "joblib worker. Use trainer.devices=1 with joblib, or launcher=local / launcher=slurm "
        "for DDP"
    )


def gpus_per_node(accelerator: str, devices: Any) -> int | None:
    """``hydra.launcher.gpus_per_node`` for submitit: ``trainer.devices`` on GPUs, else None.

    Registered as the resolver ``${shoprank.gpus_per_node:<accelerator>,<devices>}``.
    """
    if str(accelerator) not in ("gpu", "cuda", "auto"):
        return None
    count = _device_count(devices, str(accelerator))
    if count is None:
        raise ConfigError(
            f"launcher=slurm needs an explicit trainer.devices (got {devices!r}): it is the "
            "number of tasks and GPUs per node"
        )
    return count


def register_resolvers() -> None:
    """Register the ``shoprank.*`` resolvers that ``conf/launcher/*.yaml`` use (idempotent)."""
    if not OmegaConf.has_resolver("shoprank.gpus_per_node"):
        OmegaConf.register_new_resolver("shoprank.gpus_per_node", gpus_per_node)


register_resolvers()


class CheckLauncher(Callback):
    """Hydra callback (``conf/launcher/joblib.yaml``): :func:`check_launcher` before any job.

    Stops the sweep in the main process with one ``error:`` line (exit code 2) instead of
    starting a pool of workers first. Values swept per job are checked again in each job.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.runtime.choices.get("hydra/launcher")
        run_or_exit(check_launcher, config, launcher)


class GuardRunDir(Callback):
    """Hydra callback: a single run stops at once if ``hydra.run.dir`` already holds a run.

    It runs before Hydra writes ``.hydra/`` and the job log into the directory, so nothing of
    the old run is touched (:func:`experiments.workflows.run_dir.guard_output_dir`; the entry points
    check again, for multirun jobs and direct calls). ``ckpt_path=last`` of a resumable entry point
    (``resumable``: its ``task_name`` values) continues the run instead.

    Args:
        resumable: ``task_name`` values whose ``ckpt_path=last`` resumes a run.
    """

    def __init__(self, resumable: Sequence[str] = ("train", "distill")) -> None:
        self.resumable = tuple(resumable)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        resumable = str(config.get("task_name")) in self.resumable
        resume = resumable and str(config.get("ckpt_path")) == "last"
        run_dir = Path(str(config.hydra.run.dir))
        run_or_exit(guard_output_dir, run_dir, resume, resumable)


class MakeSweepDir(Callback):
    """Hydra callback: create ``hydra.sweep.dir`` when a multirun starts.

    Hydra creates it only when the launcher starts the first job, but the Optuna sweeper opens
    its sqlite storage (``<sweep dir>/optuna.db``) before that, and SQLite does not create
    directories.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------------------------
# Debugging: what each rank ran
# --------------------------------------------------------------------------------------------


def write_rank_record(cfg: DictConfig, trainer: Any, objective: float) -> Path | None:
    """When ``$SHOPRANK_DEBUG_RANKS=1``: write ``<output_dir>/ddp_ranks/rank<global rank>.json``.

    It holds the rank, world size, pid, the Hydra job name, the value the entry point returns to
    the sweeper and the fully resolved config, so a test (or a person) can check that every rank
    of a job trained with the same config and wrote into the same directory.
    """
    if os.environ.get(DEBUG_RANKS_ENV) != "1":
        return None
    rank = int(getattr(trainer, "global_rank", 0))
    path = Path(cfg.paths.output_dir) / "ddp_ranks" / f"rank{rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "global_rank": rank,
        "world_size": int(getattr(trainer, "world_size", 1)),
        "pid": os.getpid(),
        "job_name": HydraConfig.get().job.name if HydraConfig.initialized() else None,
        "objective": objective,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    path.write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
    return path
