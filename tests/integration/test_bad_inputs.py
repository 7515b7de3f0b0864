"""Bad input end to end, through the command line a user types (issue 15).

Every case runs ``python -m experiments.<entry> ...`` (in this process through the entry
point's ``main()``, see :mod:`tests.cli`; the pickle payload also in a fresh interpreter) and
checks what the user sees: one ``error:`` line naming the key, file, column or row (exit code
2, no traceback), or the documented behaviour. ``make check-inputs`` runs this module with
``tests/integration/test_checkpoint_io.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from data_modules.synthetic import SyntheticConfig, generate_synthetic
from ranking.serving.checkpoints import read_checkpoint
from tests.cli import run_cli

MODEL = [
    "encoder.max_length=32",
    "encoder.architecture.hidden_size=32",
    "encoder.architecture.intermediate_size=64",
    "encoder.architecture.num_hidden_layers=1",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "logger=none",
    "baselines=[random]",
    "data.batch_size=4",
    "data.eval_batch_size=8",
]
SYNTHETIC = [
    "data.generator.num_products=120",
    "data.generator.num_queries=45",
    "data.generator.list_size=8",
]


def canonical_table(num_queries: int = 45) -> pl.DataFrame:
    """Synthetic rows with ids as a user's export has them: zero-padded numbers.

    Query ids are ``00000``, ``00001``, ...; product ids ``000025``-style; and two queries get
    the ids ``07`` and ``7``, which a number-typed reader would merge.
    """
    table = generate_synthetic(
        SyntheticConfig(num_products=120, num_queries=num_queries, list_size=8)
    )
    queries = table.get_column("query_id").unique(maintain_order=True).to_list()
    ids = {q: f"{i:05d}" for i, q in enumerate(queries)}
    ids[queries[7]], ids[queries[8]] = "07", "7"
    products = table.get_column("product_id").unique(maintain_order=True).to_list()
    return table.with_columns(
        pl.col("query_id").replace_strict(ids),
        pl.col("product_id").replace_strict({p: f"{i:06d}" for i, p in enumerate(products)}),
    )


def file_args(path: Path, *extra: str) -> list[str]:
    return ["data=file", f"data.path={path}", "tasks=engagement", *MODEL, *extra]


def where(tmp: Path, name: str) -> list[str]:
    """A run directory and the cache of ``tmp``."""
    return [f"hydra.run.dir={tmp / name}", f"paths.cache_dir={tmp / 'cache'}"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> SimpleNamespace:
    """One tiny model trained through the CLI on a CSV file with zero-padded ids."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    table = canonical_table()
    data = tmp / "logs.csv"
    table.write_csv(data)
    result = run_cli("train", *file_args(data), *where(tmp, "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp / "run"
    return SimpleNamespace(
        tmp=tmp,
        data=data,
        table=table,
        dir=run_dir,
        ckpt=run_dir / "checkpoints" / "last.ckpt",
        metrics=json.loads((run_dir / "metrics.json").read_text()),
        split=pl.read_parquet(run_dir / "split.parquet"),
    )


def evil_checkpoint(path: Path, marker: Path, like: Path | None = None) -> Path:
    """A checkpoint whose pickle, once loaded with weights_only=False, writes ``marker``."""

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    content = torch.load(like, weights_only=True) if like else {"state_dict": {}}
    content.setdefault("hyper_parameters", {})["payload"] = Payload()
    torch.save(content, path)
    return path


# ------------------------------------------------------------------ 1. no code from checkpoints
def test_predict_refuses_a_pickle_payload_without_running_it(run, tmp_path) -> None:
    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.ckpt", marker, like=run.ckpt)
    # The same payload does run when the file is loaded the unsafe way: the test is real.
    torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()

    result = run_cli(
        "predict",
        f"ckpt_path={evil}",
        f"data.path={run.data}",
        "data=file",
        *where(tmp_path, "pred"),
        subprocess=True,
    )
    line = result.one_error()
    assert f"ckpt_path: refused {evil}" in line and "could run code" in line
    assert not marker.exists()


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ("evaluate", "ckpt_path"),
        ("distill", "teacher_ckpt"),
        ("train", "ckpt_path"),  # a new run started from a checkpoint file
    ],
)
def test_every_entry_point_refuses_a_pickle_payload(run, tmp_path, entry, key) -> None:
    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.ckpt", marker, like=run.ckpt)
    args = [f"{key}={evil}", *where(tmp_path, "out")]
    if entry == "train":
        args = [*file_args(run.data), *args]
    line = run_cli(entry, *args).one_error()
    assert f"{key}: refused {evil}" in line
    assert not marker.exists()


def test_shoprank_checkpoints_load_with_weights_only(run) -> None:
    raw = read_checkpoint(run.ckpt)  # torch.load(weights_only=True): no allow-listed globals
    assert raw["hyper_parameters"]["tasks"][0]["name"] == "click"
    assert raw["shoprank_split"]["sha256"] == run.metrics["split_sha256"]


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "random", "weights", "student"])
def test_evaluate_with_a_bad_checkpoint_says_so_in_one_line(run, tmp_path, kind) -> None:
    path = tmp_path / f"{kind}.ckpt"
    raw = run.ckpt.read_bytes()
    expected = {
        "missing": "does not exist",
        "empty": "is empty (0 bytes)",
        "truncated": "is not a PyTorch checkpoint (truncated, corrupted",
        "random": "is not a PyTorch checkpoint",
        "weights": "is not a shoprank model checkpoint",
        "student": "holds a bi_encoder model; a cross_encoder is needed",
    }[kind]
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "weights":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif kind == "student":  # the hyper-parameters of a bi-encoder student
        content = torch.load(run.ckpt, weights_only=True)
        content["hyper_parameters"].update(bi_encoder={}, distillation={})
        torch.save(content, path)
    line = run_cli("evaluate", f"ckpt_path={path}", *where(tmp_path, "eval")).one_error()
    assert line.startswith("error: ckpt_path: ") and expected in line, line


# ------------------------------------------------------------------ 2. no run overwritten
def test_rerunning_into_a_run_dir_refuses_and_keeps_the_run(run) -> None:
    before = {p: p.read_bytes() for p in (run.dir / "metrics.json", run.ckpt)}
    hydra_before = (run.dir / ".hydra" / "overrides.yaml").read_bytes()
    line = run_cli("train", *file_args(run.data), *where(run.tmp, "run")).one_error()
    assert line == (
        f"error: {run.dir} already holds a run (config.yaml, metrics.json, per_query.parquet, "
        "split.parquet, checkpoints/) and a run is never overwritten: resume it with "
        "ckpt_path=last, or write to a new directory with hydra.run.dir=<new dir>"
    )
    # Nothing of the run was touched, not even Hydra's record of its command line.
    assert {p: p.read_bytes() for p in before} == before
    assert (run.dir / ".hydra" / "overrides.yaml").read_bytes() == hydra_before
    # Evaluating into a training run's directory would overwrite its metrics.json: refused.
    line = run_cli("evaluate", f"ckpt_path={run.ckpt}", f"hydra.run.dir={run.dir}").one_error()
    assert "already holds a run" in line and "ckpt_path=last" not in line


# ------------------------------------------------------------------ 4. monitor before training
def test_a_monitor_typo_stops_before_the_data_is_read(tmp_path) -> None:
    missing = tmp_path / "not_read.csv"  # never opened: the monitor is checked first
    line = run_cli(
        "train", *file_args(missing, "monitor=val/ndgc@10"), *where(tmp_path, "r")
    ).one_error()
    assert "monitor: 'val' metrics of this config do not include 'val/ndgc@10'" in line
    assert "close valid names: val/ndcg@10" in line
    line = run_cli(
        "train", *file_args(missing, "monitor=test/ndcg@10"), *where(tmp_path, "t")
    ).one_error()
    assert "test metric, computed only after training" in line


def test_a_task_without_validation_positives(tmp_path) -> None:
    data = tmp_path / "no_purchase.csv"
    canonical_table().with_columns(pl.lit(0).alias("purchase")).write_csv(data)
    # Monitoring that task: it would never have a value; stopped before training.
    line = run_cli(
        "train", *file_args(data, "monitor=val/purchase/ndcg@10"), *where(tmp_path, "a")
    ).one_error()
    assert "monitor: 'val/purchase/ndcg@10' has no value: no validation list has a " in line
    assert "positive 'purchase' label (0 of" in line
    # The mean over tasks: the task is left out of it, with a warning, and the run trains.
    result = run_cli("train", *file_args(data), *where(tmp_path, "b"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "task 'purchase' is left out of val/ndcg@10, the mean over tasks" in result.stdout
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["best_checkpoint"] and np.isfinite(metrics["val/ndcg@10"])
    test = metrics["test"]
    assert test["test/ndcg@10"] == pytest.approx(
        (test["test/click/ndcg@10"] + test["test/add_to_cart/ndcg@10"]) / 2
    )


# ------------------------------------------------------------------ 5. ids are text
def test_ids_survive_train_evaluate_and_predict_unchanged(run, tmp_path) -> None:
    original = set(run.table.get_column("query_id"))
    assert {"00001", "07", "7"} <= original
    assert set(run.split.get_column("query_id")) == original  # train: every list, as written
    result = run_cli(
        "predict",
        f"ckpt_path={run.ckpt}",
        "data=file",
        f"data.path={run.data}",
        "split=all",
        *where(tmp_path, "pred"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scores = pl.read_parquet(tmp_path / "pred" / "scores.parquet")
    assert set(scores.get_column("query_id")) == original
    assert set(scores.get_column("product_id")) == set(run.table.get_column("product_id"))
    assert scores.filter(pl.col("query_id") == "07").height == 8  # not merged with "7"
    assert scores.filter(pl.col("query_id") == "7").height == 8
    per_query = pl.read_parquet(run.dir / "per_query.parquet")
    assert set(per_query.get_column("query_id")) <= original


# ------------------------------------------------------------------ 6. the split stays with the run
def test_evaluate_with_another_seed_scores_the_runs_own_test_queries(run, tmp_path) -> None:
    test_ids = set(run.split.filter(pl.col("split") == "test").get_column("query_id"))
    trained = set(run.split.filter(pl.col("split") == "train").get_column("query_id"))
    result = run_cli(
        "evaluate",
        f"ckpt_path={run.ckpt}",
        "data=file",
        f"data.path={run.data}",
        "seed=7",
        "data.splits={train: 0.5, val: 0.1, test: 0.4}",
        "baselines=[random]",
        *where(tmp_path, "eval"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the stored split is used" in result.stdout
    scored = set(pl.read_parquet(tmp_path / "eval" / "per_query.parquet").get_column("query_id"))
    assert scored <= test_ids and not scored & trained
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["test"] == pytest.approx(run.metrics["test"])
    assert saved["lists_from_training_split"] == 0


def test_distill_with_another_seed_keeps_the_teachers_split(run, tmp_path) -> None:
    result = run_cli(
        "distill",
        f"teacher_ckpt={run.ckpt}",
        "data=file",
        f"data.path={run.data}",
        "seed=3",
        *[a for a in MODEL if not a.startswith("baselines")],
        "student.bi_encoder.dim=8",
        "teacher_scores.progress=false",
        *where(tmp_path, "student"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    student = pl.read_parquet(tmp_path / "student" / "split.parquet")
    assert student.sort(pl.all()).equals(run.split.sort(pl.all()))


# ------------------------------------------------------------------ 8. the rest, one line each
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["seed=abc"], "error: seed must be an integer, got 'abc'"),
        (["trainer.max_epochs=abc"], "error: trainer.max_epochs must be an integer, got 'abc'"),
        (
            ["tasks.order=[click,click]"],
            "error: tasks.order repeats task(s) ['click'] (['click', 'click']); each task is "
            "scored once",
        ),
        (
            ["data.eval_max_list_size=1"],
            "error: data.eval_max_list_size must be >= 2 or null (whole lists), got 1",
        ),
        (
            ["data.max_length=1000"],
            "error: data.max_length=1000 exceeds the 512 positions of encoder 'tiny_bert' "
            "(max_position_embeddings); use at most 512",
        ),
        (
            ["data.encoding=klingon"],
            "error: data.encoding: unknown text encoding 'klingon'; use e.g. utf8, latin-1 or "
            "cp1252",
        ),
    ],
)
def test_config_errors_are_one_line(run, tmp_path, overrides, expected) -> None:
    result = run_cli("train", *file_args(run.data, *overrides), *where(tmp_path, "r"))
    assert result.one_error() == expected
    assert not (tmp_path / "r" / "config.yaml").exists()  # stopped before any work


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


HEADER = "query_id,query,product_id,product_title,region,click,add_to_cart,purchase\n"


@pytest.mark.parametrize(
    ("content", "extra", "expected"),
    [
        (  # a row with one field too many: polars stops without saying where
            HEADER + "q1,shoes,p1,red shoes,eu,1,0,0\nq1,shoes,p2,blue, shoes,eu,0,0,0\n",
            [],
            "line 3 (data row 1) has 9 field(s), the header has 8; fix or quote that row",
        ),
        (  # a row with one field too few: polars would silently fill it with null
            HEADER + "q1,shoes,p1,red shoes,eu,1,0,0\nq1,shoes,p2,eu,0,0,0\n",
            [],
            "line 3 (data row 1) has 7 field(s), the header has 8; fix or quote that row",
        ),
        (
            HEADER + "q1,\u200b\u200d,p1,red shoes,eu,1,0,0\nq1,\u200b\u200d,p2,blue,eu,0,0,0\n",
            [],
            "column 'query' has 2 empty texts (first at row 0, 1); a value of only spaces or "
            "zero-width characters is empty",
        ),
        (
            "query_id,query,product_id,product_title,region,relevance\n"
            "q1,shoes,p1,red shoes,eu,1000000\nq1,shoes,p2,blue shoes,eu,0\n",
            ["tasks.order=[relevance]"],
            "column 'relevance' has 1 labels outside the allowed range (0 .. 31) (first at row 0)",
        ),
        (
            "query_id,query,product_id,product_title,title,region,click,add_to_cart,purchase\n"
            "q1,shoes,p1,red shoes,x,eu,1,0,0\nq1,shoes,p2,blue shoes,y,eu,0,0,0\n",
            ["data.rename={title: product_title}"],
            "data.rename would give two columns the name 'product_title' (from 'product_title', "
            "'title'); the file already has it: rename or drop one of them",
        ),
    ],
    ids=["long_row", "short_row", "zero_width_query", "unbounded_relevance", "rename_collision"],
)
def test_data_errors_name_the_file_and_row(tmp_path, content, extra, expected) -> None:
    path = _write(tmp_path, "data.csv", content)
    line = run_cli("train", *file_args(path, *extra), *where(tmp_path, "r")).one_error()
    assert line == f"error: {path}: {expected}"


def test_an_empty_string_region_is_named(tmp_path) -> None:
    path = tmp_path / "data.parquet"  # parquet: CSV reads an empty field as missing
    canonical_table(12).with_columns(
        pl.when(pl.col("query_id") == "00003").then(pl.lit("")).otherwise("region").alias("region")
    ).write_parquet(path)
    line = run_cli("train", *file_args(path), *where(tmp_path, "r")).one_error()
    assert line.startswith(f"error: {path}: column 'region' has 8 empty values (first at row ")


def test_a_damaged_token_cache_is_rebuilt_and_said(run, tmp_path) -> None:
    entries = sorted((run.tmp / "cache" / "tokens").glob("*/ids.npy"))
    assert entries, "the run left no token cache"
    for ids in entries:  # flip bytes in place: same size, other tokens
        data = bytearray(ids.read_bytes())
        data[-64:] = bytes(255 - b for b in data[-64:])
        ids.write_bytes(bytes(data))
    result = run_cli(
        "evaluate",
        f"ckpt_path={run.ckpt}",
        "data=file",
        f"data.path={run.data}",
        "baselines=[random]",
        *where(run.tmp, "eval_after_damage"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "is damaged (ids.npy checksum differs): rebuilding it" in result.stdout
    saved = json.loads((run.tmp / "eval_after_damage" / "metrics.json").read_text())
    assert saved["test"] == pytest.approx(run.metrics["test"])
    # Truncated: named by its size.
    for ids in entries:
        ids.write_bytes(ids.read_bytes()[:100])
    result = run_cli(
        "evaluate",
        f"ckpt_path={run.ckpt}",
        "data=file",
        f"data.path={run.data}",
        "baselines=[random]",
        *where(run.tmp, "eval_after_truncation"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(ids.npy has 100 bytes," in result.stdout
    assert os.path.getsize(entries[0]) > 100
