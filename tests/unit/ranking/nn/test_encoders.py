"""Encoders load from local files only and fail clearly when files are missing."""

from __future__ import annotations

import shutil

import pytest
import torch

from data_modules.errors import ConfigError, EncoderLoadError
from ranking.nn.cross_encoder import CrossEncoder, score_lists
from ranking.nn.encoders import load_encoder_model, load_tokenizer, minilm_package_dir, pool

TINY = {
    "source": "random",
    "architecture": {
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
    },
}


def test_minilm_loads_offline_from_the_package(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = {"source": "package"}
    tokenizer = load_tokenizer(spec)
    model = load_encoder_model(spec, vocab_size=len(tokenizer))
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(22.7e6, rel=0.01)
    # Returned in train mode: fine-tuning keeps the checkpoint's dropout.
    assert model.training and all(m.training for m in model.modules())


def test_tiny_bert_uses_a_real_wordpiece_vocabulary() -> None:
    tokenizer = load_tokenizer(TINY)
    assert len(tokenizer) == 30522
    assert tokenizer.tokenize("trailblazer") == ["trail", "##bla", "##zer"]


def test_missing_directory_is_named(tmp_path) -> None:
    with pytest.raises(EncoderLoadError, match=r"does not exist"):
        load_tokenizer({"source": "path", "path": str(tmp_path / "nope")})


def test_incomplete_directory_names_missing_files(tmp_path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(minilm_package_dir(), model_dir)
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(EncoderLoadError, match=r"missing model\.safetensors or pytorch_model\.bin"):
        load_encoder_model({"source": "path", "path": str(model_dir)}, vocab_size=30522)


def test_path_source_without_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"encoder\.path"):
        load_tokenizer({"source": "path"})


def test_unknown_source_is_named() -> None:
    with pytest.raises(ConfigError, match="'hub'"):
        load_tokenizer({"source": "hub"})


def test_pooling() -> None:
    hidden = torch.arange(12.0).reshape(1, 3, 4)
    attention = torch.tensor([[1, 1, 0]])
    assert torch.equal(pool(hidden, attention, "cls"), hidden[:, 0])
    assert torch.equal(pool(hidden, attention, "mean"), hidden[:, :2].mean(1))
    with pytest.raises(ConfigError, match="pooling"):
        pool(hidden, attention, "max")


def test_score_lists_ignores_padding_and_matches_per_item_scoring() -> None:
    from ranking.nn.towers import build_tower

    torch.manual_seed(0)
    tokenizer = load_tokenizer(TINY)
    encoder = load_encoder_model(TINY, len(tokenizer))
    tower = build_tower("shared_bottom", hidden_size=16, num_tasks=2, num_regions=2, hidden_dims=[])
    scorer = CrossEncoder(encoder, tower).eval()
    enc = tokenizer(
        ["red shoes", "red shoes", "bag"],
        ["red shoe", "a much longer title here", "tote"],
        padding=True,
        return_tensors="pt",
    )
    B, L, T = 2, 2, enc["input_ids"].shape[1] + 3  # extra token padding must not matter
    batch = {
        k: torch.zeros((B, L, T), dtype=torch.long)
        for k in ("input_ids", "attention_mask", "token_type_ids")
    }
    for (b, i), row in zip([(0, 0), (0, 1), (1, 0)], range(3), strict=True):
        for k in batch:
            batch[k][b, i, : enc[k].shape[1]] = enc[k][row]
    batch["mask"] = torch.tensor([[True, True], [True, False]])
    with torch.no_grad():
        scores, aux = score_lists(scorer, batch, region=torch.tensor([0, 1]))
        direct = scorer(
            enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], torch.tensor([0, 0, 1])
        ).scores
    assert scores.shape == (2, 2, 2) and float(aux) == 0.0
    torch.testing.assert_close(scores[batch["mask"]], direct, atol=1e-5, rtol=1e-5)
    assert torch.equal(scores[1, 1], torch.zeros(2))


def _module(region_mask):
    from ranking.modules.cross_encoder import RankingModule

    return RankingModule(
        encoder=TINY,
        tasks=[{"name": "purchase", "label": "purchase"}],
        loss={"name": "listnet"},
        region_mask=region_mask,
        region_names=["eu", "na"],
    )


def test_unseen_region_is_refused_by_a_region_masked_model() -> None:
    from data_modules.errors import DataValidationError

    module = _module({"name": "feature"})
    with pytest.raises(DataValidationError, match=r"\['jp'\] were not in the training data"):
        module.use_data_regions(["eu", "jp"])


def test_unseen_region_falls_back_to_region_zero_without_a_mask() -> None:
    module = _module(None)
    module.use_data_regions(["na", "jp", "eu"])
    assert module.region_lookup.tolist() == [1, 0, 0]


def test_matching_attention_init_ties_and_scales_query_and_key() -> None:
    torch.manual_seed(0)
    plain = load_encoder_model(TINY, vocab_size=100)
    torch.manual_seed(0)
    tied = load_encoder_model({**TINY, "matching_init_scale": 5.0}, vocab_size=100)
    attn, plain_attn = tied.encoder.layer[0].attention.self, plain.encoder.layer[0].attention.self
    assert torch.equal(attn.key.weight, attn.query.weight)
    torch.testing.assert_close(attn.query.weight, 5.0 * plain_attn.query.weight)


def _copy_attention_ratio(spec: dict, seed: int) -> float:
    """Mean layer-0 attention from each product word to its copy in the query, over the mean
    attention to the other query words (8 distinct words, the product side reversed)."""
    words = ["red", "backpack", "jacket", "coffee", "maker", "blue", "shoes", "denim"]
    tokenizer = load_tokenizer(spec)
    enc = tokenizer(" ".join(words), " ".join(reversed(words)), return_tensors="pt")
    n = len(words)
    assert enc["input_ids"].shape[1] == 2 * n + 3  # every word is one WordPiece
    torch.manual_seed(seed)
    model = load_encoder_model(spec, vocab_size=len(tokenizer)).eval()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        probs = model(**enc, output_attentions=True).attentions[0][0].mean(0)  # [T, T]
    query, product = range(1, n + 1), range(n + 2, 2 * n + 2)
    copy = [probs[product[i], query[n - 1 - i]] for i in range(n)]
    other = [probs[product[i], query[j]] for i in range(n) for j in range(n) if j != n - 1 - i]
    return float(torch.stack(copy).mean() / torch.stack(other).mean())


def test_matching_attention_init_makes_product_words_attend_to_their_query_copies() -> None:
    arch = {
        "hidden_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 256,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    plain = {"source": "random", "architecture": arch}
    tied = {**plain, "matching_init_scale": 5.0}
    for seed in range(3):
        assert 0.8 < _copy_attention_ratio(plain, seed) < 1.25  # no preference at random init
        assert _copy_attention_ratio(tied, seed) > 3.0  # a clear preference for the copy


def test_a_local_encoder_with_a_pickle_payload_is_refused_unrun(tmp_path) -> None:
    """``encoder=local``: transformers reads ``pytorch_model.bin`` with weights_only=True."""
    from transformers import BertConfig

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    folder = tmp_path / "enc"
    folder.mkdir()
    BertConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    ).save_pretrained(folder)
    shutil.copy(minilm_package_dir() / "vocab.txt", folder / "vocab.txt")
    torch.save({"embeddings.word_embeddings.weight": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(EncoderLoadError, match=r"^encoder \(path\): refused the weights in"):
        load_encoder_model({"source": "path", "path": str(folder)}, vocab_size=30522)
    assert not marker.exists()
