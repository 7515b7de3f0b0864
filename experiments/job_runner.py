"""A small job runner: subprocesses with dependencies, ``parallel`` at a time, finished runs reused.

Used by :mod:`experiments.reproduce`. A job is reused when its directory holds its done file
and a stamp (``reproduce.json``) with the command that made it and the finish ids of the runs
it was built on; a job whose dependency failed is skipped; an *exclusive* job (a latency
timing) runs alone on the machine. Hydra's multirun launchers cannot share runs between sweeps
or skip finished ones, which the studies need.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from data_modules.errors import ShoprankError

REPO = Path(__file__).resolve().parents[1]
STAMP = "reproduce.json"


@dataclass
class Job:
    """One subprocess: its run directory, the file that says it finished, what it waits for."""

    name: str
    run_dir: Path
    done_file: str
    argv: Callable[[], list[str]]  # built when the job starts (a distill needs its teacher's ckpt)
    after: tuple[str, ...] = ()
    exclusive: bool = False  # alone on the machine (latency timings)
    state: str = "pending"  # pending | running | done | reused | failed | skipped
    seconds: float = 0.0


def _stamp(job: Job) -> dict:
    try:
        return json.loads((job.run_dir / STAMP).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _finished(job: Job, argv: list[str], jobs: dict[str, Job]) -> bool:
    """True if ``job`` may be reused: finished, same command, and built on the same runs.

    A dependent (a distill student, the adapted encoder's fine-tuning, a latency timing) records
    the finish id of every run it was built on; if one of them ran again since (its command
    changed, or an earlier rerun was interrupted after retraining it), the dependent is stale
    even though its own command, which names the teacher's checkpoint path, is unchanged.
    """
    stamp = _stamp(job)
    if not (job.run_dir / job.done_file).is_file() or not stamp:
        return False
    if stamp.get("argv") != argv[1:]:  # the interpreter may differ
        return False
    built_on = stamp.get("after", {})
    return all(
        (finished := _stamp(jobs[dep]).get("finished")) is not None
        and built_on.get(dep) == finished
        for dep in job.after
    )


def _write_stamp(job: Job, argv: list[str], jobs: dict[str, Job]) -> None:
    stamp = {
        "argv": argv[1:],
        "finished": uuid.uuid4().hex,  # changes every time the run is made again
        "after": {dep: _stamp(jobs[dep]).get("finished") for dep in job.after},
    }
    (job.run_dir / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")


def clock(seconds: float) -> str:
    """``12m05s``."""
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def run_jobs(
    jobs: dict[str, Job], parallel: int, threads: int, log=print, cwd: Path = REPO
) -> bool:
    """Run every job whose dependencies succeeded, ``parallel`` at a time; True if none failed."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.setdefault("WANDB_MODE", "offline")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    pending = list(jobs.values())
    running: dict[str, tuple[subprocess.Popen, float, list[str]]] = {}
    start, finished, durations = time.time(), 0, []

    def report(job: Job, what: str) -> None:
        nonlocal finished
        finished += 1
        left = sum(1 for j in jobs.values() if j.state in ("pending", "running"))
        mean = sum(durations) / len(durations) if durations else math.nan
        eta = "" if math.isnan(mean) else f", ~{clock(mean * left / parallel)} left"
        log(
            f"[{finished:3d}/{len(jobs)}] {what:7s} {job.name} ({job.seconds:.0f} s) | "
            f"{clock(time.time() - start)} elapsed{eta}"
        )

    while pending or running:
        for name, (proc, began, argv) in list(running.items()):
            if proc.poll() is None:
                continue
            job = jobs[name]
            job.seconds = time.time() - began
            del running[name]
            if proc.returncode == 0 and (job.run_dir / job.done_file).is_file():
                job.state = "done"
                durations.append(job.seconds)
                _write_stamp(job, argv, jobs)
                report(job, "done")
            else:
                job.state = "failed"
                report(job, "FAILED")
                log(f"      see {job.run_dir / 'job.log'}")
        for job in list(pending):
            deps = [jobs[d] for d in job.after]
            if any(d.state in ("failed", "skipped") for d in deps):
                job.state = "skipped"
                pending.remove(job)
                report(job, "skipped")
                continue
            if any(d.state not in ("done", "reused") for d in deps):
                continue
            try:
                argv = job.argv()
            except (ShoprankError, OSError, KeyError, json.JSONDecodeError) as err:
                job.state = "failed"
                pending.remove(job)
                report(job, "FAILED")
                log(f"      {err}")
                continue
            if _finished(job, argv, jobs):  # reuse needs no free slot
                job.state = "reused"
                pending.remove(job)
                report(job, "reused")
                continue
            if any(j.exclusive for j in (jobs[n] for n in running)):
                break  # nothing starts beside an exclusive job
            if job.exclusive and running:
                continue
            if len(running) >= parallel:
                break
            pending.remove(job)
            shutil.rmtree(job.run_dir, ignore_errors=True)
            job.run_dir.mkdir(parents=True, exist_ok=True)
            with open(job.run_dir / "job.log", "w") as out:
                proc = subprocess.Popen(
                    argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            job.state = "running"
            running[job.name] = (proc, time.time(), argv)
            if job.exclusive:
                break
        time.sleep(0.5)
    return all(j.state in ("done", "reused") for j in jobs.values())
