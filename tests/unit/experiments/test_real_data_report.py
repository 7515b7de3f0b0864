"""Real-data report: model minus each baseline on the same (seed, query) units, per seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from experiments.real_data_report import dataset_table, main, per_seed, summarize

QUERIES = [f"q{i}" for i in range(10)]


def write_seed(root: Path, job: int, seed: int, model: list[float]) -> None:
    run = root / str(job)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}"]))
    rows = []
    for query, value in zip(QUERIES, model, strict=True):
        rows.append(("model", query, "cf", "relevance", "ndcg@10", value))
        rows.append(("bm25", query, "cf", "relevance", "ndcg@10", value - 0.05))
        rows.append(("random", query, "cf", "relevance", "ndcg@10", 0.5))
    pl.DataFrame(
        rows, schema=["scorer", "query_id", "region", "task", "metric", "value"], orient="row"
    ).write_parquet(run / "per_query.parquet")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    base = np.linspace(0.6, 0.9, len(QUERIES))
    write_seed(tmp_path / "cf", 0, 0, list(base))
    write_seed(tmp_path / "cf", 1, 1, list(base + 0.02))
    return tmp_path / "cf"


def test_model_minus_each_baseline_is_paired_over_seed_and_query(sweep: Path) -> None:
    table = dataset_table(sweep, "ndcg@10", "relevance")
    assert table.height == 3 * 2 * len(QUERIES)  # 3 scorers x 2 seeds x 10 queries
    summary = {r["scorer"]: r for r in summarize(table, resamples=200).iter_rows(named=True)}
    assert summary["model"]["delta"] is None
    assert summary["bm25"]["delta"] == pytest.approx(0.05)  # +0.05 on every unit
    assert summary["bm25"]["delta_low"] == pytest.approx(0.05)
    assert summary["bm25"]["p"] < 0.01
    expected = np.mean(np.r_[np.linspace(0.6, 0.9, 10), np.linspace(0.62, 0.92, 10)]) - 0.5
    assert summary["random"]["delta"] == pytest.approx(expected)
    assert summary["model"]["queries"] == 20
    seeds = per_seed(table)
    model = seeds.filter(pl.col("scorer") == "model").row(0, named=True)
    assert model["0"] == pytest.approx(0.75) and model["1"] == pytest.approx(0.77)


def test_cli_writes_markdown_and_png_and_errors_in_one_line(sweep: Path, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main([f"crowdflower={sweep}", "--out", str(out), "--resamples", "100"]) == 0
    text = (out / "real_data.md").read_text()
    assert "## crowdflower" in text and "| bm25 | 0.7" in text and "+0.0500" in text
    assert (out / "real_data.png").read_bytes()[:4] == b"\x89PNG"
    assert main([str(sweep)]) == 2
    assert "expected NAME=DIR" in capsys.readouterr().err
    assert main([f"x={tmp_path / 'nothing'}"]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_model_pair_compares_two_recipes_on_shared_units(sweep: Path, tmp_path) -> None:
    other = tmp_path / "adapted"
    base = np.linspace(0.6, 0.9, len(QUERIES))
    write_seed(other, 0, 0, list(base + 0.03))
    write_seed(other, 1, 1, list(base + 0.02 + 0.03))
    out = tmp_path / "out"
    args = [f"generic={sweep}", f"adapted={other}", "--out", str(out), "--resamples", "100"]
    assert main([*args, "--pair", "adapted:generic"]) == 0
    text = (out / "real_data.md").read_text()
    assert "| adapted − generic | +0.0300 [+0.0300, +0.0300] |" in text and "| 20 |" in text
    assert main([*args, "--pair", "adapted:nothing"]) == 2
