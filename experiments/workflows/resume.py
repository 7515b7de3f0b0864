"""Resuming an interrupted run: find its last checkpoint and check its config first.

``python -m experiments.train hydra.run.dir=<run dir> ckpt_path=last`` restores the model,
optimiser, scheduler, loop progress and callback states from ``<run dir>/checkpoints/last.ckpt``
(Lightning). Two gaps are closed here, before any data is loaded (the third, the data order of a
run resumed mid-epoch, is :class:`callbacks.resume.ResumeDataOrder`'s):

* ``ckpt_path=last`` with no checkpoint makes Lightning warn and silently train from scratch;
  :func:`resolve_ckpt_path` turns that into one :class:`~data_modules.errors.ConfigError` naming the
  directory.
* A resume composes its config from the command line again, not from the interrupted run:
  forgetting one of the run's overrides would continue it with another loss or learning rate.
  :func:`check_resume_config` compares with the run's saved ``config.yaml`` first
  (:func:`prepare_resume` does both).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from data_modules.errors import ConfigError

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
    ckpt_path: str | None, checkpoint_dir: str | Path, trainer: L.Trainer | None = None
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


def _same(key: str, before: Any, now: Any) -> bool:
    """Equal values; a ``_target_`` class that only moved to another module counts as equal.

    Runs started before the restructuring of issue 16 saved e.g.
    ``model._target_: ranking.module.RankingModule``, now
    ``ranking.modules.cross_encoder.RankingModule``: the same class, so they still resume.
    """
    if before == now:
        return True
    return (
        key.rsplit(".", 1)[-1] == "_target_"
        and isinstance(before, str)
        and isinstance(now, str)
        and before.rsplit(".", 1)[-1] == now.rsplit(".", 1)[-1]
    )


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
        if not _may_change(key) and not _same(key, before.get(key, missing), now.get(key, missing))
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
