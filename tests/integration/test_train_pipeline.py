"""train(cfg) and evaluate(cfg) end to end on tiny data, and the CLI's error lines."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from experiments.workflows.train import evaluate, train
from ranking.metrics.per_query import summarize
from ranking.modules.cross_encoder import RankingModule
from tests.conftest import REPO

# The cross-check of the TREC files needs ir_measures (the `eval` and `dev` extras).
HAS_IR_MEASURES = importlib.util.find_spec("ir_measures") is not None
CROSS_CHECK = f"cross_check={str(HAS_IR_MEASURES).lower()}"


def test_fast_dev_run_trains_and_tests(make_cfg) -> None:
    cfg = make_cfg("trainer.fast_dev_run=true", "callbacks=none", "logger=none")
    metrics, objects = train(cfg)
    assert objects["trainer"].state.finished
    # Per task, per region and all-region names follow {stage}/{task}/[{region}/]{metric}@{k}.
    regions = objects["datamodule"].region_names
    assert len(regions) == 3
    assert "test/purchase/ndcg@10" in metrics["test"]
    assert "test/purchase/ndcg@10" in metrics["baselines"]["random"]
    out = Path(cfg.paths.output_dir)
    assert (out / "config.yaml").is_file() and (out / "metrics.json").is_file()


@pytest.mark.parametrize(
    ("debug", "check"),
    [
        ("fdr", lambda t: t.fast_dev_run == 1 and t.global_step == 1),
        ("overfit", lambda t: t.overfit_batches == 3 and t.num_training_batches == 3),
        ("profiler", lambda t: type(t.profiler).__name__ == "SimpleProfiler"),
    ],
)
def test_debug_options_run(make_cfg, debug, check) -> None:
    extra = ["trainer.max_epochs=1"] if debug == "overfit" else []
    cfg = make_cfg(f"debug={debug}", *extra)
    assert cfg.task_name == "debug" and cfg.trainer.detect_anomaly is True
    metrics, objects = train(cfg)
    assert check(objects["trainer"])
    assert objects["trainer"].loggers == []  # debug runs log nowhere but the console
    assert "test/purchase/ndcg@10" in metrics["test"]


def test_accumulate_grad_batches_steps_once_per_n_batches(make_cfg) -> None:
    cfg = make_cfg(
        "trainer.accumulate_grad_batches=2", "trainer.limit_train_batches=4", "test_after_fit=false"
    )
    _, objects = train(cfg)
    assert objects["trainer"].global_step == 2  # 4 batches, one optimiser step per 2


def test_train_writes_checkpoint_metrics_and_evaluate_reproduces(make_cfg, tmp_path) -> None:
    cfg = make_cfg("logger=csv")
    metrics, objects = train(cfg)
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"] == pytest.approx(metrics["test"])
    assert saved["monitor"] == "val/ndcg@10" and 0.0 <= saved["val/ndcg@10"] <= 1.0
    ckpt = Path(saved["best_checkpoint"])
    assert ckpt.is_file() and (out / "checkpoints" / "last.ckpt").is_file()

    # per_query.parquet holds the values behind every mean: the model's rows summarise to exactly
    # what trainer.test logged, and each baseline scored the same queries.
    per_query = pl.read_parquet(out / "per_query.parquet")
    module, datamodule = objects["module"], objects["datamodule"]
    summary = summarize(
        per_query.filter(pl.col("scorer") == "model"),
        "test",
        module.task_names,
        datamodule.region_names,
        list(module.hparams.metrics),
    )
    logged = {k: v for k, v in saved["test"].items() if k != "test/loss"}
    assert summary == pytest.approx(logged)
    for name in saved["baselines"]:
        rows = per_query.filter(pl.col("scorer") == name)
        model_rows = per_query.filter(pl.col("scorer") == "model")
        assert (
            rows.select("query_id", "task", "metric")
            .sort(pl.all())
            .equals(model_rows.select("query_id", "task", "metric").sort(pl.all()))
        )

    # The checkpoint rebuilds the model without Hydra and scores like the tested (best) weights.
    loaded = RankingModule.load_from_checkpoint(str(ckpt), map_location="cpu").eval()
    batch = next(iter(objects["datamodule"].eval_dataloader("test")))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), objects["module"].eval()(batch))

    # evaluate on the same data and split gives the same test metrics.
    eval_cfg = make_cfg(f"ckpt_path={ckpt}", *_tiny_data(), CROSS_CHECK, config="eval", tiny=False)
    eval_cfg.paths.output_dir = str(tmp_path / "eval")
    result, _ = evaluate(eval_cfg)
    assert result["test"]["test/purchase/ndcg@10"] == pytest.approx(
        metrics["test"]["test/purchase/ndcg@10"]
    )
    assert (tmp_path / "eval" / "metrics.json").is_file()
    # run.<task>.trec + qrels.<task>.txt: ir_measures (trec_eval) gives our values.
    for task in module.task_names:
        assert (tmp_path / "eval" / f"run.{task}.trec").is_file()
        assert (tmp_path / "eval" / f"qrels.{task}.txt").is_file()
    if not HAS_IR_MEASURES:
        pytest.skip("ir_measures is not installed: the cross-check was not run")
    check = result["cross_check"]
    assert check["agrees"], check
    assert check["values"]["relevance"]["ndcg@10"]["ir_measures"] == pytest.approx(
        result["test"]["test/relevance/ndcg@10"], abs=1e-6
    )


def _tiny_data() -> list[str]:
    return [
        "data.generator.num_products=120",
        "data.generator.num_queries=45",
        "data.generator.list_size=8",
        "data.eval_batch_size=8",
        "trainer.enable_progress_bar=false",
    ]


def test_evaluate_on_a_file_with_split_all(make_cfg, tmp_path) -> None:
    cfg = make_cfg("trainer.fast_dev_run=true", "logger=none")
    _, objects = train(cfg)
    ckpt = tmp_path / "model.ckpt"
    objects["trainer"].save_checkpoint(ckpt)
    # Real-data ids: the query text as query id, the title as product id (both with spaces).
    table = (
        objects["datamodule"]
        .tables["test"]
        .drop("__pair")
        .with_columns(
            pl.concat_str(["query", "query_id"], separator=" #").alias("query_id"),
            pl.concat_str(["product_title", "product_id"], separator=" #").alias("product_id"),
        )
    )
    path = tmp_path / "test.parquet"
    table.write_parquet(path)
    eval_cfg = make_cfg(
        f"ckpt_path={ckpt}",
        "data=file",
        f"data.path={path}",
        "split=all",
        "trainer.enable_progress_bar=false",
        CROSS_CHECK,
        config="eval",
        tiny=False,
    )
    eval_cfg.paths.output_dir = str(tmp_path / "eval")  # a run of its own
    result, _ = evaluate(eval_cfg)
    assert (
        result["test"]["test/purchase/lists"]
        == table.filter(pl.col("purchase") > 0).get_column("query_id").n_unique()
    )
    # Valid TREC files all the same: numbered ids, maps back to the originals.
    out = Path(eval_cfg.paths.output_dir)
    lines = (out / "run.purchase.trec").read_text().splitlines()
    assert len(lines) == table.height and all(len(line.split(" ")) == 6 for line in lines)
    qids = pl.read_csv(out / "qids.tsv", separator="\t")
    assert set(qids["query_id"]) == set(table["query_id"])
    assert set(pl.read_csv(out / "docids.tsv", separator="\t")["product_id"]) == set(
        table["product_id"]
    )
    if "cross_check" in result:
        assert result["cross_check"]["agrees"], result["cross_check"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "experiments.train", *args, f"paths.root_dir={cwd}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_config_typo_fails_with_clear_line(tmp_path) -> None:
    result = _cli("data.no_such_key=1", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not override 'data.no_such_key'" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_data_file_missing_column_fails_with_one_line(tmp_path) -> None:
    path = tmp_path / "bad.csv"
    pl.DataFrame(
        {
            "query_id": ["q1", "q1"],
            "query": ["a", "a"],
            "product_id": ["p1", "p2"],
            "region": ["us", "us"],
            "purchase": [1, 0],
        }
    ).write_csv(path)
    result = _cli("data=file", f"data.path={path}", "tasks=purchase", cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {path}: missing required column(s) 'product_title'; columns found: "
        "query_id, query, product_id, region, purchase"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("tower", ["shared_bottom", "mmoe", "seq"])
@pytest.mark.parametrize("region_mask", ["none", "feature"])
def test_every_tower_and_mask_trains_in_fast_dev_run(make_cfg, tower, region_mask) -> None:
    cfg = make_cfg(
        f"tower={tower}",
        f"region_mask={region_mask}",
        "trainer.fast_dev_run=true",
        "callbacks=none",
        "logger=none",
        "test_after_fit=false",
    )
    _, objects = train(cfg)
    module = objects["module"]
    assert objects["trainer"].state.finished and objects["trainer"].global_step == 1
    assert module.uses_region_mask == (region_mask == "feature")
    batch = next(iter(objects["datamodule"].eval_dataloader("val")))
    assert module(batch).shape[-1] == 4  # relevance, click, add_to_cart, purchase


def test_cli_rename_and_encoding_reach_a_real_layout(tmp_path) -> None:
    # Home Depot's Kaggle layout (latin-1, its own column names), written here in miniature.
    path = tmp_path / "hd.csv"
    path.write_bytes(
        "id,product_uid,product_title,search_term,relevance\n"
        "1,100,Caf\xe9 table,table,3\n2,101,Chair,table,1\n".encode("latin-1")
    )
    utf8 = _cli("data=file", f"data.path={path}", "tasks.order=[relevance]", cwd=tmp_path)
    assert "set data.encoding, e.g. latin-1" in utf8.stderr
    renamed = _cli(
        "data=file",
        f"data.path={path}",
        "data.encoding=latin-1",
        "tasks.order=[relevance]",
        "data.rename={search_term: query, product_uid: product_id}",
        cwd=tmp_path,
    )
    # The override is accepted; what is still missing is named (a file without a region column
    # is one market, data.region, so only query_id is missing).
    errors = [line for line in renamed.stderr.splitlines() if line.startswith("error:")]
    assert errors and "missing required column(s) 'query_id';" in errors[0]


def test_uncertainty_weighting_learns_its_log_variances(make_cfg) -> None:
    cfg = make_cfg(
        "model.loss_weighting.name=uncertainty",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "callbacks=none",
        "logger=none",
        "test_after_fit=false",
    )
    _, objects = train(cfg)
    log_variance = objects["module"].loss_weighting.log_variance
    assert log_variance.shape == (4,)
    # Trained from 0: every task's log-variance moved (the gradient reaches it).
    assert bool((log_variance.detach() != 0).all())
    assert "train/purchase/weight" in objects["trainer"].callback_metrics
