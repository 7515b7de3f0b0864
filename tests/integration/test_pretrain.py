"""Domain-adaptive pretraining: corpus, masking, saved directory, fine-tuning from it, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from data_modules.corpus import (
    build_corpus,
    fixed_masked_batches,
    split_corpus,
    tokenize_corpus,
    train_wordpiece,
)
from data_modules.errors import ConfigError, DataValidationError
from experiments.workflows.pretrain import _trainer_options, pretrain
from experiments.workflows.train import train
from ranking.modules.masked_lm import PretrainOptions, build_mlm_model, masked_lm_loss
from ranking.nn.encoders import load_encoder_model, load_tokenizer
from ranking.nn.precision import resolve_precision

# A 1-layer, 32-wide encoder on ~100 synthetic products: one epoch of 3-4 optimiser steps.
TINY_PRETRAIN = [
    "data.generator.num_products=120",
    "data.generator.num_queries=45",
    "data.generator.list_size=8",
    "encoder.max_length=32",
    "encoder.architecture.hidden_size=32",
    "encoder.architecture.intermediate_size=64",
    "encoder.architecture.num_hidden_layers=1",
    "pretrain.epochs=1",
    "pretrain.batch_size=32",
    "pretrain.val_fraction=0.2",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
]


def _table() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "query_id": ["q1", "q1", "q2", "q2"],
            "query": ["red shoes", "red shoes", "blue bag", "blue bag"],
            "product_id": ["p1", "p2", "p3", "p1"],
            "product_title": ["Red shoe", "Green hat", "Blue bag", "Red shoe"],
            "product_description": ["Leather.", None, "Roomy.", "Leather."],
            "region": ["us", "us", "de", "de"],
        }
    )


# ------------------------------------------------------------------------------------ corpus
def test_corpus_one_text_per_product_then_distinct_queries() -> None:
    corpus = build_corpus(_table(), "t.parquet", ["product_title", "product_description"], True)
    assert corpus.texts == [
        "Red shoe ; Leather.",
        "Green hat",  # a null description is left out, not joined as ""
        "Blue bag ; Roomy.",
        "red shoes",
        "blue bag",
    ]
    assert (corpus.products, corpus.queries) == (3, 2)
    no_queries = build_corpus(_table(), "t.parquet", ["product_title"], False)
    assert no_queries.texts == ["Red shoe", "Green hat", "Blue bag"]


def test_corpus_skips_an_absent_optional_column_and_rejects_an_unknown_one() -> None:
    table = _table().drop("product_description")
    corpus = build_corpus(table, "t.parquet", ["product_title", "product_description"], False)
    assert corpus.texts == ["Red shoe", "Green hat", "Blue bag"]
    with pytest.raises(DataValidationError, match=r"t\.parquet: .*'product_titel'"):
        build_corpus(table, "t.parquet", ["product_titel"], False)


def test_corpus_errors_name_file_column_and_rows() -> None:
    with pytest.raises(DataValidationError, match=r"t\.parquet: the table has no rows"):
        build_corpus(_table().clear(), "t.parquet", ["product_title"], False)
    with pytest.raises(DataValidationError, match="missing required column 'product_title'"):
        build_corpus(_table().drop("product_title"), "t.parquet", ["product_title"], False)
    bad = _table().with_columns(pl.Series("product_title", ["a", " ", "c", None]))
    with pytest.raises(DataValidationError, match=r"'product_title' is empty .* rows \[1, 3\]"):
        build_corpus(bad, "t.parquet", ["product_title"], False)


def test_split_is_seeded_disjoint_and_keeps_every_text() -> None:
    texts = [f"text {i}" for i in range(20)]
    train_a, val_a = split_corpus(texts, 0.25, seed=3)
    train_b, val_b = split_corpus(texts, 0.25, seed=3)
    assert (train_a, val_a) == (train_b, val_b)
    assert len(val_a) == 5 and sorted(train_a + val_a) == sorted(texts)
    assert split_corpus(texts, 0.0, seed=3) == (texts, [])
    with pytest.raises(DataValidationError, match="too few to hold out"):
        split_corpus(["only one"], 0.1, seed=0)


def test_options_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"pretrain has unknown key\(s\) \['epoch'\]"):
        PretrainOptions.from_mapping({"epoch": 3})
    with pytest.raises(ConfigError, match=r"pretrain\.mlm_probability must be in \(0, 1\)"):
        PretrainOptions.from_mapping({"mlm_probability": 1.5})


# ------------------------------------------------------------------------------ masking, loss
def test_fast_mlm_loss_equals_the_hugging_face_loss(tokenizer) -> None:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    model = BertForMaskedLM(config).eval()
    features = tokenize_corpus(tokenizer, ["red running shoes", "a blue leather bag"], 16, False)
    opts = PretrainOptions(mlm_probability=0.5, batch_size=2)
    batch = fixed_masked_batches(features, tokenizer, opts, seed=0)[0]
    with torch.no_grad():
        expected = model(**batch).loss
        torch.testing.assert_close(masked_lm_loss(model, batch), expected)
        # No masked token: zero loss (and zero weight in the epoch means), not NaN.
        unmasked = {**batch, "labels": torch.full_like(batch["labels"], -100)}
        assert masked_lm_loss(model, unmasked).item() == 0.0


def test_val_masks_are_fixed_by_the_seed(tokenizer) -> None:
    texts = [f"red running shoes size {i}" for i in range(6)]
    features = tokenize_corpus(tokenizer, texts, 16, False)
    opts = PretrainOptions(batch_size=4)
    first = fixed_masked_batches(features, tokenizer, opts, seed=5)
    again = fixed_masked_batches(features, tokenizer, opts, seed=5)
    other = fixed_masked_batches(features, tokenizer, opts, seed=6)
    assert [b["input_ids"].shape[0] for b in first] == [4, 2]
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not all(torch.equal(a["labels"], b["labels"]) for a, b in zip(first, other, strict=True))
    # Special tokens and padding are never chosen.
    for batch in first:
        chosen = batch["labels"] != -100
        assert not chosen[:, 0].any()
        assert not (chosen & (batch["attention_mask"] == 0)).any()


def test_whole_word_masking_masks_every_piece_of_a_chosen_word(tokenizer) -> None:
    text = "unbelievably waterproof headphones by kumarasamy"  # several multi-piece words
    features = tokenize_corpus(tokenizer, [text] * 8, 24, whole_word=True)
    opts = PretrainOptions(whole_word_mask=True, mlm_probability=0.4, batch_size=8)
    batch = fixed_masked_batches(features, tokenizer, opts, seed=0)[0]
    pieces = tokenizer.convert_ids_to_tokens(features[0]["input_ids"])
    word_of, word = [], -1
    for piece in pieces:
        word += 0 if piece.startswith("##") else 1
        word_of.append(word)
    chosen = (batch["labels"] != -100).tolist()
    assert any(any(row) for row in chosen)
    for row in chosen:
        for w in set(word_of):
            marks = {row[i] for i, v in enumerate(word_of) if v == w}
            assert len(marks) == 1, f"word {w} partly masked: {pieces}"


# --------------------------------------------------------------------------- end to end
def test_pretrain_saves_a_directory_that_fine_tuning_loads(make_cfg, tmp_path) -> None:
    save_dir = tmp_path / "encoder"
    cfg = make_cfg(
        *TINY_PRETRAIN,
        "pretrain.train_tokenizer=true",
        "pretrain.vocab_size=150",
        "pretrain.include_queries=true",
        f"pretrain.save_dir={save_dir}",
        config="pretrain",
    )
    metrics, objects = pretrain(cfg)
    out = Path(cfg.paths.output_dir)

    # A WordPiece vocabulary of the configured size, saved and reloaded through the encoder spec.
    spec = {"source": "path", "path": str(save_dir)}
    assert metrics["tokenizer"] == {"trained": True, "vocab_size": 150, "requested_vocab_size": 150}
    assert len(load_tokenizer(spec)) == 150
    assert json.loads((save_dir / "config.json").read_text())["vocab_size"] == 150
    assert (save_dir / "model.safetensors").is_file()

    # The encoder `encoder=local` builds holds exactly the trained weights.
    trained = objects["module"].model.bert.state_dict()
    loaded = load_encoder_model(spec, vocab_size=150).state_dict()
    assert trained.keys() <= loaded.keys()
    for name, value in trained.items():
        assert torch.equal(loaded[name], value), name

    # The directory also continues pretraining: the masked-LM model, head included, comes back.
    reloaded = build_mlm_model(spec, objects["tokenizer"]).state_dict()
    for name, value in objects["module"].model.state_dict().items():
        assert torch.equal(reloaded[name], value), name

    # Validation masks are fixed: the pass at the end of the epoch, the pass after fit and two
    # more passes all give the same loss, exactly.
    trainer, module, loader = objects["trainer"], objects["module"], objects["val_loader"]
    first = trainer.validate(module, loader, verbose=False)[0]["val/mlm_loss"]
    second = trainer.validate(module, loader, verbose=False)[0]["val/mlm_loss"]
    assert first == second == metrics["val/mlm_loss"] == metrics["epochs"][0]["val/mlm_loss"]

    # Outputs: metrics, per-step loss CSV, loss curve.
    saved = json.loads((out / "pretrain_metrics.json").read_text())
    corpus = saved["corpus"]
    assert corpus["queries"] > 0
    assert corpus["train_texts"] + corpus["val_texts"] == corpus["texts"]
    assert corpus["val_texts"] == round(0.2 * corpus["texts"])
    steps_per_epoch = math.ceil(corpus["train_texts"] / 32)
    assert saved["steps"] == steps_per_epoch
    assert [sorted(e) for e in saved["epochs"]] == [["epoch", "train/mlm_loss", "val/mlm_loss"]]
    steps = pl.read_csv(out / "csv" / "metrics.csv").filter(pl.col("train/mlm_loss").is_not_null())
    assert steps["step"].to_list() == list(range(steps_per_epoch))
    assert (out / "mlm_loss.png").stat().st_size > 0

    # A few fine-tuning steps from the saved directory through the ranking pipeline.
    ft_cfg = make_cfg(
        "encoder=local",
        f"encoder.path={save_dir}",
        "encoder.max_length=32",
        "trainer.fast_dev_run=true",
        "callbacks=none",
        "logger=none",
    )
    ft_cfg.paths.output_dir = str(tmp_path / "fine_tune")  # a run of its own
    ft_metrics, ft_objects = train(ft_cfg)
    assert ft_objects["trainer"].state.finished
    assert "test/purchase/ndcg@10" in ft_metrics["test"]
    assert ft_objects["module"].model.encoder.config.vocab_size == 150


def test_pretrain_from_the_stock_vocabulary_without_validation(make_cfg, tmp_path) -> None:
    cfg = make_cfg(
        *TINY_PRETRAIN,
        "pretrain.val_fraction=0",
        "pretrain.max_steps=1",  # stops inside the first epoch
        f"pretrain.save_dir={tmp_path / 'enc'}",
        config="pretrain",
    )
    metrics, _ = pretrain(cfg)
    assert metrics["val/mlm_loss"] is None and metrics["val/mlm_loss_initial"] is None
    assert metrics["tokenizer"] == {"trained": False, "vocab_size": 30522}
    assert len(load_tokenizer({"source": "path", "path": str(tmp_path / "enc")})) == 30522


# -------------------------------------------------------------------------------- errors
def test_tokenizer_training_with_pretrained_weights_fails_before_loading_data(
    make_cfg, tmp_path
) -> None:
    cfg = make_cfg(
        "encoder=minilm_l6",
        "pretrain.train_tokenizer=true",
        "data=file",
        f"data.path={tmp_path / 'never_read.parquet'}",
        config="pretrain",
    )
    with pytest.raises(ConfigError, match=r"train_tokenizer=true needs a randomly initialised"):
        pretrain(cfg)


def test_empty_corpus_fails_with_the_file_name(make_cfg, tmp_path) -> None:
    path = tmp_path / "empty.parquet"
    _table().clear().write_parquet(path)
    cfg = make_cfg(*TINY_PRETRAIN[3:], "data=file", f"data.path={path}", config="pretrain")
    with pytest.raises(DataValidationError, match=r"empty\.parquet: the table has no rows"):
        pretrain(cfg)


def test_existing_save_dir_is_not_overwritten(make_cfg, tmp_path) -> None:
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "config.json").write_text("{}")
    cfg = make_cfg(*TINY_PRETRAIN, f"pretrain.save_dir={tmp_path / 'enc'}", config="pretrain")
    with pytest.raises(ConfigError, match=r"pretrain\.save_dir: .* already holds files"):
        pretrain(cfg)


def test_wordpiece_encodes_pairs_with_segment_ids() -> None:
    tok = train_wordpiece(["red running shoes", "blue leather bag"] * 5, vocab_size=60)
    encoded = tok("red shoes", "blue bag")
    tokens = tok.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and tokens[-1] == "[SEP]"
    first_sep = tokens.index("[SEP]")
    assert encoded["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(tokens) - first_sep - 1)
    assert tok.mask_token == "[MASK]" and tok.pad_token_id == 0


def test_trainer_keys_are_trainings_names_and_the_rest_is_refused(make_cfg) -> None:
    cfg = make_cfg(*TINY_PRETRAIN, config="pretrain")
    assert _trainer_options(cfg) == {
        "accelerator": "cpu",
        "precision": resolve_precision("auto", "cpu")[0],
        "enable_progress_bar": False,
    }
    typo = make_cfg(*TINY_PRETRAIN, "+trainer.max_epochs=3", config="pretrain")
    with pytest.raises(ConfigError, match=r"trainer has unknown key\(s\) \['max_epochs'\]"):
        _trainer_options(typo)
    many = make_cfg(*TINY_PRETRAIN, "trainer.devices=2", config="pretrain")
    with pytest.raises(ConfigError, match=r"trainer\.devices must be 1, got 2"):
        _trainer_options(many)
