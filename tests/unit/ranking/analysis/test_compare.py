"""Sweep comparison: run discovery, variants, bootstrap intervals, paired tests, outputs."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from data_modules.errors import ConfigError
from experiments.compare import main as compare_main
from ranking.analysis.compare import (
    axis_table,
    bootstrap_interval,
    discover_runs,
    gather,
    paired_difference,
    summarize_variants,
    swept_axes,
)
from ranking.analysis.sweep_report import compare, plot_deltas

QUERIES = [f"q{i}" for i in range(12)]


def write_run(root: Path, job: int, overrides: list[str], values: list[float], seed=42) -> None:
    run = root / str(job)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
    rows = []
    for i, (query, value) in enumerate(zip(QUERIES, values, strict=True)):
        region = "eu" if i % 2 else "na"
        rows.append(("model", query, region, "purchase", "ndcg@10", value))
        rows.append(("random", query, region, "purchase", "ndcg@10", 0.25))
    pl.DataFrame(
        rows, schema=["scorer", "query_id", "region", "task", "metric", "value"], orient="row"
    ).write_parquet(run / "per_query.parquet")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    base = np.linspace(0.3, 0.8, len(QUERIES))
    write_run(tmp_path, 0, ["tower=shared_bottom", "logger=none"], list(base))
    write_run(tmp_path, 1, ["tower=seq", "logger=none"], list(base + 0.1))
    write_run(tmp_path, 10, ["tower=mmoe", "logger=none"], list(base))
    return tmp_path


def test_runs_are_found_in_job_order_with_their_swept_axes(sweep: Path) -> None:
    runs = discover_runs(sweep)
    assert [r.path.name for r in runs] == ["0", "1", "10"]  # numeric, not lexical, order
    assert swept_axes(runs) == ["tower"]  # logger is not an axis, and it did not vary


def test_seeds_pool_into_one_variant_with_seed_qualified_units(tmp_path: Path) -> None:
    write_run(tmp_path, 0, ["tower=seq", "seed=1"], [0.5] * 12, seed=1)
    write_run(tmp_path, 1, ["tower=seq", "seed=2"], [0.7] * 12, seed=2)
    table = gather(discover_runs(tmp_path), "ndcg@10", baselines=["random"])
    assert table.get_column("variant").unique().sort().to_list() == ["baseline:random", "run"]
    model = table.filter(pl.col("variant") == "run")
    assert model.height == 24 and model.get_column("unit").n_unique() == 24
    assert model.get_column("value").mean() == pytest.approx(0.6)


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible() -> None:
    values = np.array([0.0, 1.0] * 20)
    mean, low, high = bootstrap_interval(values, seed=3)
    assert mean == 0.5 and 0.0 <= low < 0.5 < high <= 1.0
    assert bootstrap_interval(values, seed=3) == (mean, low, high)
    assert bootstrap_interval(np.full(5, 0.4)) == (0.4, 0.4, 0.4)


def test_paired_permutation_p_value_is_the_exact_sign_flip_test() -> None:
    a = np.array([0.9, 0.8, 0.7, 0.75, 0.6, 0.65, 0.5, 0.55])
    b = np.array([0.7, 0.8, 0.6, 0.70, 0.65, 0.5, 0.45, 0.4])
    diff = a - b
    observed = abs(diff.mean())
    flips = [
        abs((diff * np.array(signs)).mean()) >= observed - 1e-12
        for signs in itertools.product([1, -1], repeat=len(diff))
    ]
    mean, low, high, p = paired_difference(a, b)
    assert mean == pytest.approx(diff.mean())
    assert low <= mean <= high
    assert p == pytest.approx(np.mean(flips))  # 2^8 < resamples: scipy enumerates exactly


def test_summary_compares_each_variant_to_the_baseline_on_the_same_queries(sweep: Path) -> None:
    table = gather(discover_runs(sweep), "ndcg@10", baselines=["random"])
    summary = summarize_variants(table, resamples=500)
    overall = summary.filter(pl.col("region") == "all").sort("variant")
    by_variant = {r["variant"]: r for r in overall.iter_rows(named=True)}
    assert by_variant["tower=shared_bottom"]["delta"] is None  # the baseline: first job
    assert by_variant["tower=seq"]["delta"] == pytest.approx(0.1)
    assert by_variant["tower=seq"]["p"] < 0.01  # +0.1 on every query
    assert by_variant["tower=mmoe"]["delta"] == pytest.approx(0.0)
    assert by_variant["tower=mmoe"]["p"] == 1.0
    assert by_variant["baseline:random"]["mean"] == pytest.approx(0.25)
    regions = set(summary.get_column("region").to_list())
    assert regions == {"eu", "na", "all"}


def test_compare_writes_markdown_csv_and_pngs(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    paths = compare(sweep, baselines=["random"], out_dir=out, resamples=200)
    markdown = paths["markdown"].read_text()
    assert "| tower=seq | purchase |" in markdown and "baseline" in markdown
    assert pl.read_csv(paths["csv"]).height == 4 * 3  # 4 variants x (2 regions + all)
    for key in ("plot", "plot_delta", "plot_tower"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert compare_main([str(tmp_path)]) == 2
    assert "no per_query.parquet under" in capsys.readouterr().err
    write_run(tmp_path, 0, ["tower=seq"], [0.5] * 12)
    with pytest.raises(ConfigError, match="baseline 'tower=mmoe' is not a variant"):
        compare(tmp_path, baseline="tower=mmoe")
    assert compare_main([str(tmp_path), "--metric", "mrr@10"]) == 2
    assert "has no metric 'mrr@10'" in capsys.readouterr().err


def test_compare_plots_land_in_a_wandb_run_of_the_sweep_group(sweep: Path, monkeypatch) -> None:
    """``experiments.compare DIR --wandb``: an offline run (job type compare) with the plots."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    for job in ("0", "1", "10"):
        (sweep / job / "config.yaml").write_text(yaml.safe_dump({"seed": 42, "task_name": "train"}))
    import wandb

    calls = []
    real_init = wandb.init

    def init(**kwargs):
        calls.append(kwargs)
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    assert compare_main([str(sweep), "--resamples", "50", "--wandb"]) == 0
    assert calls[0]["group"] == f"train/{sweep.name}" and calls[0]["job_type"] == "compare"
    (run,) = (sweep / "wandb").glob("offline-run-*")
    images = sorted(p.name for p in (run / "files" / "media" / "images" / "compare").glob("*.png"))
    assert any(name.startswith("compare_ndcg_at_10_") for name in images), images
    assert list((run / "files" / "media" / "table" / "compare").glob("ndcg@10_*.table.json"))


def test_pooling_other_axes_keeps_one_row_per_query(tmp_path: Path) -> None:
    """tower x loss: each query is scored twice per tower; the per-axis view averages them."""
    base = np.linspace(0.3, 0.8, len(QUERIES))
    write_run(tmp_path, 0, ["tower=seq", "loss=a"], list(base))
    write_run(tmp_path, 1, ["tower=seq", "loss=b"], list(base + 0.2))
    write_run(tmp_path, 2, ["tower=mmoe", "loss=a"], list(base))
    write_run(tmp_path, 3, ["tower=mmoe", "loss=b"], list(base))
    table = gather(discover_runs(tmp_path), "ndcg@10", baselines=["random"])
    by_tower = axis_table(table, "tower")
    assert by_tower.height == 2 * len(QUERIES)  # not 4 x 12: a query counts once per tower
    seq = dict(by_tower.filter(pl.col("tower") == "seq").select("unit", "value").iter_rows())
    assert [seq[f"42:{q}"] for q in QUERIES] == pytest.approx(list(base + 0.1))
    assert set(by_tower.columns) == {"tower", "unit", "region", "task", "value"}


def test_delta_plot_needs_a_variant_besides_the_baseline(tmp_path: Path) -> None:
    write_run(tmp_path, 0, ["tower=seq"], [0.5] * 12)
    summary = summarize_variants(gather(discover_runs(tmp_path), "ndcg@10"), resamples=50)
    with pytest.raises(ConfigError, match="no variant besides the baseline 'run'"):
        plot_deltas(summary, "ndcg@10", "run", tmp_path / "d.png")
