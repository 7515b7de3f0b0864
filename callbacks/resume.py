"""Resuming an interrupted run: its data order and random streams exactly, no missing checkpoint.

Finding the last checkpoint and checking the resumed config are the workflows' job
(:mod:`experiments.workflows.resume`). Here: Lightning fast-forwards only DataLoaders that
implement ``state_dict``; a plain DataLoader restarts its epoch from the first batch, so a run
resumed mid-epoch would train on the epoch's first batches twice and never on its last ones.
:class:`ResumeDataOrder` tells the :class:`~data_modules.listwise.EpochSampler` which epoch it
is in and how many of its items the checkpoint had already trained on.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from data_modules.listwise import EpochSampler

# Lightning's warning for a mid-epoch resume with a DataLoader without ``state_dict``: it does
# not apply once every training sampler has been positioned by ResumeDataOrder.
_NOT_RESUMABLE_WARNING = r"You're resuming from a checkpoint that ended before the epoch ended"


def _loaders(iterables: Any) -> Iterable[Any]:
    """The DataLoaders inside ``trainer.train_dataloader`` (one loader, or a collection)."""
    if isinstance(iterables, Mapping):
        for value in iterables.values():
            yield from _loaders(value)
    elif isinstance(iterables, Sequence) and not isinstance(iterables, str):
        for value in iterables:
            yield from _loaders(value)
    elif iterables is not None:
        yield iterables


class ResumeDataOrder(Callback):
    """On a resumed fit, continue each training :class:`EpochSampler` where the checkpoint was.

    Lightning restores the loops' progress before ``on_train_start``: the epoch that
    ``set_epoch`` will receive (``fit_loop.epoch_progress.current.processed``) and the batches of
    that epoch whose training step ran before the checkpoint was written
    (``epoch_loop.batch_progress.current.processed``: ``n`` for a checkpoint saved in
    ``on_train_batch_end`` of batch ``n - 1`` or after a mid-epoch validation, the whole epoch
    for one saved at its end, which Lightning then counts as finished). Each sampler then skips
    ``n * batch_size`` items of its shard of that epoch, the batches already trained on.

    The DataLoader iterator already exists at ``on_train_start``; without worker processes it
    has not asked the sampler for anything yet (``BatchSampler`` iterates lazily). With
    ``num_workers > 0`` it has prefetched indices from a sampler still at epoch 0, so the
    iterator is created again (through the fit loop's data fetcher, not a public API; a warning
    says so if that ever changes).
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None:
            return
        fit_loop = trainer.fit_loop
        epoch = int(fit_loop.epoch_progress.current.processed)
        done = int(fit_loop.epoch_loop.batch_progress.current.processed)
        if done >= trainer.num_training_batches:
            done = 0  # the checkpoint closed its epoch; Lightning starts the next one
        loaders = list(_loaders(trainer.train_dataloader))
        positioned = [
            loader
            for loader in loaders
            if isinstance(loader, DataLoader) and isinstance(loader.sampler, EpochSampler)
        ]
        for loader in positioned:
            loader.sampler.load_state_dict(
                {"epoch": epoch, "start": done * int(loader.batch_size or 1)}
            )
        if done and len(positioned) == len(loaders):
            warnings.filterwarnings("ignore", message=_NOT_RESUMABLE_WARNING)
            rank_zero_info(f"Resuming epoch {epoch} at batch {done}: its first batches are skipped")
        elif done:
            rank_zero_warn(
                "ResumeDataOrder: a training DataLoader has no EpochSampler; it restarts its "
                f"epoch from the first batch (resuming at batch {done} of epoch {epoch})"
            )
        if any(loader.num_workers > 0 for loader in positioned):
            self._restart_iterator(trainer)

    @staticmethod
    def _restart_iterator(trainer: L.Trainer) -> None:
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if fetcher is None or not hasattr(fetcher, "combined_loader"):
            rank_zero_warn(
                "ResumeDataOrder: cannot restart the training iterator in this Lightning "
                "version; with num_workers > 0 the resumed epoch's data order may differ"
            )
            return
        iter(fetcher)  # a fresh DataLoader iterator, which asks the sampler again


class ResumeCheckpointRecords(Callback):
    """On a resumed fit, forget best-checkpoint records whose files are gone.

    ``last.ckpt`` carries each monitored :class:`~lightning.pytorch.callbacks.ModelCheckpoint`'s
    record (``best_model_path``, ``best_k_models``). At the end of an epoch the monitored callback
    writes the new best and deletes the one it replaces *before* the last-checkpoint callback
    rewrites ``last.ckpt``; a run killed between the two resumes with a record naming a deleted
    file. If no later epoch beat that score, the run would end by testing a checkpoint that does
    not exist. Here the missing entries leave the record: the best remaining entry becomes the
    best, or, with none left, the record starts empty so the next validation's checkpoint is
    saved as the best. The killed attempt's own new best stays on disk, outside the record (its
    training is not the resumed run's), and a warning names both files.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None:
            return
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.monitor is not None:
                _drop_missing(callback)


def _drop_missing(callback: ModelCheckpoint) -> None:
    records = callback.best_k_models
    gone = [path for path in records if not Path(path).is_file()]
    if callback.best_model_path and not Path(callback.best_model_path).is_file():
        gone = sorted({*gone, callback.best_model_path})
    if not gone:
        return
    for path in gone:
        records.pop(path, None)
    higher_is_better = callback.mode == "max"
    if records:
        ranked = sorted(records, key=lambda p: float(records[p]), reverse=higher_is_better)
        callback.best_model_path, callback.best_model_score = ranked[0], records[ranked[0]]
        callback.kth_best_model_path, callback.kth_value = ranked[-1], records[ranked[-1]]
    else:
        callback.best_model_path, callback.best_model_score = "", None
        callback.kth_best_model_path = ""
        callback.kth_value = torch.tensor(-torch.inf if higher_is_better else torch.inf)
    rank_zero_warn(
        f"resume: the checkpoint record of '{callback.monitor}' named {gone}, which no longer "
        "exist (the run was stopped between saving a new best and rewriting last.ckpt); "
        + (
            f"the best is now {callback.best_model_path}"
            if records
            else "the next validation's checkpoint becomes the best"
        )
    )


class ResumeRandomState(Callback):
    """Save the global random states in every checkpoint and restore them on resume.

    Lightning does not checkpoint torch's, NumPy's or Python's global generators, so a resumed
    run draws other dropout masks than the run never stopped. Here :meth:`state_dict` (called as
    a checkpoint is written) records them and :meth:`load_state_dict` sets them back when the
    checkpoint is restored. Nothing else between the restore and the next training step draws
    from them: the DataLoaders seed their iterators from their own generator and the samplers
    from ``(seed, epoch)`` (:mod:`data_modules`), and validation runs without dropout. The CUDA
    generators are restored when the checkpoint has as many as this machine.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, python_state, python_gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            },
            "python": {"version": version, "state": list(python_state), "gauss": python_gauss},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        cuda = list(state_dict.get("cuda") or [])
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        saved = state_dict["numpy"]
        np.random.set_state(
            (
                saved["kind"],
                saved["keys"].numpy().astype(np.uint32),
                saved["pos"],
                saved["has_gauss"],
                saved["gauss"],
            )
        )
        python = state_dict["python"]
        random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
