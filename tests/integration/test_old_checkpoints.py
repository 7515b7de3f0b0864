"""Checkpoints written before the restructuring of issue 16 still load and score identically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ranking import Ranker
from ranking.serving.api import TextOptions

DIR = Path(__file__).resolve().parents[1] / "data" / "checkpoints"
EXPECTED = json.loads((DIR / "expected_scores.json").read_text())


@pytest.mark.parametrize("kind", ["cross_encoder", "bi_encoder"])
def test_checkpoint_written_before_the_move_loads_and_scores_identically(kind: str) -> None:
    ranker = Ranker.from_checkpoint(DIR / f"{kind}.ckpt", device="cpu", text=TextOptions())
    expected = EXPECTED[kind]
    assert ranker.kind == kind
    assert ranker.tasks == expected["tasks"] and ranker.regions == expected["regions"]
    scores = ranker.score(EXPECTED["query"], EXPECTED["products"], region=expected["region"])
    assert set(scores) == set(expected["scores"])
    for task, values in expected["scores"].items():
        np.testing.assert_allclose(scores[task], values, rtol=0, atol=1e-6)
