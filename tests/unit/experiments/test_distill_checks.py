"""distill(cfg) refuses settings it would silently overwrite, before any data or training."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_modules.errors import ConfigError
from experiments.workflows.distill import distill
from tests.conftest import REPO, compose_config

TEACHER = REPO / "tests" / "data" / "checkpoints" / "cross_encoder.ckpt"


def test_query_region_prefix_is_not_a_setting(tmp_path: Path) -> None:
    cfg = compose_config(
        "distill",
        [f"teacher_ckpt={TEACHER}", "+student.bi_encoder.query_region_prefix=false", "logger=none"],
        tmp_path,
    )
    with pytest.raises(ConfigError, match=r"student\.bi_encoder\.query_region_prefix"):
        distill(cfg)
    assert not (tmp_path / "out" / "config.yaml").exists()
