"""TREC run and qrels files (ranking/serving/trec.py): format, ids with spaces, grades,
cross-check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from data_modules.errors import ConfigError
from ranking.metrics import METRICS
from ranking.serving.trec import TrecIds, cross_check, grades_of, write_trec_files

ir_measures = pytest.importorskip("ir_measures")


def _frame() -> pl.DataFrame:
    # Home Depot style: the query text is the query id; CrowdFlower style: the title is the id.
    return pl.DataFrame(
        {
            "query_id": ["red shoes"] * 3 + ["blue hat"] * 3 + ["no positive"] * 2,
            "product_id": ["Shoe A", "shoe-b", "Shoe C", "hat 1", "hat-2", "hat 3", "x", "y"],
            "score_relevance": [0.1, 0.9, 0.5, 2.0, -1.0, 0.5, 0.3, 0.2],
            "score_click": [0.3, 0.2, 0.1, 0.0, 1.0, 2.0, 0.3, 0.2],
            "label_relevance": [3.0, 1.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0],
            "label_click": [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        }
    )


def _lines(path: str | Path) -> list[list[str]]:
    return [line.split(" ") for line in Path(path).read_text().splitlines()]


def test_ids_with_spaces_are_numbered_and_mapped_back(tmp_path) -> None:
    files = write_trec_files(tmp_path, _frame(), ["relevance", "click"], ["relevance", "click"])
    run = _lines(files["runs"]["relevance"])
    assert all(len(fields) == 6 for fields in run) and len(run) == 8
    qids = pl.read_csv(tmp_path / "qids.tsv", separator="\t")
    docids = pl.read_csv(tmp_path / "docids.tsv", separator="\t")
    assert dict(zip(qids["query_id"], qids["qid"], strict=True)) == {
        "blue hat": "q1",
        "no positive": "q2",
        "red shoes": "q3",
    }
    doc_of = dict(zip(docids["docid"], docids["product_id"], strict=True))
    # red shoes (q3), best first by score: shoe-b 0.9, Shoe C 0.5, Shoe A 0.1.
    q3 = [(f[2], int(f[3]), float(f[4])) for f in run if f[0] == "q3"]
    assert [doc_of[d] for d, _, _ in q3] == ["shoe-b", "Shoe C", "Shoe A"]
    assert [r for _, r, _ in q3] == [1, 2, 3]
    # Qrels: only queries with a positive label for the task; the same ids as the run.
    qrels = _lines(files["qrels"]["relevance"])
    assert {f[0] for f in qrels} == {"q1", "q3"}
    assert {(doc_of[f[2]], int(f[3])) for f in qrels if f[0] == "q3"} == {
        ("Shoe A", 3),
        ("shoe-b", 1),
        ("Shoe C", 0),
    }
    assert {f[1] for f in qrels} == {"0"}
    assert sorted(Path(p).name for p in files["id_maps"]) == ["docids.tsv", "qids.tsv"]


def test_plain_ids_are_written_as_they_are_and_ties_follow_trec_eval(tmp_path) -> None:
    frame = pl.DataFrame(
        {
            "query_id": ["00001", "00001", "00001"],
            "product_id": ["a", "c", "b"],
            "score_x": [1.0, 1.0, 2.0],
        }
    )
    files = write_trec_files(tmp_path, frame, ["x"], run_name="mine")
    assert Path(files["runs"]["x"]).read_text() == (
        "00001 Q0 b 1 2 mine\n00001 Q0 c 2 1 mine\n00001 Q0 a 3 1 mine\n"
    )
    assert files["id_maps"] == [] and not (tmp_path / "qids.tsv").exists()
    assert TrecIds.for_ids(["a b"], ["c"]).products is None


def test_run_name_must_be_one_word(tmp_path) -> None:
    with pytest.raises(ConfigError, match="run_name must be one word"):
        write_trec_files(tmp_path, _frame(), ["click"], run_name="my run")


def test_grades_integers_as_is_and_fractions_as_levels() -> None:
    integral = grades_of(np.array([0.0, 3.0, 1.0]))
    assert integral.grades.tolist() == [0, 3, 1] and integral.levels is None
    assert integral.gains == {0: 0.0, 1: 1.0, 3: 7.0}
    mean_ratings = grades_of(np.array([2.33, 1.0, 2.67, 1.0, 0.0]))
    assert mean_ratings.grades.tolist() == [2, 1, 3, 1, 0]
    assert mean_ratings.levels == {0: 0.0, 1: 1.0, 2: 2.33, 3: 2.67}
    assert mean_ratings.gains[2] == pytest.approx(2**2.33 - 1)


def _ours(frame: pl.DataFrame, task: str, spec: str) -> float:
    """Our metric, mean over the queries with a positive label (as the aggregates)."""
    name, _, k = spec.partition("@")
    values = []
    for _, group in frame.group_by("query_id", maintain_order=True):
        labels = torch.tensor(group[f"label_{task}"].to_numpy())
        if not (labels > 0).any():
            continue
        scores = torch.tensor(group[f"score_{task}"].to_numpy())
        mask = torch.ones_like(labels, dtype=torch.bool)
        fn = METRICS[name]
        values.append(float(fn(scores[None], labels[None], mask[None], k=int(k) if k else None)))
    return sum(values) / len(values)


@pytest.mark.parametrize("fractional", [False, True])
def test_cross_check_reproduces_our_metrics_on_graded_labels(tmp_path, fractional) -> None:
    frame = _frame()
    if fractional:  # mean ratings: written as levels, gains keep 2^label - 1
        frame = frame.with_columns(pl.col("label_relevance") * 0.77)
    tasks = ["relevance", "click"]
    specs = ["ndcg@10", "ndcg@2", "mrr@10", "map", "precision@2", "recall@2"]
    files = write_trec_files(tmp_path, frame, tasks, tasks)
    ours = {f"test/{t}/{s}": _ours(frame, t, s) for t in tasks for s in specs}
    result = cross_check(files, specs, ours)
    assert result["agrees"], result
    # Integer grades: exact; fractional ones: gains rounded for trec_eval (1e-4 allowed).
    assert result["tolerance"] == (1e-4 if fractional else 1e-6)
    assert result["values"]["relevance"]["ndcg@10"]["ir_measures"] == pytest.approx(
        ours["test/relevance/ndcg@10"], abs=1e-5 if fractional else 1e-12
    )
    # trec_eval's own linear-gain NDCG differs on graded labels: the gains matter.
    qrels = list(ir_measures.read_trec_qrels(files["qrels"]["relevance"]))
    run = list(ir_measures.read_trec_run(files["runs"]["relevance"]))
    linear = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)[ir_measures.nDCG @ 10]
    assert abs(linear - ours["test/relevance/ndcg@10"]) > 1e-3
