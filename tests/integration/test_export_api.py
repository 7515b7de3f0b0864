"""Export (experiments.export, ranking/serving/export.py) and the Python API (ranking.Ranker).

A smoke-trained single-task cross-encoder exports to a directory that
``sentence_transformers.CrossEncoder`` loads and that scores the data's own pairs as shoprank's
evaluation does (to 1e-4); ``Ranker.from_checkpoint(...).rank(...)`` ranks a test list as the
evaluation scores it. Multi-task, region-masked and student models are built directly (random
weights are enough for parity).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from data_modules.errors import ConfigError
from experiments.workflows.export import export
from experiments.workflows.train import train
from ranking import Ranked, Ranker, TextOptions
from ranking.modules.bi_encoder import BiEncoderModule
from ranking.modules.cross_encoder import RankingModule
from ranking.serving.export import export_model
from ranking.serving.exported import load_exported
from ranking.serving.scoring import score_cross_encoder
from tests.conftest import TINY_ENCODER, compose_config, tiny_overrides

pytest.importorskip("sentence_transformers")
pytest.importorskip("onnxruntime")

TEXT = {"region_in_query": True, "product_text_fields": ["product_title", "product_brand"]}
TASKS = [{"name": "click", "label": "click"}, {"name": "purchase", "label": "purchase"}]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> SimpleNamespace:
    """A single-task (purchase) cross-encoder trained for 2 batches, then exported."""
    root = tmp_path_factory.mktemp("export")
    cfg = compose_config(
        "train", [*tiny_overrides([]), "tasks=purchase", "logger=none"], root / "train"
    )
    metrics, objects = train(cfg)
    ckpt = Path(metrics["best_checkpoint"])
    ecfg = compose_config(
        "export", [f"ckpt_path={ckpt}", f"out={root / 'model'}"], root / "export_job"
    )
    summary = export(ecfg)
    return SimpleNamespace(
        root=root, ckpt=ckpt, out=root / "model", summary=summary, cfg=cfg, **objects
    )


def _test_pairs(run) -> tuple[list[tuple[str, str]], np.ndarray, pl.DataFrame]:
    """The test split's pair texts as the model read them, and the evaluation's scores."""
    datamodule = run.datamodule
    rows, scores = score_cross_encoder(run.module.cpu(), datamodule, "test")
    table = pl.concat(t for t in datamodule.tables.values())
    query_text = table.sort("__pair").select(pl.concat_str(["region", "query"], separator=" | "))
    pairs_all = list(
        zip(
            query_text.to_series().to_list(),
            datamodule.pair_texts.get_column("product").to_list(),
            strict=True,
        )
    )
    return [pairs_all[r] for r in rows], scores, table


def test_single_task_export_is_a_sentence_transformers_cross_encoder(run) -> None:
    from sentence_transformers import CrossEncoder
    from transformers import AutoModel

    assert run.summary["sentence_transformers"] == "."
    assert all(v <= 1e-4 for v in run.summary["checks"].values()), run.summary["checks"]
    pairs, scores, _ = _test_pairs(run)
    model = CrossEncoder(str(run.out), local_files_only=True, device="cpu")
    assert model.max_seq_length == 32  # truncates where training did (encoder.max_length)
    predicted = model.predict(pairs, batch_size=16, show_progress_bar=False)
    assert predicted.shape == (len(pairs),)
    np.testing.assert_allclose(predicted, scores[:, 0], atol=1e-4, rtol=0)
    # The same directory is a plain Hugging Face encoder directory too.
    encoder = AutoModel.from_pretrained(str(run.out), local_files_only=True)
    assert encoder.config.hidden_size == 32
    config = json.loads((run.out / "shoprank.json").read_text())
    assert config["kind"] == "cross_encoder" and config["tasks"] == ["purchase"]
    card = (run.out / "README.md").read_text()
    for section in ("## Data", "## Recipe", "## Metrics", "## Intended use and limits"):
        assert section in card
    assert "| purchase | ndcg@10 |" in card and "[" in card.split("| purchase | ndcg@10 |")[1]
    assert (run.out / "onnx" / "cross_encoder.onnx").is_file()


def test_onnx_cross_encoder_scores_the_test_pairs_like_pytorch(run) -> None:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    pairs, scores, _ = _test_pairs(run)
    tokenizer = AutoTokenizer.from_pretrained(str(run.out / "onnx" / "tokenizer"))
    session = ort.InferenceSession(str(run.out / "onnx" / "cross_encoder.onnx"))
    encoded = tokenizer(
        [q for q, _ in pairs],
        [p for _, p in pairs],
        truncation="longest_first",
        max_length=32,
        padding=True,
        return_tensors="np",
    )
    feeds = {
        "input_ids": encoded["input_ids"].astype(np.int64),
        "attention_mask": encoded["attention_mask"].astype(np.int64),
        "token_type_ids": encoded["token_type_ids"].astype(np.int64),
        "region": np.zeros(len(pairs), np.int64),
    }
    assert [i.name for i in session.get_inputs()] == list(feeds)
    np.testing.assert_allclose(session.run(None, feeds)[0][:, 0], scores[:, 0], atol=1e-4)


def test_ranker_from_checkpoint_ranks_a_test_list_as_the_evaluation_scores_it(run) -> None:
    ranker = Ranker.from_checkpoint(run.ckpt, device="cpu", batch_size=3)
    assert ranker.tasks == ["purchase"] and ranker.kind == "cross_encoder"
    assert ranker.text.product_text_fields == tuple(run.cfg.data.product_text_fields)
    _, scores, table = _test_pairs(run)
    rows, _ = score_cross_encoder(run.module, run.datamodule, "test")
    by_row = dict(zip(rows.tolist(), scores[:, 0].tolist(), strict=True))
    query_id = run.datamodule.lists["test"].query_ids[0]
    items = table.filter(pl.col("query_id") == query_id)
    products = items.select(*run.cfg.data.product_text_fields).to_dicts()
    region, query = items["region"][0], items["query"][0]
    got = ranker.score(query, products, region=region)["purchase"]
    want = np.array([by_row[r] for r in items["__pair"].to_list()])
    np.testing.assert_allclose(got, want, atol=1e-5)
    ranked = ranker.rank(query, products, region=region, top_k=3)
    assert all(isinstance(r, Ranked) for r in ranked) and len(ranked) == 3
    assert [r.index for r in ranked] == np.argsort(-want, kind="stable")[:3].tolist()
    assert ranked[0].product == products[ranked[0].index]
    # The exported directory gives the same scores; Ranker.load picks the loader.
    again = Ranker.load(run.out, device="cpu")
    np.testing.assert_allclose(again.score(query, products, region)["purchase"], got, atol=1e-6)
    # The model reads the region in its query text and knows 3: it must be given.
    with pytest.raises(ConfigError, match="pass region="):
        ranker.score(query, products)


def test_export_never_writes_over_a_directory(run, tmp_path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        export_model(run.module, tmp_path / "taken", TEXT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no staging left behind


def test_multi_task_region_masked_seq_model_exports_with_its_loader(tmp_path) -> None:
    torch.manual_seed(0)
    module = RankingModule(
        encoder=TINY_ENCODER,
        tasks=TASKS,
        loss={"name": "listnet"},
        tower={"name": "seq", "state_dim": 8, "hidden_dims": [], "dropout": 0.0},
        region_mask={"name": "feature", "region_embedding_dim": 4, "gate_hidden": 8},
        region_names=["eu", "na"],
    ).eval()
    summary = export_model(module, tmp_path / "m", TEXT)
    assert summary["sentence_transformers"].startswith("not written: a region-masked model")
    assert not (tmp_path / "m" / "modules.json").exists()
    assert summary["checks"]["onnx"] <= 1e-4 and summary["checks"]["reload"] <= 1e-6
    assert summary["onnx"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids", "region"]
    loaded, text = load_exported(tmp_path / "m")
    assert text == TEXT and isinstance(loaded, RankingModule)
    products = ["Nike Air ; Nike", "Wool hat ; Acme", "Garden hose ; Flexzilla"]
    a = Ranker(module, TextOptions(**TEXT), device="cpu")
    b = Ranker.from_pretrained(tmp_path / "m", device="cpu")
    for region in ("eu", "na"):
        np.testing.assert_allclose(
            b.score("red shoes", products, region)["click"],
            a.score("red shoes", products, region)["click"],
            atol=1e-6,
        )
    # The region changes a masked model's scores, and an unknown one is refused.
    assert not np.allclose(
        a.score("x", products, "eu")["purchase"], a.score("x", products, "na")["purchase"]
    )
    with pytest.raises(ConfigError, match="'apac' was not in the training data"):
        a.score("red shoes", products, region="apac")


def test_multi_task_linear_heads_are_one_cross_encoder_with_k_outputs(tmp_path) -> None:
    from sentence_transformers import CrossEncoder

    torch.manual_seed(1)
    module = RankingModule(
        encoder=TINY_ENCODER, tasks=TASKS, loss={"name": "listnet"}, region_names=["all"]
    ).eval()
    summary = export_model(module, tmp_path / "m", TEXT, onnx=False)
    assert summary["sentence_transformers"] == "." and "onnx" not in summary["checks"]
    pairs = [("all | red shoes", "Nike Air ; Nike"), ("all | hat", "Wool hat ; Acme")]
    got = CrossEncoder(str(tmp_path / "m"), local_files_only=True).predict(pairs)
    want = Ranker(module, TextOptions(**TEXT), device="cpu").score_pairs(pairs)
    assert got.shape == (2, 2)
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(
            {"similarity": "cosine", "shared_encoder": False, "pooling": "mean"},
            marks=pytest.mark.slow,  # ~20 s: two encoders per route
        ),
        {"similarity": "dot", "shared_encoder": True, "pooling": "cls"},
    ],
)
def test_student_exports_one_sentence_transformer_per_task(tmp_path, options) -> None:
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(2)
    module = BiEncoderModule(
        encoder=TINY_ENCODER,
        tasks=TASKS,
        loss={"name": "listnet"},
        bi_encoder={**options, "dim": 8, "query_max_length": 16, "product_max_length": 24},
        region_names=["eu", "na"],
    ).eval()
    summary = export_model(module, tmp_path / "s", TEXT)
    assert set(summary["sentence_transformers"]) == {"click", "purchase"}
    assert all(v <= 1e-4 for v in summary["checks"].values()), summary["checks"]
    ranker = Ranker(module, TextOptions(**TEXT), device="cpu")
    products = ["Nike Air ; Nike", "Wool hat ; Acme", "Garden hose ; Flexzilla ; green"]
    want = ranker.score("red shoes", products, region="na")["purchase"]
    model = SentenceTransformer(str(tmp_path / "s" / "sentence_transformers" / "purchase"))
    scores = model.similarity(
        model.encode_query(["na | red shoes"]), model.encode_document(products)
    ).numpy()[0]
    if options["similarity"] == "cosine":
        scores = scores / module.bi_options["temperature"]  # shoprank's cos / tau
    np.testing.assert_allclose(scores, want, atol=1e-4)
    again = Ranker.from_pretrained(tmp_path / "s", device="cpu")
    np.testing.assert_allclose(
        again.score("red shoes", products, "na")["purchase"], want, atol=1e-6
    )
    assert (tmp_path / "s" / "onnx" / "query_encoder.onnx").is_file()


def test_ranker_input_errors_are_one_line(run) -> None:
    ranker = Ranker.from_checkpoint(run.ckpt, device="cpu")
    with pytest.raises(Exception, match="products must be a list"):
        ranker.score("q", "one product", region="eu")
    with pytest.raises(Exception, match="give all texts"):
        ranker.score("q", ["a", {"product_title": "b"}], region="eu")
    with pytest.raises(ConfigError, match="unknown task 'click'"):
        ranker.rank("q", ["a"], region="eu", task="click")
    assert ranker.score("q", [], region="eu")["purchase"].shape == (0,)
