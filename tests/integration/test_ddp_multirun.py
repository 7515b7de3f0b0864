"""Hydra --multirun under Lightning DDP (gloo, CPU): one config per job on every rank, one sweep
directory, no hang between jobs; Optuna and launcher configs (experiments/workflows/launch.py,
conf/launcher/, conf/hparams_search/).

The multirun tests start `python -m experiments.train --multirun ...` with 2 CPU ranks per job;
each rank writes its resolved config (SHOPRANK_DEBUG_RANKS=1 -> <job dir>/ddp_ranks/rank<r>.json).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from data_modules.errors import ConfigError
from experiments.workflows import launch
from tests.conftest import CONF_DIR, REPO, TINY

MULTIRUN_TIMEOUT_S = 420  # a hang between jobs shows as a timeout, never as a stuck test run
DDP_CPU = ["trainer.accelerator=cpu", "trainer.devices=2"]
# Every TINY override (all default groups) plus the cheapest val/test and no logger.
FAST = [
    *(o for overrides in TINY.values() for o in overrides),
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "logger=none",
]


def group(name: str, option: str) -> str:
    """``name=option``, or ``+name=option`` while conf/train.yaml has no default for ``name``."""
    defaults = yaml.safe_load((CONF_DIR / "train.yaml").read_text())["defaults"]
    listed = any(isinstance(d, dict) and name in d for d in defaults)
    return f"{name}={option}" if listed else f"+{name}={option}"


def strategy(name: str) -> str:
    # `++`: works whether or not conf/trainer/cpu.yaml declares `strategy`.
    return f"++trainer.strategy={name}"


def multirun(
    tmp_path: Path, *overrides: str, wandb_mode: str = "disabled"
) -> tuple[Path, subprocess.CompletedProcess]:
    """Run a sweep into ``tmp_path/logs``; return its one sweep dir (asserted) and the process."""
    result = train(tmp_path, *overrides, multirun_flag=True, wandb_mode=wandb_mode)
    train_logs = tmp_path / "logs" / "train"
    # Ranks >= 1 run in RUN mode inside the job dir: no run dir, no second sweep dir.
    assert not (train_logs / "runs").exists(), sorted((train_logs / "runs").iterdir())
    sweeps = sorted((train_logs / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0], result


def train(
    tmp_path: Path, *overrides: str, multirun_flag: bool = False, wandb_mode: str = "disabled"
) -> subprocess.CompletedProcess:
    """``python -m experiments.train`` on tiny data into ``tmp_path``; asserts exit code 0."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": wandb_mode,
        launch.DEBUG_RANKS_ENV: "1",
    }
    own_logger = any(o.startswith("logger=") for o in overrides)
    args = [
        sys.executable,
        "-m",
        "experiments.train",
        *(["--multirun"] if multirun_flag else []),
        *(o for o in FAST if not (own_logger and o.startswith("logger="))),
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *overrides,
    ]
    # Own session: on a timeout the whole group (rank 0 and its DDP children) is killed.
    proc = subprocess.Popen(
        args,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=MULTIRUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"training did not finish in {MULTIRUN_TIMEOUT_S} s:\n{out[-4000:]}")
    finally:
        _assert_no_process_left(proc.pid)
    assert proc.returncode == 0, out[-6000:]
    return subprocess.CompletedProcess(args, proc.returncode, out, "")


def _assert_no_process_left(session: int, grace_s: float = 20.0) -> None:
    """No rank outlives the sweep: the session is empty within ``grace_s`` (else killed, fail)."""
    deadline = time.monotonic() + grace_s
    while True:
        pids = subprocess.run(
            ["pgrep", "-s", str(session)], capture_output=True, text=True, check=False
        ).stdout.split()
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if pids:
        listing = subprocess.run(
            ["ps", "-o", "pid,etimes,args", "-p", ",".join(pids)], capture_output=True, text=True
        ).stdout
        os.killpg(session, signal.SIGKILL)
        pytest.fail(f"processes left behind by the sweep:\n{listing}")


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=_num)


def _num(path: Path) -> int:
    return int(path.name)


def ranks(job: Path) -> dict[int, dict]:
    records = [json.loads(p.read_text()) for p in (job / "ddp_ranks").glob("rank*.json")]
    return {r["global_rank"]: r for r in records}


def assert_one_config_per_job(sweep: Path, world_size: int) -> list[dict]:
    """Every job has one record per rank, all with that job's config; returns rank 0 records."""
    firsts = []
    for job in job_dirs(sweep):
        records = ranks(job)
        assert sorted(records) == list(range(world_size)), (job, sorted(records))
        first = records[0]
        assert first["world_size"] == world_size
        assert first["config"]["paths"]["output_dir"] == str(job)
        for rank, record in records.items():
            assert record["world_size"] == world_size, (job, rank)
            assert record["config"] == first["config"], f"{job}: rank {rank} config differs"
            assert record["objective"] == first["objective"], (job, rank)
        firsts.append(first)
    return firsts


# ------------------------------------------------------------------------------------------
# Multiruns with several processes (gloo on CPU)
# ------------------------------------------------------------------------------------------


@pytest.mark.ddp
@pytest.mark.slow
def test_grid_multirun_with_ddp(tmp_path: Path) -> None:
    sweep, _ = multirun(tmp_path, *DDP_CPU, strategy("ddp"), "loss=listnet,approx_ndcg")
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    firsts = assert_one_config_per_job(sweep, world_size=2)
    assert [r["config"]["loss"]["name"] for r in firsts] == ["listnet", "approx_ndcg"]
    for job in jobs:
        records = ranks(job)
        # rank 1 is a RUN-mode child of this job: own log file, no second .hydra/ dir
        assert records[1]["job_name"] == "train_rank1"
        assert (job / "train_rank1.log").is_file() and (job / "train.log").is_file()
        assert records[1]["pid"] != records[0]["pid"]
        assert (job / "metrics.json").is_file()
    # Both jobs ran in the same rank-0 process: the second found no stale DDP state.
    assert len({r["pid"] for r in firsts}) == 1
    assert len({ranks(j)[1]["pid"] for j in jobs}) == 2


@pytest.mark.ddp
@pytest.mark.slow
def test_grid_multirun_with_ddp_logs_one_wandb_run_per_job(tmp_path: Path) -> None:
    """DDP x multirun x W&B (offline): one run per job from rank 0, none from rank 1, each
    named by its job and grouped by the sweep, with its results."""
    sweep, _ = multirun(
        tmp_path,
        *DDP_CPU,
        strategy("ddp"),
        "logger=wandb",
        "loss=listnet,approx_ndcg",
        wandb_mode="offline",
    )
    jobs = job_dirs(sweep)
    for job, loss in zip(jobs, ("listnet", "approx_ndcg"), strict=True):
        runs = sorted((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, runs  # rank 1 started no W&B run
        debug = (runs[0] / "logs" / "debug.log").read_text()
        # named by the job's overrides (its swept value last), grouped by the sweep
        assert f",loss={loss}'" in debug and f"'group': 'train/{sweep.name}'" in debug
        recorded = json.loads((job / "wandb_run.json").read_text())
        assert runs[0].name.endswith(recorded["id"])
        assert list((runs[0] / "files/media/table/test").glob("per_query_*.table.json"))
    assert len({json.loads((j / "wandb_run.json").read_text())["id"] for j in jobs}) == 2


@pytest.mark.ddp
@pytest.mark.slow
def test_single_run_with_ddp(tmp_path: Path) -> None:
    train(tmp_path, *DDP_CPU, strategy("ddp"), "test_after_fit=false", "seed=3")
    runs = sorted((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1 and not (tmp_path / "logs" / "train" / "multiruns").exists()
    records = ranks(runs[0])
    assert sorted(records) == [0, 1]
    assert records[1]["config"] == records[0]["config"]
    assert records[0]["config"]["seed"] == 3 and records[0]["world_size"] == 2


@pytest.mark.ddp
@pytest.mark.slow
def test_optuna_sweep_with_ddp(tmp_path: Path) -> None:
    sweep, _ = multirun(
        tmp_path,
        *DDP_CPU,
        strategy("ddp"),
        group("hparams_search", "optuna"),
        "hydra.sweeper.n_trials=2",
        "test_after_fit=false",
    )
    firsts = assert_one_config_per_job(sweep, world_size=2)
    assert len(firsts) == 2
    # The two trials got different hyperparameters, each applied on both of its ranks.
    lrs = [r["config"]["model"]["optimizer"]["lr"] for r in firsts]
    assert lrs[0] != lrs[1]
    # The study lives in the sweep dir (resumable) and optimised what train returned.
    assert (sweep / "optuna.db").is_file()
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == max(r["objective"] for r in firsts)  # monitor_mode=max
    best = firsts[[r["objective"] for r in firsts].index(results["best_value"])]["config"]
    assert results["best_params"]["model.optimizer.lr"] == best["model"]["optimizer"]["lr"]
    assert results["best_params"]["loss"] == best["loss"]["name"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Deprecated API features detected")  # optuna 2 on SQLAlchemy 1.4
def test_optuna_sweep_resumes_from_its_storage(tmp_path: Path) -> None:
    import optuna

    search = [group("hparams_search", "optuna"), "hydra.sweeper.n_trials=1", "test_after_fit=false"]
    first, _ = multirun(tmp_path / "a", *search)
    storage = f"sqlite:///{first / 'optuna.db'}"
    # A new seed: the same one would repeat the first run's random start-up trials.
    second, _ = multirun(
        tmp_path / "b", *search, f"hydra.sweeper.storage={storage}", "hydra.sweeper.sampler.seed=1"
    )
    assert not (second / "optuna.db").exists()
    study = optuna.load_study(study_name="train", storage=storage)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2
    objectives = [ranks(job_dirs(s)[0])[0]["objective"] for s in (first, second)]
    assert [t.value for t in trials] == objectives


@pytest.mark.ddp
@pytest.mark.slow
def test_grid_multirun_with_ddp_spawn(tmp_path: Path) -> None:
    sweep, _ = multirun(
        tmp_path, *DDP_CPU, strategy("ddp_spawn"), "test_after_fit=false", "loss=listnet,ranknet"
    )
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    for job, loss in zip(jobs, ["listnet", "ranknet"], strict=True):
        records = ranks(job)  # spawned workers get pickled objects and do not run the entry point
        assert list(records) == [0] and records[0]["world_size"] == 2
        assert records[0]["config"]["loss"]["name"] == loss
        assert json.loads((job / "metrics.json").read_text())["monitor"] == "val/ndcg@10"


def test_joblib_refuses_ddp_before_any_job(tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "experiments.train",
        "--multirun",
        group("launcher", "joblib"),
        *DDP_CPU,
        strategy("ddp"),
        f"paths.log_dir={tmp_path / 'logs'}",
        "seed=1,2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "launcher=joblib" in errors[0] and "trainer.devices=2" in errors[0]
    assert not list((tmp_path / "logs").rglob("*.json"))  # no job ran


# ------------------------------------------------------------------------------------------
# Configs: launchers and the Optuna search (compose only, no cluster)
# ------------------------------------------------------------------------------------------


def compose_train(*overrides: str) -> DictConfig:
    """conf/train.yaml with its ``hydra`` node, as a job of a sweep would see it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


def test_slurm_launcher_takes_its_sizes_from_the_trainer(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_train(
        group("launcher", "slurm"),
        "trainer=gpu",
        "trainer.devices=4",
        "++trainer.num_nodes=2",
        strategy("ddp"),
        f"hydra.sweep.dir={tmp_path}",
    )
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "submitit_slurm"
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params["tasks_per_node"] == 4  # one SLURM task per DDP rank
    assert params["nodes"] == 2
    assert params["gpus_per_node"] == 4
    assert params["submitit_folder"] == f"{tmp_path}/.submitit/%j"
    launcher = instantiate(cfg.hydra.launcher)  # what Hydra builds; submits nothing
    assert type(launcher).__name__ == "SlurmLauncher"
    assert launcher.params["tasks_per_node"] == 4 and launcher.params["nodes"] == 2


def test_slurm_launcher_on_cpu_asks_for_no_gpu() -> None:
    cfg = compose_train(group("launcher", "slurm"), "trainer.devices=2")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (1, 2, None)


@pytest.mark.parametrize("option", ["local", "joblib", "slurm"])
def test_launcher_options_select_the_hydra_launcher(option: str) -> None:
    expected = {"local": "basic", "joblib": "joblib", "slurm": "submitit_slurm"}[option]
    cfg = compose_train(group("launcher", option))
    assert cfg.hydra.runtime.choices["hydra/launcher"] == expected


@pytest.mark.parametrize(("mode", "direction"), [("max", "maximize"), ("min", "minimize")])
def test_optuna_direction_follows_monitor_mode(tmp_path: Path, mode: str, direction: str) -> None:
    cfg = compose_train(
        group("hparams_search", "optuna"),
        f"monitor_mode={mode}",
        f"hydra.sweep.dir={tmp_path}",
    )
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    assert sweeper["direction"] == direction
    assert sweeper["storage"] == f"sqlite:///{tmp_path}/optuna.db"
    assert sweeper["study_name"] == "train"
    assert cfg.hydra.runtime.choices["hydra/sweeper"] == "optuna"
    assert cfg.hydra.mode.name == "MULTIRUN"


@pytest.mark.parametrize(
    ("trainer", "refused"),
    [
        ({"accelerator": "cpu", "devices": 1}, False),
        ({"accelerator": "cpu", "devices": 1, "strategy": "ddp"}, False),
        ({"accelerator": "cpu", "devices": "auto"}, False),
        ({"accelerator": "cpu", "devices": 2}, True),
        ({"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"}, True),
        ({"accelerator": "gpu", "devices": "0,1"}, True),
        ({"accelerator": "gpu", "devices": [0]}, False),
        ({"accelerator": "gpu", "devices": -1}, True),  # host-dependent: refused
        ({"accelerator": "gpu", "devices": 1, "num_nodes": 2}, True),
    ],
)
def test_joblib_refuses_every_multi_process_trainer(trainer: dict, refused: bool) -> None:
    cfg = OmegaConf.create({"trainer": trainer})
    launch.check_launcher(cfg, launcher="basic")  # any other launcher hosts DDP
    if refused:
        with pytest.raises(ConfigError, match=r"launcher=joblib .*trainer\.devices="):
            launch.check_launcher(cfg, launcher="joblib")
    else:
        launch.check_launcher(cfg, launcher="joblib")


# ------------------------------------------------------------------------------------------
# The child command and the end-of-job cleanup
# ------------------------------------------------------------------------------------------


@pytest.fixture
def hydra_job():
    """Set the global Hydra job config (as Hydra does for a job); cleared afterwards."""
    from hydra.core.hydra_config import HydraConfig

    yield HydraConfig.instance().set_config
    HydraConfig.instance().cfg = None


def test_child_command_is_the_current_job_not_the_sweep(tmp_path: Path, hydra_job) -> None:
    job_dir = tmp_path / "multiruns" / "2026-01-01_00-00-00_000001" / "3"
    cfg = compose_train("loss=listnet", "seed=7", "hydra.mode=MULTIRUN")
    cfg.hydra.runtime.output_dir = str(job_dir)
    cfg.hydra.job.num = 3
    cfg.hydra.job.name = "train"
    hydra_job(cfg)
    command, cwd = launch.job_subprocess_cmd(local_rank=1)
    assert command[0] == sys.executable and "--multirun" not in command
    args = command[command.index("loss=listnet") :]
    assert args[:2] == ["loss=listnet", "seed=7"]  # the job's overrides, in order
    assert "hydra.mode=MULTIRUN" not in args and "hydra.mode=RUN" in args
    assert "hydra.output_subdir=null" in args
    assert "hydra.job.name=train_rank1" in args and "hydra.job.num=3" in args
    assert cwd == cfg.hydra.runtime.cwd
    run_dir = next(a for a in args if a.startswith("hydra.run.dir="))
    assert compose_train(run_dir).hydra.run.dir == str(job_dir)


def test_child_command_of_a_single_run(tmp_path: Path, hydra_job) -> None:
    cfg = compose_train("seed=5")  # RUN mode: hydra.job.num is not set
    cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    hydra_job(cfg)
    command, _ = launch.job_subprocess_cmd(local_rank=2)
    args = command[command.index("seed=5") :]
    assert not any(a.startswith("hydra.job.num=") for a in args)
    assert f"hydra.run.dir='{tmp_path / 'run'}'" in args and "hydra.mode=RUN" in args


@pytest.mark.parametrize(
    "path", ["/a b/c=d,e", "/x/it's/[1]", "/y/${oops}/z", "C:\\runs\\1\\", "/q/a\\'b"]
)
def test_quoted_paths_compose_back_unchanged(path: str) -> None:
    cfg = compose_train(f"hydra.run.dir={launch.quote_override_value(path)}")
    assert cfg.hydra.run.dir == path


def test_distributed_job_restores_env_threads_and_process_group(monkeypatch) -> None:
    for key in launch.LIGHTNING_ENV_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    with launch.distributed_job():
        os.environ.update(LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.update(MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="7")
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
        torch.set_num_threads(threads + 1)
    assert not torch.distributed.is_initialized()
    assert torch.get_num_threads() == threads
    assert os.environ["OMP_NUM_THREADS"] == "1"
    for key in ("LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        assert key not in os.environ


def test_distributed_job_stops_children_of_a_failed_job_and_restores_lightning() -> None:
    from lightning.pytorch.strategies.launchers import subprocess_script

    original = subprocess_script._hydra_subprocess_cmd
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(ZeroDivisionError), launch.distributed_job():
        assert subprocess_script._hydra_subprocess_cmd is launch.job_subprocess_cmd
        subprocess_script._launch_process_observer([sleeper])  # as Lightning calls it
        _ = 1 / 0
    assert sleeper.poll() is not None  # stopped, not left running
    assert subprocess_script._hydra_subprocess_cmd is original


def test_distributed_job_reports_a_failed_child() -> None:
    from lightning.pytorch.strategies.launchers import subprocess_script

    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with (
        pytest.raises(RuntimeError, match=r"rank 1 .* exited with code 3"),
        launch.distributed_job(),
    ):
        # Lightning's observer would SIGKILL this process on a failed child after its first
        # 5 s sleep; the job ends well before that and hands the child over.
        subprocess_script._launch_process_observer([failing])
        failing.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
