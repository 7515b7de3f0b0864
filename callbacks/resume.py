"""Resuming an interrupted run: find its last checkpoint, and continue its data order exactly.

``python -m experiments.train hydra.run.dir=<run dir> ckpt_path=last`` restores the model,
optimiser, scheduler, loop progress and callback states from ``<run dir>/checkpoints/last.ckpt``
(Lightning). Three gaps remain, closed here:

* ``ckpt_path=last`` with no checkpoint makes Lightning warn and silently train from scratch;
  :func:`resolve_ckpt_path` turns that into one :class:`~ranking.errors.ConfigError` naming the
  directory.
* A resume composes its config from the command line again, not from the interrupted run:
  forgetting one of the run's overrides would continue it with another loss or learning rate.
  :func:`check_resume_config` compares with the run's saved ``config.yaml`` first
  (:func:`prepare_resume` does both).
* Lightning fast-forwards only DataLoaders that implement ``state_dict``; a plain DataLoader
  restarts its epoch from the first batch, so a run resumed mid-epoch would train on the
  epoch's first batches twice and never on its last ones. :class:`ResumeDataOrder` tells the
  :class:`~data_modules.listwise.EpochSampler` which epoch it is in and how many of its items
  the checkpoint had already trained on.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from data_modules.listwise import EpochSampler
from ranking.errors import ConfigError

# Lightning's warning for a mid-epoch resume with a DataLoader without ``state_dict``: it does
# not apply once every training sampler has been positioned by ResumeDataOrder.
_NOT_RESUMABLE_WARNING = r"You're resuming from a checkpoint that ended before the epoch ended"

# Config keys (dotted prefixes) a resumed run may change: where it writes and what it reports,
# and how long it trains. Anything else (model, data, loss, optimiser, seed, devices) must match.
RESUME_MAY_CHANGE = (
    "ckpt_path",
    "paths.",
    "hydra.",
    "callbacks.",
    "logger.",
    "trainer.default_root_dir",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "test_after_fit",
    "baselines",
    "report.",
    "data.num_workers",
)


def last_checkpoints(directory: str | Path) -> list[Path]:
    """``last.ckpt`` and its versioned siblings (``last-v1.ckpt``) in ``directory``, newest first.

    The same files Lightning's ``ckpt_path="last"`` considers (``ModelCheckpoint`` names them
    ``last`` plus an optional suffix), ordered the way it picks one: by modification time.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.glob("last*.ckpt") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def resolve_ckpt_path(
    ckpt_path: str | None, checkpoint_dir: str | Path, trainer: pl.Trainer | None = None
) -> str | None:
    """The checkpoint ``trainer.fit`` should resume from, or one clear error.

    Cheap enough to call before any data is loaded, so a wrong ``ckpt_path`` stops a run at once.

    Args:
        ckpt_path: The config's ``ckpt_path``: ``None`` (train from scratch), ``"last"`` (the
            newest ``last*.ckpt``, as Lightning picks it), or a checkpoint file.
        checkpoint_dir: Where the run's checkpoints are (``${paths.output_dir}/checkpoints``).
        trainer: If given, the directories of its ``ModelCheckpoint`` callbacks are searched too.

    Returns:
        ``None``, or the path of an existing checkpoint file (``"last"`` is resolved here, so the
        result does not depend on which checkpoint callbacks are configured).

    Raises:
        ConfigError: ``"last"`` with no last checkpoint in those directories (naming them), or a
            path that is not a file.
    """
    if ckpt_path is None or str(ckpt_path) in ("", "null", "None"):
        return None
    ckpt_path = str(ckpt_path)
    if ckpt_path != "last":
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"ckpt_path: checkpoint {ckpt_path} does not exist")
        return str(path)
    dirs = [Path(checkpoint_dir)]
    if trainer is not None:
        dirs += [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if _has_dirpath(cb)]
    dirs = list(dict.fromkeys(dirs))  # in order, without repeats
    found = sorted(
        (p for d in dirs for p in last_checkpoints(d)),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    if not found:
        where = ", ".join(str(d) for d in dirs)
        raise ConfigError(
            f"ckpt_path=last: no last*.ckpt in {where}; to resume a run, pass its directory: "
            "hydra.run.dir=<run dir> ckpt_path=last"
        )
    return str(found[0])


def _flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


def _may_change(key: str) -> bool:
    return any(key == p.rstrip(".") or key.startswith(p) for p in RESUME_MAY_CHANGE)


def check_resume_config(saved_config: str | Path, config: Mapping[str, Any]) -> None:
    """Stop a resume whose config differs from the interrupted run's in what it trains.

    Args:
        saved_config: The run's resolved ``config.yaml`` (written when it started).
        config: The resuming run's resolved config (a plain dict).

    Raises:
        ConfigError: Naming up to 8 differing keys with both values (keys under
            :data:`RESUME_MAY_CHANGE` are ignored) and what to do about it.
    """
    saved_config = Path(saved_config)
    if not saved_config.is_file():
        return  # a run directory from before config.yaml existed: nothing to compare
    before = dict(_flatten(yaml.safe_load(saved_config.read_text()) or {}))
    now = dict(_flatten(config))
    missing = object()
    changed = [
        f"{key}: {before.get(key, '<absent>')!r} -> {now.get(key, '<absent>')!r}"
        for key in sorted(before.keys() | now.keys())
        if not _may_change(key) and before.get(key, missing) != now.get(key, missing)
    ]
    if changed:
        more = f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
        raise ConfigError(
            f"ckpt_path=last: the config differs from the run's {saved_config}: "
            f"{'; '.join(changed[:8])}{more}. Resume with the run's own overrides, or start a "
            "new run from the checkpoint with ckpt_path=<file>"
        )


def prepare_resume(
    ckpt_path: str | None, output_dir: str | Path, config: Mapping[str, Any]
) -> str | None:
    """:func:`resolve_ckpt_path` in ``<output_dir>/checkpoints``; for ``ckpt_path=last`` also
    :func:`check_resume_config` against ``<output_dir>/config.yaml``.

    Call it before the run writes its own ``config.yaml`` (which replaces the saved one).
    """
    resolved = resolve_ckpt_path(ckpt_path, Path(output_dir) / "checkpoints")
    if resolved is not None and str(ckpt_path) == "last":
        check_resume_config(Path(output_dir) / "config.yaml", config)
    return resolved


def _has_dirpath(callback: object) -> bool:
    return isinstance(callback, ModelCheckpoint) and callback.dirpath is not None


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

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
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
    def _restart_iterator(trainer: pl.Trainer) -> None:
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if fetcher is None or not hasattr(fetcher, "combined_loader"):
            rank_zero_warn(
                "ResumeDataOrder: cannot restart the training iterator in this Lightning "
                "version; with num_workers > 0 the resumed epoch's data order may differ"
            )
            return
        iter(fetcher)  # a fresh DataLoader iterator, which asks the sampler again
