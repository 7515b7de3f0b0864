"""Resuming interrupted runs: sampler positions, ``ckpt_path=last``, and a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from callbacks.resume import ResumeDataOrder
from data_modules.errors import ConfigError
from data_modules.listwise import EpochSampler
from experiments.workflows.resume import last_checkpoints, prepare_resume, resolve_ckpt_path
from tests.conftest import CONF_DIR, REPO, TINY

# ----------------------------------------------------------------------------- EpochSampler


def test_sampler_resume_position_skips_the_trained_items_once() -> None:
    full = EpochSampler(10, shuffle=True, seed=3)
    full.set_epoch(2)
    epoch2 = list(full)
    assert sorted(i for i, _ in epoch2) == list(range(10)) and {e for _, e in epoch2} == {2}

    resumed = EpochSampler(10, shuffle=True, seed=3)
    resumed.load_state_dict({"epoch": 2, "start": 4})
    assert resumed.state_dict() == {"epoch": 2, "start": 4}
    resumed.set_epoch(2)  # Lightning sets the same epoch again before iterating
    assert list(resumed) == epoch2[4:]
    assert list(resumed) == epoch2  # used once: the next pass over the epoch is whole
    resumed.set_epoch(3)
    full.set_epoch(3)
    assert list(resumed) == list(full)


def test_sampler_resume_position_belongs_to_its_epoch() -> None:
    sampler = EpochSampler(6, shuffle=True, seed=0)
    sampler.load_state_dict({"epoch": 1, "start": 2})
    sampler.set_epoch(2)  # another epoch: the position is dropped
    assert sampler.state_dict() == {"epoch": 2, "start": 0}
    assert len(list(sampler)) == len(sampler) == 6
    with pytest.raises(ValueError, match="non-negative"):
        sampler.load_state_dict({"epoch": 0, "start": -1})


def test_sampler_resume_position_is_per_rank_shard() -> None:
    """Under DDP every rank trained the same number of batches: each skips its own shard's."""
    for rank in range(3):
        full = EpochSampler(11, shuffle=True, seed=5, num_replicas=3, rank=rank, even_shards=True)
        full.set_epoch(1)
        resumed = EpochSampler(
            11, shuffle=True, seed=5, num_replicas=3, rank=rank, even_shards=True
        )
        resumed.load_state_dict({"epoch": 1, "start": 2})
        assert list(resumed) == list(full)[2:]
        assert len(resumed) == len(full) == 4  # len stays the full shard (Lightning's count)


# ----------------------------------------------------------------------------- ckpt_path


def test_ckpt_path_last_without_checkpoint_is_one_config_error(tmp_path: Path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    assert resolve_ckpt_path(None, checkpoints) is None
    with pytest.raises(ConfigError, match=r"ckpt_path=last: no last\*\.ckpt in .*run/checkpoints"):
        resolve_ckpt_path("last", checkpoints)
    with pytest.raises(ConfigError, match=r"ckpt_path: checkpoint .*nope\.ckpt does not exist"):
        resolve_ckpt_path(str(tmp_path / "nope.ckpt"), checkpoints)


def test_ckpt_path_last_is_the_newest_last_checkpoint(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    for name, mtime in (("last.ckpt", 100), ("last-v1.ckpt", 300), ("epoch00-step5.ckpt", 400)):
        (directory / name).write_bytes(b"x")
        os.utime(directory / name, (mtime, mtime))
    assert [p.name for p in last_checkpoints(directory)] == ["last-v1.ckpt", "last.ckpt"]
    assert resolve_ckpt_path("last", directory) == str(directory / "last-v1.ckpt")
    # A trainer's ModelCheckpoint directory is searched as well.
    trainer = L.Trainer(
        callbacks=[ModelCheckpoint(dirpath=directory)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    assert resolve_ckpt_path("last", tmp_path / "elsewhere", trainer) == str(
        directory / "last-v1.ckpt"
    )


def _saved_run(make_cfg, tmp_path: Path, *overrides: str) -> Path:
    """A run directory as the pipeline leaves it: resolved config.yaml and a last.ckpt."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    cfg = make_cfg(*overrides)
    cfg.paths.output_dir = str(run)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return run


def _resolved(cfg, run: Path) -> dict:
    """The resuming run's resolved config, in the run's directory (hydra.run.dir=<run>)."""
    cfg.paths.output_dir = str(run)
    return OmegaConf.to_container(cfg, resolve=True)


def test_resume_checks_the_config_against_the_runs_own(make_cfg, tmp_path: Path) -> None:
    run = _saved_run(make_cfg, tmp_path, "loss=ranknet", "encoder.lr=0.002")
    same = make_cfg("loss=ranknet", "encoder.lr=0.002", "ckpt_path=last")
    last = str(run / "checkpoints" / "last.ckpt")
    assert prepare_resume("last", run, _resolved(same, run)) == last
    # Training longer, or writing elsewhere, is what a resume may change.
    longer = make_cfg("loss=ranknet", "encoder.lr=0.002", "trainer.max_epochs=5", "logger=none")
    assert prepare_resume("last", run, _resolved(longer, run)) is not None
    # Forgetting the run's overrides would continue it with another loss and learning rate.
    forgot = make_cfg("ckpt_path=last")
    with pytest.raises(ConfigError) as err:
        prepare_resume("last", run, _resolved(forgot, run))
    message = str(err.value)
    assert message.startswith(f"ckpt_path=last: the config differs from the run's {run}")
    assert "encoder.lr: 0.002 -> " in message and "loss.name: 'ranknet' -> 'listnet'" in message
    # A checkpoint file starts a new run: its config may differ.
    assert prepare_resume(last, tmp_path / "new", _resolved(forgot, tmp_path / "new")) == last


# ----------------------------------------------------------------------------- data order


class _Lists(Dataset):
    """Item ``(index, epoch)`` -> a float feature; the index is kept to record the data order."""

    def __len__(self) -> int:
        return 13

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        index, epoch = key
        return torch.tensor([float(index), float(epoch), 1.0])


class _Recorder(L.LightningModule):
    """Fits a linear layer; records, per optimiser step, the (index, epoch) of its batch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.seen: list[list[tuple[int, int]]] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append([(int(i), int(e)) for i, e, _ in batch.tolist()])
        return (self.layer(batch) - batch[:, :1] / 13).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(tmp: Path, ckpt_path: str | None, num_workers: int = 0, save: bool = False) -> _Recorder:
    """3 epochs of 4 batches (13 lists, batch 4, limited to 4 batches: the last is full)."""
    L.seed_everything(0)
    model = _Recorder()
    loader = DataLoader(
        _Lists(),
        batch_size=3,
        sampler=EpochSampler(13, shuffle=True, seed=7, even_shards=True),
        num_workers=num_workers,
    )
    callbacks: list[Callback] = [ResumeDataOrder()]
    keep_all = {"save_top_k": -1, "auto_insert_metric_name": False}
    if save:  # every step, and at every epoch end (after the epoch's last step)
        callbacks += [
            ModelCheckpoint(tmp, "step{step}", every_n_train_steps=1, **keep_all),
            ModelCheckpoint(tmp, "epochend{epoch}", every_n_epochs=1, **keep_all),
        ]
    trainer = L.Trainer(
        max_epochs=3,
        limit_train_batches=4,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=save,
        callbacks=callbacks,
    )
    trainer.fit(model, train_dataloaders=loader, ckpt_path=ckpt_path)
    assert trainer.global_step == 12
    return model


def test_resume_from_every_checkpoint_trains_the_remaining_batches(tmp_path: Path) -> None:
    """From any checkpoint (after every step, at every epoch end), the resumed run trains on
    exactly the batches the uninterrupted run trained on after that point, and ends with the
    same weights (exactly: same batches, same order, same float operations)."""
    full = _fit(tmp_path, None, save=True)
    assert len(full.seen) == 12 and len({tuple(b) for b in full.seen}) == 12
    checkpoints = sorted(tmp_path.glob("*.ckpt"))
    assert len(checkpoints) == 12 + 3
    for ckpt in checkpoints:
        step = torch.load(ckpt, weights_only=False)["global_step"]
        resumed = _fit(tmp_path / "resumed", str(ckpt))
        assert resumed.seen == full.seen[step:], ckpt.name
        for a, b in zip(resumed.parameters(), full.parameters(), strict=True):
            assert torch.equal(a, b), ckpt.name


def test_resume_with_worker_processes_keeps_the_data_order(tmp_path: Path) -> None:
    """With ``num_workers > 0`` the iterator prefetches before ``on_train_start``: it is
    restarted, so a mid-epoch resume in epoch 1 still sees epoch 1's remaining batches."""
    full = _fit(tmp_path, None, save=True)
    ckpt = tmp_path / "step6.ckpt"  # after 2 of epoch 1's 4 batches
    resumed = _fit(tmp_path / "resumed", str(ckpt), num_workers=1)
    assert resumed.seen == full.seen[6:]


# ----------------------------------------------------------------------------- SIGKILL


class PauseAtStep(Callback):
    """Test hook, added with ``+callbacks.pause=...``: at the start of the batch that would make
    optimiser step ``step + 1``, write ``marker`` and wait to be killed."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            self.marker.write_text(str(os.getpid()))
            while True:
                time.sleep(1)


def _command(run_dir: Path, cache: Path, *extra: str) -> list[str]:
    overrides = [o for group in ("data", "encoder", "trainer", "callbacks") for o in TINY[group]]
    return [
        sys.executable,
        "-m",
        "experiments.train",
        *overrides,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=5",
        "trainer.deterministic=true",
        "tower.dropout=0.3",  # dropout draws from torch's global generator (ResumeRandomState)
        "callbacks.step_checkpoint.every_n_train_steps=3",
        "logger=csv",
        "baselines=[random]",
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={cache}",
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0"}


def _run(command: list[str]) -> None:
    done = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def _final(run_dir: Path) -> tuple[dict, dict]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return ckpt, json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_sigkill_then_ckpt_path_last_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    """Kill a tiny training run with SIGKILL in epoch 1, resume it with ``ckpt_path=last`` in
    its own directory, and compare with the same run never interrupted.

    2 epochs x 5 batches, ``last.ckpt`` every 3 steps and at each epoch end. The run is killed
    while it waits at the start of step 8 (its newest checkpoint: step 6, one batch into epoch
    1; step 7 is lost and trained again). Tolerance: exact equality of every weight, of the
    optimiser state and of the val/test metrics. That is expected, not lucky: the tower's
    dropout (0.3) draws the same masks after the resume because the checkpoint carries the
    random states (:class:`ResumeRandomState`; Lightning saves none), the data order after the
    resume is the uninterrupted one (:class:`ResumeDataOrder`), both runs use one CPU thread with
    ``trainer.deterministic=true``, and CPU float operations in the same order give the same
    bits.
    """
    cache = tmp_path / "cache"
    reference = tmp_path / "uninterrupted"
    _run(_command(reference, cache))

    run_dir = tmp_path / "interrupted"
    marker = tmp_path / "paused"
    pause = [
        f"+callbacks.pause._target_={__name__}.PauseAtStep",
        "+callbacks.pause.step=7",
        f"+callbacks.pause.marker={marker}",
    ]
    log = tmp_path / "interrupted.log"  # a file, not a pipe: a full pipe would block the run
    with log.open("w") as out:
        process = subprocess.Popen(
            _command(run_dir, cache, *pause), cwd=REPO, env=_env(), stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the run never reached step 7"
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    interrupted = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert interrupted["global_step"] == 6 and interrupted["epoch"] == 1
    assert not (run_dir / "metrics.json").exists()

    _run(_command(run_dir, cache, "ckpt_path=last"))

    (resumed, resumed_metrics), (full, full_metrics) = _final(run_dir), _final(reference)
    assert resumed["global_step"] == full["global_step"] == 10
    assert resumed["state_dict"].keys() == full["state_dict"].keys()
    for name, tensor in full["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
    for a, b in zip(
        resumed["optimizer_states"][0]["state"].values(),
        full["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        assert all(torch.equal(a[k], b[k]) for k in b), "optimiser state differs"
    assert resumed_metrics["val/ndcg@10"] == full_metrics["val/ndcg@10"]
    assert resumed_metrics["test"] == full_metrics["test"]


def test_default_callbacks_save_last_every_epoch_and_every_n_steps(tmp_path: Path) -> None:
    """``conf/callbacks/default.yaml``: best on the monitor, and ``last.ckpt`` refreshed by two
    monitor-free checkpoints (every epoch; every ``every_n_train_steps``) that overwrite it."""
    callbacks = OmegaConf.load(CONF_DIR / "callbacks" / "default.yaml")
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, "monitor": "m"})
    cfg.monitor_mode = "max"
    cfg.callbacks = callbacks
    built = {k: instantiate(v) for k, v in cfg.callbacks.items() if v and "_target_" in v}
    best, last, step = built["model_checkpoint"], built["last_checkpoint"], built["step_checkpoint"]
    assert (best.monitor, best.save_top_k, best.save_last) == ("m", 1, False)
    for checkpoint in (last, step):
        assert checkpoint.monitor is None and checkpoint.save_top_k == 1
        assert checkpoint.dirpath == best.dirpath == str(tmp_path / "checkpoints")
        assert checkpoint.filename == "last" and not checkpoint._enable_version_counter
    assert last.every_n_epochs == 1 and step._every_n_train_steps > 0
    assert isinstance(built["resume"], ResumeDataOrder)
