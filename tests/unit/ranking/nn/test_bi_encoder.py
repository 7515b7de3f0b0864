"""Bi-encoder student: scoring, its texts and batches, precomputed product vectors, ONNX parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from data_modules.errors import ConfigError, DataValidationError
from data_modules.student import BiEncoderCollator, StudentDataModule, tokenize_texts
from experiments.workflows.config import build_datamodule, plain, task_list
from ranking.modules.bi_encoder import BiEncoderModule
from ranking.nn.bi_encoder import BiEncoder, bi_encoder_options, score_batch
from ranking.nn.encoders import load_tokenizer
from ranking.serving.onnx_student import OnnxBiEncoder, export_onnx
from ranking.serving.scoring import build_product_index, score_bi_encoder, torch_encoder
from tests.conftest import TINY_ENCODER


def _bert(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=300,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertModel(config, add_pooling_layer=False).eval()


def _ids(n: int, t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 300, (n, t), generator=generator)
    attention = torch.ones_like(ids)
    attention[0, t // 2 :] = 0
    return ids, attention


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_scores_are_per_task_similarities_of_the_two_towers(similarity: str) -> None:
    model = BiEncoder(_bert(), None, 16, num_tasks=3, dim=4, similarity=similarity).eval()
    with torch.no_grad():
        q = model.encode_queries(*_ids(2, 6, 0))
        p = model.encode_products(*_ids(5, 7, 1))
        assert q.shape == (2, 3, 4) and p.shape == (5, 3, 4)
        scores = model.similarity_scores(q[:, None], p[None])  # [2, 5, 3]
    expected = torch.einsum("qkd,pkd->qpk", q, p)
    if similarity == "cosine":
        torch.testing.assert_close(q.norm(dim=-1), torch.ones(2, 3))
        expected = expected / 0.05
    torch.testing.assert_close(scores, expected)
    # Shared encoder: the two towers differ only by their heads.
    assert model.product_encoder is None
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in _bert().parameters()
    ) + 2 * (16 * 12 + 12)


def test_score_batch_encodes_real_items_only_and_zeroes_padding() -> None:
    model = BiEncoder(_bert(), _bert(1), 16, num_tasks=2, dim=4).eval()
    q_ids, q_att = _ids(2, 5, 2)
    p_ids, p_att = _ids(6, 7, 3)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    product_ids = torch.zeros(2, 4, 7, dtype=torch.long)
    product_att = torch.zeros(2, 4, 7, dtype=torch.long)
    product_ids[mask], product_att[mask] = p_ids, p_att
    batch = {
        "query_input_ids": q_ids,
        "query_attention_mask": q_att,
        "product_input_ids": product_ids,
        "product_attention_mask": product_att,
        "mask": mask,
    }
    with torch.no_grad():
        scores = score_batch(model, batch)
        q = model.encode_queries(q_ids, q_att)
        p = model.encode_products(p_ids, p_att)
    assert scores.shape == (2, 4, 2)
    assert (scores[~mask] == 0).all()
    owner = torch.tensor([0, 0, 0, 0, 1, 1])
    torch.testing.assert_close(scores[mask], (q[owner] * p).sum(-1), atol=1e-5, rtol=1e-5)


def test_options_are_checked_with_the_config_key() -> None:
    assert bi_encoder_options(None)["similarity"] == "dot"
    with pytest.raises(ConfigError, match=r"student\.bi_encoder: unknown option"):
        bi_encoder_options({"dimension": 8})
    with pytest.raises(ConfigError, match=r"student\.bi_encoder\.similarity must be one of"):
        bi_encoder_options({"similarity": "l2"})
    with pytest.raises(ConfigError, match=r"student\.bi_encoder\.dim must be >= 1"):
        bi_encoder_options({"dim": 0})


def test_tokenize_texts_is_ragged_and_pads_dynamically(tokenizer) -> None:
    tokens = tokenize_texts(tokenizer, ["red shoes", "a very long blue cotton shirt", "hat"], 6)
    assert len(tokens) == 3
    ids, attention = tokens.pad(np.array([2, 0]), tokenizer.pad_token_id)
    hat = tokenizer("hat")["input_ids"]
    assert ids.shape == (2, 4) and attention.sum(1).tolist() == [len(hat), 4]
    assert ids[0, : len(hat)].tolist() == hat and ids[0, len(hat) :].tolist() == [0]
    assert (tokens.offsets[2] - tokens.offsets[1]) == 6  # truncated to max_length


# ---------------------------------------------------------------------------------------- data
@pytest.fixture
def student_setup(make_cfg):
    cfg = make_cfg()
    datamodule = build_datamodule(
        cfg, load_tokenizer(plain(cfg.encoder)), [t["label"] for t in task_list(cfg)]
    )
    datamodule.setup("fit")
    torch.manual_seed(0)
    student = BiEncoderModule(
        encoder=TINY_ENCODER,
        tasks=task_list(cfg),
        loss={"name": "listnet"},
        bi_encoder={"dim": 8, "query_max_length": 16, "product_max_length": 24},
        region_names=datamodule.region_names,
    ).eval()
    texts = student.build_texts(datamodule)
    return datamodule, student, texts


def test_student_texts_follow_pair_rows(student_setup) -> None:
    datamodule, _, texts = student_setup
    table = datamodule.tables["train"]
    for row in table.head(5).iter_rows(named=True):
        pair = row["__pair"]
        assert texts.query_texts[texts.pair_query[pair]] == f"{row['region']} | {row['query']}"
        assert texts.product_ids[texts.pair_product[pair]] == row["product_id"]
        assert (
            texts.product_texts[texts.pair_product[pair]] == datamodule.pair_texts["product"][pair]
        )
    # Each unique text is tokenised once.
    assert len(texts.queries) == len(set(texts.query_texts)) < len(datamodule.pair_texts)
    assert len(texts.products) == len(set(zip(texts.product_ids, texts.product_texts, strict=True)))


def test_collator_looks_teacher_scores_up_by_pair_row(student_setup) -> None:
    datamodule, student, texts = student_setup
    cache = np.arange(len(datamodule.labels) * 4, dtype=np.float32).reshape(-1, 4)
    data = StudentDataModule(datamodule, texts, student.pad_token_id, cache)
    batch = next(iter(data.train_dataloader()))
    mask, rows = batch["mask"], batch["rows"]
    np.testing.assert_array_equal(batch["teacher_scores"][mask].numpy(), cache[rows[mask].numpy()])
    assert (batch["teacher_scores"][~mask] == 0).all() and (rows[~mask] == -1).all()
    assert batch["product_input_ids"].shape[:2] == mask.shape
    assert batch["query_input_ids"].shape[0] == mask.shape[0]
    np.testing.assert_array_equal(
        batch["labels"][mask].numpy(), datamodule.labels[rows[mask].numpy()]
    )
    assert "teacher_scores" not in next(iter(data.val_dataloader()))

    missing = cache.copy()
    missing[rows[0, 0].item()] = np.nan
    collate = BiEncoderCollator(texts, student.pad_token_id, missing)
    dataset = data.train_dataloader().dataset
    with pytest.raises(DataValidationError, match="teacher scores are missing"):
        collate([dataset[(int(batch["list_index"][0]), 0)]])


def test_precomputed_product_vectors_score_like_the_model(student_setup, tmp_path) -> None:
    datamodule, student, texts = student_setup
    model = student.model
    opts = student.bi_options
    index, reused = build_product_index(
        torch_encoder(model, "product"), texts, student.pad_token_id, tmp_path, "m", batch_size=7
    )
    assert not reused and index.vectors.shape == (len(texts.products), 4, 8)
    again, reused = build_product_index(
        torch_encoder(model, "product"), texts, student.pad_token_id, tmp_path, "m"
    )
    assert reused and again.product_ids == index.product_ids
    np.testing.assert_array_equal(again.vectors, index.vectors)

    rows, scores = score_bi_encoder(
        torch_encoder(model, "query"),
        index,
        texts,
        datamodule,
        "test",
        student.pad_token_id,
        opts["similarity"],
        opts["temperature"],
        batch_size=3,
    )
    loader = StudentDataModule(datamodule, texts, student.pad_token_id).test_dataloader()
    by_row = dict(zip(rows.tolist(), scores, strict=True))
    seen = 0
    with torch.no_grad():
        for batch in loader:
            mask = batch["mask"]
            on_the_fly = student(batch)[mask].numpy()
            precomputed = np.stack([by_row[r] for r in batch["rows"][mask].tolist()])
            np.testing.assert_allclose(precomputed, on_the_fly, rtol=1e-4, atol=1e-5)
            seen += int(mask.sum())
    assert seen == len(rows)


def test_onnx_towers_match_pytorch(tmp_path) -> None:
    model = BiEncoder(_bert(), None, 16, num_tasks=2, dim=4, similarity="cosine", temperature=0.1)
    exported = export_onnx(model, tmp_path)
    assert exported["max_abs_diff"] <= 1e-4
    runtime = OnnxBiEncoder(exported["query"], exported["product"], "cosine", 0.1)
    ids, attention = _ids(4, 11, 7)  # a shape the export never saw
    with torch.no_grad():
        q = model.encode_queries(ids, attention)
        p = model.encode_products(ids, attention)
    np.testing.assert_allclose(runtime.encode_queries(ids.numpy(), attention.numpy()), q, atol=1e-5)
    np.testing.assert_allclose(
        runtime.encode_products(ids.numpy(), attention.numpy()), p, atol=1e-5
    )
