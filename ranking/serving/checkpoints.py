"""Checkpoint files read without running code from them, and written without half files.

* :func:`read_checkpoint` opens a user-supplied ``.ckpt`` with ``torch.load(weights_only=True)``:
  tensors and plain containers (dict, list, tuple, str, numbers) only. A file whose pickle names
  any other Python object (a payload that would run code, or a pickled ``nn.Module``) is refused
  before anything in it runs; a missing, empty, truncated or foreign file is one
  :class:`~data_modules.errors.ConfigError` line naming the config key and the file.
* :func:`checkpoint_kind` says which shoprank model a checkpoint holds;
  :func:`load_checkpoint` rebuilds it (no Hydra), :func:`file_sha256` names a
  checkpoint by its bytes (the teacher-score and product-vector caches' key).
* :class:`AtomicCheckpointIO` is the Trainer's checkpoint plugin: it writes each checkpoint to a
  temporary file *in the target directory*, flushes it to disk and ``os.replace``\\ s it over the
  target, so ``last.ckpt`` is always either the previous or the new complete file. Lightning's own
  ``_atomic_save`` stages local files through ``$TMPDIR`` (fsspec's transaction calls
  ``tempfile.mkstemp()`` without a directory, Lightning issue #21253): across filesystems (tmpfs
  ``/tmp``, NFS, Lustre) its final move is a copy onto the target, and a kill during that copy
  leaves a truncated ``last.ckpt``. Its ``load_checkpoint`` (resuming, ``trainer.test(ckpt_path=)``)
  always passes ``weights_only=True``, whatever the environment says.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from data_modules.errors import ConfigError
from ranking.modules.bi_encoder import BiEncoderModule, is_bi_encoder_hparams
from ranking.modules.cross_encoder import RankingModule

KINDS = ("cross_encoder", "bi_encoder")
# Prefix and suffix of the temporary file a save writes beside its target (never *.ckpt, so no
# checkpoint lookup can take a half-written one for a checkpoint).
_TEMP_PREFIX = "."
_TEMP_SUFFIX = ".saving"
_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _first_line(err: BaseException) -> str:
    """The first sentence of an error message (torch's run on for several lines)."""
    text = str(err).strip()
    return text.splitlines()[0].split(". ")[0][:160] if text else ""


def read_checkpoint(path: str | Path, key: str = "ckpt_path", mmap: bool = True) -> dict[str, Any]:
    """The content of a checkpoint file, loaded safely (``weights_only=True``).

    Args:
        path: The file.
        key: Config key quoted in errors (``ckpt_path``, ``teacher_ckpt``, ``--student``).
        mmap: Memory-map zip checkpoints (what ``torch.save`` and Lightning write), so checking
            a large file before any work costs little memory; ``False`` reads it as Lightning
            does (for training state that is then updated in place).

    Returns:
        The loaded dict.

    Raises:
        ConfigError: The file is missing or empty, is not a complete PyTorch checkpoint, or
            pickles Python objects beyond tensors and plain containers (refused unread).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}: checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise ConfigError(f"{key}: checkpoint {path} is empty (0 bytes); an interrupted copy?")
    is_zip = zipfile.is_zipfile(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except Exception as err:  # any failure to parse a user's file is one line
        found = _UNSUPPORTED.search(str(err))
        if isinstance(err, pickle.UnpicklingError) and found:
            raise ConfigError(
                f"{key}: refused {path}: it pickles the Python object {found.group(1)}, not only "
                "tensors and plain containers, and loading it could run code; shoprank loads "
                "checkpoints with weights_only=True only"
            ) from None
        raise ConfigError(
            f"{key}: {path} is not a PyTorch checkpoint (truncated, corrupted or another kind of "
            f"file: {type(err).__name__}: {_first_line(err)})"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{key}: {path} holds a {type(raw).__name__}, not a checkpoint dict; pass a "
            "checkpoint written by experiments.train or experiments.distill"
        )
    return raw


def checkpoint_kind(raw: dict[str, Any], path: str | Path, key: str = "ckpt_path") -> str:
    """``"cross_encoder"`` or ``"bi_encoder"``: which shoprank model a loaded checkpoint holds.

    Raises:
        ConfigError: It holds no shoprank model (no ``state_dict`` or model hyper-parameters).
    """
    hparams = raw.get("hyper_parameters")
    if not isinstance(hparams, dict) or "state_dict" not in raw or "tasks" not in hparams:
        raise ConfigError(
            f"{key}: {path} is not a shoprank model checkpoint (no state_dict or model "
            "hyper-parameters); pass a checkpoint written by experiments.train or "
            "experiments.distill"
        )
    return "bi_encoder" if is_bi_encoder_hparams(hparams) else "cross_encoder"


def check_checkpoint(
    path: str | Path, key: str = "ckpt_path", expect: str | None = None
) -> dict[str, Any]:
    """:func:`read_checkpoint` + :func:`checkpoint_kind`; refuses the other kind than ``expect``.

    Returns:
        The loaded checkpoint.
    """
    raw = read_checkpoint(path, key)
    kind = checkpoint_kind(raw, path, key)
    if expect is not None and kind != expect:
        raise ConfigError(f"{key}: {path} holds a {kind} model; a {expect} is needed here")
    return raw


# ---------------------------------------------------------------------------------- writing
def load_checkpoint(
    path: str | Path, key: str = "ckpt_path", expect: str | None = None
) -> RankingModule | BiEncoderModule:
    """Rebuild a model from a checkpoint's hyper-parameters and weights (no Hydra), in eval mode.

    Args:
        path: The ``.ckpt`` file.
        key: Config key quoted in errors (``ckpt_path``, ``teacher_ckpt``).
        expect: ``cross_encoder`` or ``bi_encoder`` to refuse the other kind.

    Raises:
        ConfigError: Missing or unreadable file, or not the expected kind.
    """
    kind = checkpoint_kind(check_checkpoint(path, key, expect), path, key)
    cls = BiEncoderModule if kind == "bi_encoder" else RankingModule
    return cls.load_from_checkpoint(
        str(Path(path).expanduser()), map_location="cpu", weights_only=True
    ).eval()


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes (a checkpoint's identity, whatever its name)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_local(path: str | Path) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def _file_mode() -> int:
    """The mode ``open()`` would give a new file: 0666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Write a file atomically: ``write(file)`` into a temporary file beside ``path``, then rename.

    The temporary file is ``.<name>.<random>.saving`` in the target's own directory (the same
    filesystem, so ``os.replace`` is an atomic rename, never a copy); it is flushed and fsynced
    before the rename, and the directory is fsynced after it, so after a crash or a kill at any
    moment ``path`` is the previous complete file or the new one. Left-over temporary files of
    earlier killed saves of the same target are removed first.

    Args:
        path: The target file (a local path).
        write: Called with the open binary file.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{_TEMP_PREFIX}{path.name}.*{_TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            stale.unlink()
    fd, temp = tempfile.mkstemp(
        prefix=f"{_TEMP_PREFIX}{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent
    )
    try:
        os.fchmod(fd, _file_mode())  # mkstemp's 0600 would make the checkpoint private
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic saves beside the target, loads with ``weights_only=True``.

    Local paths are written with :func:`atomic_write`; remote ones (``s3://``...) go through
    Lightning's own saving.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        local = str(path).removeprefix("file://")
        atomic_write(local, lambda handle: torch.save(checkpoint, handle))

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Any | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if not get_filesystem(path).exists(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        if _is_local(path):
            return read_checkpoint(str(path).removeprefix("file://"), "ckpt_path", mmap=False)
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)
