"""distill(cfg) and predict(cfg) end to end on tiny data; TREC run format; clear errors."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from data_modules.errors import ConfigError
from data_modules.student import StudentDataModule
from experiments.workflows.distill import distill
from experiments.workflows.predict import predict
from experiments.workflows.train import train
from ranking.modules.bi_encoder import BiEncoderModule
from ranking.modules.cross_encoder import RankingModule
from ranking.serving.checkpoints import load_checkpoint
from ranking.serving.scoring import write_trec_run
from tests.conftest import REPO, compose_config, tiny_overrides

DATA = [
    "data.generator.num_products=120",
    "data.generator.num_queries=45",
    "data.generator.list_size=8",
    "data.batch_size=4",
    "data.eval_batch_size=8",
]
STUDENT = [
    *DATA,
    "encoder.max_length=32",
    "encoder.architecture.hidden_size=32",
    "encoder.architecture.intermediate_size=64",
    "encoder.architecture.num_hidden_layers=1",
    "student.bi_encoder.dim=16",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "logger=none",
    "teacher_scores.progress=false",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> SimpleNamespace:
    """A tiny teacher trained, then a tiny student distilled from it."""
    root = tmp_path_factory.mktemp("distill")
    cfg = compose_config("train", [*tiny_overrides([]), "logger=none"], root / "teacher")
    teacher_metrics, teacher_objects = train(cfg)
    teacher_ckpt = Path(teacher_metrics["best_checkpoint"])
    dcfg = compose_config("distill", [*STUDENT, f"teacher_ckpt={teacher_ckpt}"], root / "student")
    metrics, objects = distill(dcfg)
    return SimpleNamespace(
        root=root,
        teacher_ckpt=teacher_ckpt,
        teacher_metrics=teacher_metrics,
        teacher=teacher_objects["module"],
        student_ckpt=Path(metrics["best_checkpoint"]),
        metrics=metrics,
        objects=objects,
        out=Path(dcfg.paths.output_dir),
    )


def _predict_cfg(runs: SimpleNamespace, name: str, *overrides: str):
    return compose_config("predict", [*DATA, *overrides], runs.root / name)


def test_distill_reports_student_beside_teacher_on_the_same_test_lists(runs) -> None:
    saved = json.loads((runs.out / "metrics.json").read_text())
    student, teacher = saved["test"], saved["teacher"]
    assert 0.0 <= student["test/ndcg@10"] <= 1.0
    # The teacher is scored on the very lists its own training run tested.
    assert teacher["test/ndcg@10"] == pytest.approx(runs.teacher_metrics["test"]["test/ndcg@10"])
    for task in saved["tasks"]:
        assert student[f"test/{task}/lists"] == teacher[f"test/{task}/lists"]
    ratio = saved["student_over_teacher"]["test/ndcg@10"]
    assert ratio == pytest.approx(student["test/ndcg@10"] / teacher["test/ndcg@10"])
    assert saved["teacher_scores"]["hit"] is False and saved["teacher_ckpt"] == str(
        runs.teacher_ckpt
    )
    assert "test/ndcg@10" in saved["baselines"]["random"]


def test_distill_per_query_values_pair_student_teacher_and_random_on_the_same_lists(runs) -> None:
    """per_query.parquet feeds experiments.compare: its means are the reported metrics."""
    saved = json.loads((runs.out / "metrics.json").read_text())
    table = pl.read_parquet(runs.out / "per_query.parquet")
    ndcg = table.filter(pl.col("metric") == "ndcg@10")
    assert set(ndcg.get_column("scorer").unique()) == {"model", "random", "teacher"}
    for scorer, reported in (
        ("model", saved["test"]),
        ("teacher", saved["teacher"]),
        ("random", saved["baselines"]["random"]),
    ):
        rows = ndcg.filter(pl.col("scorer") == scorer)
        for task in saved["tasks"]:
            values = rows.filter(pl.col("task") == task).get_column("value")
            assert values.len() == reported[f"test/{task}/lists"]
            assert values.mean() == pytest.approx(reported[f"test/{task}/ndcg@10"], abs=1e-5)
    # The teacher's rows are exactly those of its own training run: same lists, same scores.
    own = pl.read_parquet(runs.teacher_ckpt.parent.parent / "per_query.parquet").filter(
        (pl.col("scorer") == "model") & (pl.col("metric") == "ndcg@10")
    )
    mine = ndcg.filter(pl.col("scorer") == "teacher").drop("scorer")
    joined = own.drop("scorer").join(mine, on=["query_id", "task", "region", "metric"])
    assert joined.height == own.height == mine.height
    np.testing.assert_allclose(joined["value"], joined["value_right"], atol=1e-5)


def test_student_checkpoint_rebuilds_from_hparams_and_scores_alike(runs) -> None:
    loaded = load_checkpoint(runs.student_ckpt)
    assert isinstance(loaded, BiEncoderModule)
    assert loaded.hparams.teacher["path"] == str(runs.teacher_ckpt)
    assert loaded.bi_options["query_region_prefix"] is True
    assert loaded.task_names == runs.teacher.task_names
    assert isinstance(load_checkpoint(runs.teacher_ckpt), RankingModule)
    # trainer.test(ckpt_path="best") left the best weights in the trained module.
    data = StudentDataModule(
        runs.objects["datamodule"],
        loaded.build_texts(runs.objects["datamodule"]),
        loaded.pad_token_id,
    )
    batch = next(iter(data.test_dataloader()))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), runs.objects["module"].eval()(batch))


def _read_run(path: Path) -> list[list[str]]:
    return [line.split(" ") for line in path.read_text().splitlines()]


def test_predict_student_writes_trec_run_and_parquet_and_reuses_product_vectors(runs) -> None:
    cfg = _predict_cfg(runs, "pred", f"ckpt_path={runs.student_ckpt}", "rank_by=purchase")
    summary, objects = predict(cfg)
    out = Path(cfg.paths.output_dir)
    frame = pl.read_parquet(out / "scores.parquet")
    tasks = runs.teacher.task_names
    assert frame.columns == [
        "query_id",
        "product_id",
        "region",
        *[f"score_{t}" for t in tasks],
        "rank",
    ]
    test_rows = sum(len(r) for r in objects["datamodule"].lists["test"].rows)
    assert frame.height == summary["pairs"] == test_rows
    assert summary["product_vectors"]["reused"] is False

    lines = _read_run(out / "run.trec")
    assert len(lines) == frame.height and all(len(fields) == 6 for fields in lines)
    # Per task: a run file ordered by that task, and qrels since the data has labels.
    for task in tasks:
        assert len(_read_run(out / f"run.{task}.trec")) == frame.height
        assert (out / f"qrels.{task}.txt").is_file()
    assert _read_run(out / "run.purchase.trec") == lines
    assert {f[1] for f in lines} == {"Q0"} and {f[5] for f in lines} == {"shoprank"}
    by_query: dict[str, list[tuple[int, float, str]]] = {}
    for qid, _, docid, rank, score, _ in lines:
        by_query.setdefault(qid, []).append((int(rank), float(score), docid))
    for qid, items in by_query.items():
        assert [r for r, _, _ in items] == list(range(1, len(items) + 1))
        assert all(a[1] >= b[1] for a, b in itertools.pairwise(items))
        expected = frame.filter(pl.col("query_id") == qid).sort("rank")
        assert [d for _, _, d in items] == expected.get_column("product_id").to_list()
        np.testing.assert_allclose(
            [s for _, s, _ in items], expected.get_column("score_purchase").to_numpy(), rtol=1e-6
        )

    # A second call with the same cache reuses the saved product vectors and ranks alike (into
    # a directory of its own: a run never overwrites another).
    cfg2 = _predict_cfg(runs, "pred", f"ckpt_path={runs.student_ckpt}", "rank_by=purchase")
    cfg2.paths.output_dir = str(out.parent / "out2")
    third, third_objects = predict(cfg2)
    assert third["product_vectors"]["reused"] is True
    assert third_objects["frame"].equals(objects["frame"])


def test_predict_teacher_scores_equal_the_cross_encoder(runs) -> None:
    cfg = _predict_cfg(runs, "pred_teacher", f"ckpt_path={runs.teacher_ckpt}")
    summary, objects = predict(cfg)
    assert summary["kind"] == "cross_encoder" and summary["rank_by"] == "relevance"
    frame, datamodule = objects["frame"], objects["datamodule"]
    module = objects["module"]
    batch = next(iter(datamodule.eval_dataloader("test")))
    with torch.no_grad():
        scores = module(batch)[batch["mask"]].numpy()
    rows = batch["rows"][batch["mask"]].numpy()
    pairs = datamodule.tables["test"].select(
        pl.col("__pair").alias("pair"), "query_id", "product_id"
    )
    joined = frame.join(pairs, on=["query_id", "product_id"])
    by_pair = dict(zip(joined["pair"].to_list(), joined["score_relevance"].to_list(), strict=True))
    np.testing.assert_allclose([by_pair[r] for r in rows], scores[:, 0], rtol=1e-5, atol=1e-6)


def test_predict_on_a_file_without_labels_ranks_every_candidate(runs) -> None:
    table = (
        runs.objects["datamodule"]
        .tables["test"]
        .drop("__pair", "relevance", "click", "add_to_cart", "purchase")
    )
    path = runs.root / "unlabelled.parquet"
    table.write_parquet(path)
    cfg = compose_config(
        "predict",
        [f"ckpt_path={runs.student_ckpt}", "data=file", f"data.path={path}", "split=all"],
        runs.root / "pred_file",
    )
    summary, _objects = predict(cfg)
    assert summary["labels_filled"] == ["relevance", "click", "add_to_cart", "purchase"]
    out = Path(cfg.paths.output_dir)
    assert summary["trec_files"]["qrels"] == {}  # no labels, no qrels
    assert (out / "run.click.trec").is_file() and not (out / "qrels.click.txt").exists()
    assert summary["pairs"] == table.height
    assert summary["queries"] == table.get_column("query_id").n_unique()


def test_predict_on_real_style_ids_with_spaces_writes_valid_trec_files(runs) -> None:
    """Home Depot / CrowdFlower: the query text is the query id, the title the product id."""
    table = (
        runs.objects["datamodule"]
        .tables["test"]
        .drop("__pair")
        .with_columns(
            pl.concat_str(["query", "query_id"], separator=" #").alias("query_id"),
            pl.concat_str(["product_title", "product_id"], separator=" #").alias("product_id"),
        )
    )
    path = runs.root / "spaced.parquet"
    table.write_parquet(path)
    cfg = compose_config(
        "predict",
        [f"ckpt_path={runs.teacher_ckpt}", "data=file", f"data.path={path}", "split=all"],
        runs.root / "pred_spaced",
    )
    summary, _ = predict(cfg)
    out = Path(cfg.paths.output_dir)
    qids = pl.read_csv(out / "qids.tsv", separator="\t")
    docids = pl.read_csv(out / "docids.tsv", separator="\t")
    assert set(qids["query_id"]) == set(table["query_id"])
    assert set(docids["product_id"]) == set(table["product_id"])
    to_query = dict(zip(qids["qid"], qids["query_id"], strict=True))
    for name in ("run.trec", "run.relevance.trec", "qrels.relevance.txt"):
        lines = _read_run(out / name)
        assert all(len(f) == (6 if name.startswith("run") else 4) for f in lines), name
        assert {to_query[f[0]] for f in lines} <= set(table["query_id"])
    assert len(_read_run(out / "run.trec")) == table.height == summary["pairs"]


def test_write_trec_run_format_and_whitespace_errors(tmp_path) -> None:
    frame = pl.DataFrame(
        {
            "query_id": ["q1", "q1", "q2"],
            "product_id": ["b", "a", "c"],
            "score_x": [0.5, 0.25, 1.0],
            "rank": [1, 2, 1],
        }
    )
    path = write_trec_run(frame, tmp_path / "run.trec", "score_x", "myrun")
    assert path.read_text() == "q1 Q0 b 1 0.5 myrun\nq1 Q0 a 2 0.25 myrun\nq2 Q0 c 1 1 myrun\n"
    with pytest.raises(ConfigError, match="run_name must be one word"):
        write_trec_run(frame, tmp_path / "x.trec", "score_x", "my run")
    # Ids with whitespace (real data: query text or title as id) are numbered and mapped back.
    spaced = frame.with_columns(pl.Series("product_id", ["b b", "a", "c"]))
    write_trec_run(spaced, tmp_path / "spaced" / "run.trec", "score_x")
    assert (tmp_path / "spaced" / "run.trec").read_text() == (
        "q1 Q0 d2 1 0.5 shoprank\nq1 Q0 d1 2 0.25 shoprank\nq2 Q0 d3 1 1 shoprank\n"
    )
    assert (tmp_path / "spaced" / "docids.tsv").read_text() == (
        "docid\tproduct_id\nd1\ta\nd2\tb b\nd3\tc\n"
    )


# ---------------------------------------------------------------------------------------- errors
def test_distill_errors_name_teacher_ckpt(runs, tmp_path) -> None:
    base = [*STUDENT]
    cfg = compose_config("distill", base, tmp_path / "a")
    with pytest.raises(ConfigError, match="teacher_ckpt is not set"):
        distill(cfg)
    cfg = compose_config("distill", [*base, f"teacher_ckpt={tmp_path / 'no.ckpt'}"], tmp_path / "b")
    with pytest.raises(ConfigError, match=r"teacher_ckpt: checkpoint .*no\.ckpt does not exist"):
        distill(cfg)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    cfg = compose_config("distill", [*base, f"teacher_ckpt={text}"], tmp_path / "c")
    with pytest.raises(
        ConfigError, match=r"teacher_ckpt: .*notes\.ckpt is not a PyTorch checkpoint"
    ):
        distill(cfg)
    cfg = compose_config("distill", [*base, f"teacher_ckpt={runs.student_ckpt}"], tmp_path / "d")
    with pytest.raises(ConfigError, match="holds a bi_encoder model; a cross_encoder is needed"):
        distill(cfg)
    weights_only = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}}, weights_only)
    cfg = compose_config("distill", [*base, f"teacher_ckpt={weights_only}"], tmp_path / "e")
    with pytest.raises(ConfigError, match="is not a shoprank model checkpoint"):
        distill(cfg)


def test_predict_errors_name_the_key(runs, tmp_path) -> None:
    with pytest.raises(ConfigError, match="ckpt_path is not set"):
        predict(compose_config("predict", DATA, tmp_path / "a"))
    bad = [f"ckpt_path={runs.student_ckpt}"]
    with pytest.raises(ConfigError, match="rank_by: unknown task 'purchases'"):
        predict(compose_config("predict", [*DATA, *bad, "rank_by=purchases"], tmp_path / "b"))
    with pytest.raises(ConfigError, match="backend must be one of"):
        predict(compose_config("predict", [*DATA, *bad, "backend=tensorrt"], tmp_path / "c"))
    teacher = [f"ckpt_path={runs.teacher_ckpt}", "backend=onnx"]
    with pytest.raises(ConfigError, match="backend=onnx serves bi-encoder students only"):
        predict(compose_config("predict", [*DATA, *teacher], tmp_path / "d"))


def test_cli_without_teacher_ckpt_fails_with_one_line(tmp_path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "experiments.distill", f"paths.root_dir={tmp_path}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "error: teacher_ckpt is not set" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_predict_with_the_onnx_backend_matches_pytorch(runs) -> None:
    torch_run, _ = predict(_predict_cfg(runs, "p_torch", f"ckpt_path={runs.student_ckpt}"))
    onnx_cfg = _predict_cfg(runs, "p_onnx", f"ckpt_path={runs.student_ckpt}", "backend=onnx")
    onnx_run, _ = predict(onnx_cfg)
    assert onnx_run["onnx"]["max_abs_diff"] <= 1e-4
    assert Path(onnx_run["onnx"]["query"]).is_file()
    assert (Path(onnx_cfg.paths.output_dir) / "onnx" / "tokenizer").is_dir()
    a = pl.read_parquet(torch_run["scores_file"]).sort("query_id", "product_id")
    b = pl.read_parquet(onnx_run["scores_file"]).sort("query_id", "product_id")
    for column in [c for c in a.columns if c.startswith("score_")]:
        np.testing.assert_allclose(b[column].to_numpy(), a[column].to_numpy(), atol=1e-4)
