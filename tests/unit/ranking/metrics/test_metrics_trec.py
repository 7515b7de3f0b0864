"""Metrics against trec_eval (pytrec_eval 0.5.11) per query (``trec_eval_metrics.json``).

trec_eval-compatible mode: ``gain="linear"``, ``no_relevant=0``, relevance = grade >= 1 (our
default ``label > 0`` on integer grades). All 60 queries go through one padded batch, so padding
is exercised too. Fails with the reason when the reference file is absent.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ranking.metrics import average_precision, mrr, ndcg, precision, recall
from tests.conftest import load_reference, reference_dir

REFERENCE_FILE = "trec_eval_metrics.json"


DATA = load_reference(REFERENCE_FILE)
SKIP_REASON = (
    f"trec_eval reference {reference_dir() / REFERENCE_FILE} not found "
    "(set SHOPRANK_REFERENCE_DIR to the folder holding it)"
)

TREC_MEASURES = {
    "ndcg": lambda s, y, m: ndcg(s, y, m, gain="linear"),
    "ndcg_cut_1": lambda s, y, m: ndcg(s, y, m, k=1, gain="linear"),
    "ndcg_cut_3": lambda s, y, m: ndcg(s, y, m, k=3, gain="linear"),
    "ndcg_cut_5": lambda s, y, m: ndcg(s, y, m, k=5, gain="linear"),
    "ndcg_cut_10": lambda s, y, m: ndcg(s, y, m, k=10, gain="linear"),
    "recip_rank": lambda s, y, m: mrr(s, y, m),
    "map": lambda s, y, m: average_precision(s, y, m),
    "P_5": lambda s, y, m: precision(s, y, m, k=5),
    "P_10": lambda s, y, m: precision(s, y, m, k=10),
    "recall_5": lambda s, y, m: recall(s, y, m, k=5),
    "recall_10": lambda s, y, m: recall(s, y, m, k=10),
}


def _batch(queries: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    size = max(len(q["grades"]) for q in queries)
    scores = torch.zeros(len(queries), size, dtype=torch.float64)
    labels = torch.full((len(queries), size), -1.0, dtype=torch.float64)
    for row, query in enumerate(queries):
        n = len(query["grades"])
        scores[row, :n] = torch.tensor(query["scores"], dtype=torch.float64)
        labels[row, :n] = torch.tensor(query["grades"], dtype=torch.float64)
    # padded scores are deliberately huge: they must not enter any ranking
    scores[labels < 0] = 1e6
    return scores, labels, labels >= 0


@pytest.mark.parametrize("measure", sorted(TREC_MEASURES))
def test_matches_trec_eval_per_query(measure: str) -> None:
    if DATA is None:
        pytest.fail(SKIP_REASON)
    queries = DATA["queries"]
    scores, labels, mask = _batch(queries)
    got = TREC_MEASURES[measure](scores, labels, mask)
    expected = torch.tensor([q["trec_eval"][measure] for q in queries], dtype=torch.float64)
    wrong = [
        (q["qid"], got[i].item(), expected[i].item())
        for i, q in enumerate(queries)
        if abs(got[i].item() - expected[i].item()) > 1e-9
    ]
    assert not wrong, f"{measure}: {len(wrong)} queries differ, first: {wrong[:5]}"


def test_reference_covers_every_measure() -> None:
    if DATA is None:
        pytest.fail(SKIP_REASON)
    assert set(DATA["queries"][0]["trec_eval"]) == set(TREC_MEASURES)
