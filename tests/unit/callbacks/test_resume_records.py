"""A resumed run's best-checkpoint record never names a deleted file."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks.resume import _drop_missing


def _record(tmp_path, mode: str, scores: dict[str, float], best: str) -> ModelCheckpoint:
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val/ndcg@10", mode=mode)
    callback.best_k_models = {str(tmp_path / n): torch.tensor(v) for n, v in scores.items()}
    callback.best_model_path = str(tmp_path / best)
    callback.best_model_score = torch.tensor(scores[best])
    return callback


def test_a_deleted_best_gives_way_to_the_best_file_left(tmp_path) -> None:
    for name in ("a.ckpt", "c.ckpt"):
        (tmp_path / name).write_bytes(b"x")
    callback = _record(tmp_path, "max", {"a.ckpt": 0.5, "b.ckpt": 0.7, "c.ckpt": 0.6}, "b.ckpt")
    with pytest.warns(UserWarning, match="b.ckpt"):
        _drop_missing(callback)
    assert callback.best_model_path == str(tmp_path / "c.ckpt")
    assert float(callback.best_model_score) == pytest.approx(0.6)
    assert callback.kth_best_model_path == str(tmp_path / "a.ckpt")
    assert set(callback.best_k_models) == {str(tmp_path / "a.ckpt"), str(tmp_path / "c.ckpt")}


def test_with_no_file_left_the_next_validation_becomes_the_best(tmp_path) -> None:
    callback = _record(tmp_path, "max", {"epoch00.ckpt": 0.58}, "epoch00.ckpt")
    with pytest.warns(UserWarning, match="next validation"):
        _drop_missing(callback)
    assert callback.best_model_path == "" and callback.best_model_score is None
    assert callback.best_k_models == {}
    # Any score now counts as an improvement (mode max: the k-th value is -inf).
    assert math.isinf(float(callback.kth_value)) and float(callback.kth_value) < 0


def test_a_record_whose_files_exist_is_left_alone(tmp_path, recwarn) -> None:
    (tmp_path / "a.ckpt").write_bytes(b"x")
    callback = _record(tmp_path, "min", {"a.ckpt": 0.3}, "a.ckpt")
    _drop_missing(callback)
    assert callback.best_model_path == str(tmp_path / "a.ckpt") and not recwarn.list
