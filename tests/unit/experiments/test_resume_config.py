"""A resume compares the run's saved config; a class that only moved module still matches."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from data_modules.errors import ConfigError
from experiments.workflows.resume import check_resume_config


def _saved(tmp_path: Path, target: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": {"_target_": target, "lr": 0.1}}))
    return path


def test_a_run_saved_before_the_module_moved_still_resumes(tmp_path: Path) -> None:
    saved = _saved(tmp_path, "ranking.module.RankingModule")
    now = {"model": {"_target_": "ranking.modules.cross_encoder.RankingModule", "lr": 0.1}}
    check_resume_config(saved, now)  # no error


@pytest.mark.parametrize(
    "now",
    [
        {"model": {"_target_": "ranking.modules.bi_encoder.BiEncoderModule", "lr": 0.1}},
        {"model": {"_target_": "ranking.modules.cross_encoder.RankingModule", "lr": 0.2}},
    ],
)
def test_another_class_or_value_is_refused(tmp_path: Path, now: dict) -> None:
    saved = _saved(tmp_path, "ranking.module.RankingModule")
    with pytest.raises(ConfigError, match=r"model\."):
        check_resume_config(saved, now)
