"""Checkpoints are written atomically beside their target, across filesystems too (issue 15).

Lightning's own atomic save stages a checkpoint in ``$TMPDIR`` and moves it; when the run
directory is on another filesystem the move is a copy onto ``last.ckpt``, and a kill during that
copy leaves a truncated file that no resume can read. :class:`ranking.serving.checkpoints.
AtomicCheckpointIO` writes the temporary file in the target's directory and renames it.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch

from experiments.workflows.train import train
from ranking.serving.checkpoints import AtomicCheckpointIO, atomic_write, read_checkpoint
from tests.cli import run_cli


def _device(path: Path) -> int:
    return os.stat(path).st_dev


@pytest.fixture
def other_mount(tmp_path: Path) -> Iterator[Path]:
    """A directory on another filesystem than ``tempfile.gettempdir()`` (tmpfs /dev/shm)."""
    for root in (Path("/dev/shm"), Path("/run/user") / str(os.getuid())):
        writable = root.is_dir() and os.access(root, os.W_OK)
        if writable and _device(root) != _device(Path(tempfile.gettempdir())):
            folder = root / f"shoprank-test-{uuid.uuid4().hex[:8]}"
            folder.mkdir()
            yield folder
            shutil.rmtree(folder, ignore_errors=True)
            return
    pytest.skip("no writable directory on another filesystem than the temp dir")


# ------------------------------------------------------------------ the write itself
def test_atomic_write_renames_a_temp_file_from_the_target_directory(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((a, b)), real_replace(a, b)))
    target = tmp_path / "checkpoints" / "last.ckpt"
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
    assert [(Path(a).parent, Path(b)) for a, b in renames] == [(target.parent, target)]
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    # Readable by others as any file the process writes (mkstemp alone would give 0600).
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == 0o666 & ~umask


def test_a_save_that_dies_midway_leaves_the_previous_checkpoint_whole(tmp_path) -> None:
    target = tmp_path / "last.ckpt"
    torch.save({"step": 1}, target)
    before = target.read_bytes()

    def half_then_die(handle) -> None:
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # stands for a kill between two writes

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_die)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left
    assert read_checkpoint(target) == {"step": 1}


def test_stale_temp_files_of_a_killed_save_are_removed(tmp_path) -> None:
    stale = tmp_path / ".last.ckpt.abc123.saving"
    stale.write_bytes(b"half")
    atomic_write(tmp_path / "last.ckpt", lambda f: f.write(b"x"))
    assert not stale.exists()


def test_training_on_another_filesystem_stages_nothing_in_tmpdir(
    make_cfg, other_mount, monkeypatch
) -> None:
    """The run directory on tmpfs, ``$TMPDIR`` on disk: every checkpoint file is created in
    the checkpoint directory and renamed there; nothing is created in the temp dir and nothing
    is copied across filesystems."""
    created, copied = [], []
    real_mkstemp, real_copyfile = tempfile.mkstemp, shutil.copyfile

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        created.append(Path(name).parent)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(
        shutil, "copyfile", lambda a, b, **k: (copied.append(b), real_copyfile(a, b, **k))[1]
    )
    cfg = make_cfg("logger=none", "trainer.max_epochs=2", "test_after_fit=false")
    cfg.paths.output_dir = str(other_mount / "run")
    train(cfg)
    checkpoints = other_mount / "run" / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    assert _device(checkpoints) != _device(Path(tempfile.gettempdir()))
    assert created and set(created) == {checkpoints}
    assert not copied
    assert read_checkpoint(checkpoints / "last.ckpt")["epoch"] == 1


def test_the_trainer_uses_the_atomic_plugin(make_cfg) -> None:
    from experiments.workflows.config import build_trainer

    trainer = build_trainer(make_cfg("logger=none"))
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


# ------------------------------------------------------------------ a kill during the save
class KillDuringSave(L.Callback):
    """Kill this process (SIGKILL) in the middle of writing ``last.ckpt`` for the ``n``-th time.

    Both ways a checkpoint reaches ``last.ckpt`` are covered: ``torch.save`` into a real file
    (AtomicCheckpointIO's temp file beside it) and the copy of a cross-filesystem move
    (Lightning's fsspec transaction from ``$TMPDIR``). Half the bytes are written, then the
    process dies as a kill by the scheduler would leave it.
    """

    def __init__(self, n: int = 2) -> None:
        self.n, self.seen = n, 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        real_save, real_copyfile = torch.save, shutil.copyfile
        callback = self

        def armed(name: str) -> bool:
            if "last.ckpt" not in os.path.basename(name):
                return False
            callback.seen += 1
            return callback.seen >= callback.n

        def die_after_half(data: bytes, handle) -> None:
            handle.write(data[: len(data) // 2])
            handle.flush()
            os.fsync(handle.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

        def file_name(f) -> str | None:
            if isinstance(f, str | os.PathLike):
                return str(f)
            try:  # an open file (os.fdopen names it by its descriptor): its path on Linux
                return os.readlink(f"/proc/self/fd/{f.fileno()}")
            except (OSError, AttributeError, io.UnsupportedOperation):
                return None  # an in-memory buffer

        def save(obj, f, *args, **kwargs):
            name = file_name(f)
            if name is not None and armed(name):
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                handle = f if hasattr(f, "write") else open(f, "wb")  # noqa: SIM115
                die_after_half(buffer.getvalue(), handle)
            return real_save(obj, f, *args, **kwargs)

        def copyfile(src, dst, *args, **kwargs):
            if armed(str(dst)):
                with open(dst, "wb") as handle:
                    die_after_half(Path(src).read_bytes(), handle)
            return real_copyfile(src, dst, *args, **kwargs)

        torch.save, shutil.copyfile = save, copyfile


@pytest.mark.slow
def test_a_kill_while_saving_on_another_filesystem_leaves_a_resumable_run(other_mount) -> None:
    run_dir = other_mount / "run"
    args = [
        "experiment=smoke",
        "logger=none",
        "baselines=[random]",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        "trainer.max_epochs=2",
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={other_mount / 'cache'}",
    ]
    kill = [f"+callbacks.kill._target_={__name__}.KillDuringSave", "+callbacks.kill.n=2"]
    killed = run_cli("train", *args, *kill, subprocess=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # The second save of last.ckpt (end of epoch 2) died half-way: the first one is whole.
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 0
    resumed = run_cli("train", *args, "ckpt_path=last", subprocess=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Epoch 2's new best had replaced epoch 1's before the kill, so last.ckpt's record named a
    # deleted file; the resumed run drops it (and its test reads a checkpoint that exists).
    assert "no longer exist" in resumed.stderr + resumed.stdout
    assert (run_dir / "metrics.json").is_file()
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 1
