"""Any Hugging Face encoder trains and scores: RoBERTa (BPE vocab.json + merges.txt, one segment
embedding) and DistilBERT (no token_type_ids) built tiny in the test (tests/tiny_encoders.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.workflows.train import train
from ranking.nn.cross_encoder import accepts_token_type_ids
from ranking.nn.encoders import load_encoder_model, load_tokenizer
from tests.tiny_encoders import KINDS, build


@pytest.fixture(scope="module")
def encoder_dirs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("encoders")
    return {kind: build(kind, root / kind) for kind in KINDS}


def test_roberta_bpe_tokenizer_without_tokenizer_json_or_vocab_txt_loads(encoder_dirs) -> None:
    path = encoder_dirs["roberta"]
    assert sorted(p.name for p in path.iterdir() if p.suffix in (".json", ".txt")) == [
        "config.json",
        "merges.txt",
        "vocab.json",
    ]
    tokenizer = load_tokenizer({"source": "path", "path": str(path)})
    ids = tokenizer("red shoes", "nike red running shoe")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    (path / "merges.txt").rename(path / "merges.bak")
    try:
        with pytest.raises(Exception, match=r"merges\.txt"):
            load_tokenizer({"source": "path", "path": str(path)})
    finally:
        (path / "merges.bak").rename(path / "merges.txt")


@pytest.mark.parametrize(("kind", "segments"), [("roberta", False), ("distilbert", False)])
def test_segment_ids_go_only_to_encoders_that_take_them(encoder_dirs, kind, segments) -> None:
    spec = {"source": "path", "path": str(encoder_dirs[kind])}
    model = load_encoder_model(spec, vocab_size=len(load_tokenizer(spec)))
    assert accepts_token_type_ids(model) is segments
    bert = load_encoder_model(
        {
            "source": "random",
            "architecture": {
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 32,
            },
        },
        30522,
    )
    assert accepts_token_type_ids(bert) is True


@pytest.mark.parametrize("kind", KINDS)
def test_cross_encoder_trains_and_tests_on_any_encoder(make_cfg, encoder_dirs, kind) -> None:
    cfg = make_cfg(
        "encoder=local",
        f"encoder.path={encoder_dirs[kind]}",
        "encoder.max_length=32",
        "trainer.fast_dev_run=true",
        "callbacks=none",
        "logger=none",
    )
    metrics, objects = train(cfg)
    assert 0.0 <= metrics["test"]["test/purchase/ndcg@10"] <= 1.0
    module, datamodule = objects["module"], objects["datamodule"]
    batch = next(iter(datamodule.eval_dataloader("test")))
    # The BERT tokenizer of the DistilBERT model gives segment ids 0/1, which its forward does
    # not take (a TypeError before); RoBERTa's tokenizer gives zeros only.
    assert int(batch["token_type_ids"].max()) == (0 if kind == "roberta" else 1)
    with torch.no_grad():
        scores = module.eval()(batch)
    assert torch.isfinite(scores).all() and scores[batch["mask"]].std() > 0


@pytest.mark.parametrize("kind", ["roberta", pytest.param("distilbert", marks=pytest.mark.slow)])
def test_any_encoder_exports_to_sentence_transformers_and_onnx(encoder_dirs, kind, tmp_path):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import CrossEncoder

    from ranking import Ranker, TextOptions
    from ranking.modules.cross_encoder import RankingModule
    from ranking.serving.export import export_model

    torch.manual_seed(0)
    spec = {"source": "path", "path": str(encoder_dirs[kind]), "pooling": "cls", "max_length": 24}
    module = RankingModule(
        encoder=spec,
        tasks=[{"name": "click", "label": "click"}],
        loss={"name": "listnet"},
        region_names=["all"],
    ).eval()
    text = {"region_in_query": False, "product_text_fields": ["product_title"]}
    summary = export_model(module, tmp_path / "m", text)
    assert summary["checks"]["sentence_transformers"] <= 1e-4
    assert summary["checks"]["onnx"] <= 1e-4
    assert "token_type_ids" not in summary["onnx"]["inputs"]
    pairs = [("red shoes", "nike red running shoe"), ("hat", "a blue wool hat " * 20)]
    want = Ranker(module, TextOptions(**text), device="cpu").score_pairs(pairs)[:, 0]
    got = CrossEncoder(str(tmp_path / "m"), local_files_only=True).predict(pairs)
    np.testing.assert_allclose(got, want, atol=1e-4)
