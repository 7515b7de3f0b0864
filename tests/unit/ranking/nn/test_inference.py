"""Fast cross-encoder inference: every mode scores like float32 PyTorch, in the input's order,
and the ranking module uses it for test and predict only."""

from __future__ import annotations

import pytest
import torch

from data_modules.errors import ConfigError
from ranking.nn import inference
from ranking.nn.cross_encoder import CrossEncoder, score_lists
from ranking.nn.encoders import load_encoder_model, load_tokenizer
from ranking.nn.inference import FastCrossEncoder, resolve_mode
from ranking.nn.towers import build_tower

TINY = {
    "source": "random",
    "max_length": 32,
    "architecture": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    },
}
QUERIES = ["red shoes", "bag", "blue running shoes for men", "tote", "lamp", "oak table"]
TITLES = [
    "red shoe",
    "a much longer product title with many words in it",
    "running shoe",
    "canvas tote bag",
    "desk lamp with a long cable and a switch",
    "table",
]


@pytest.fixture(scope="module")
def scorer() -> CrossEncoder:
    torch.manual_seed(0)
    tokenizer = load_tokenizer(TINY)
    encoder = load_encoder_model(TINY, len(tokenizer))
    tower = build_tower("shared_bottom", hidden_size=32, num_tasks=2, num_regions=2, hidden_dims=[])
    return CrossEncoder(encoder, tower).eval()


@pytest.fixture(scope="module")
def pairs() -> dict[str, torch.Tensor]:
    tokens = load_tokenizer(TINY)(QUERIES, TITLES, padding=True, return_tensors="pt")
    lengths = tokens["attention_mask"].sum(-1)
    assert len(set(lengths.tolist())) > 3  # lengths differ: sorting and chunking matter
    return {**tokens, "region": torch.tensor([0, 1, 0, 1, 0, 1])}


def _reference(scorer: CrossEncoder, pairs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return scorer(
            pairs["input_ids"], pairs["attention_mask"], pairs["token_type_ids"], pairs["region"]
        ).scores


def _fast(fast: FastCrossEncoder, pairs: dict[str, torch.Tensor]) -> torch.Tensor:
    return fast(
        pairs["input_ids"], pairs["attention_mask"], pairs["token_type_ids"], pairs["region"]
    ).scores


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_fp32_chunks_keep_values_and_order(scorer, pairs, chunk: int) -> None:
    got = _fast(FastCrossEncoder(scorer, "fp32", chunk_size=chunk), pairs)
    torch.testing.assert_close(got, _reference(scorer, pairs), atol=1e-5, rtol=1e-5)


def test_int8_is_close_and_leaves_the_model_alone(scorer, pairs) -> None:
    before = {k: v.clone() for k, v in scorer.state_dict().items()}
    fast = FastCrossEncoder(scorer, "int8", chunk_size=4)
    got, want = _fast(fast, pairs), _reference(scorer, pairs)
    assert fast.mode == "int8"
    assert not torch.allclose(got, want)  # it really is quantised
    torch.testing.assert_close(got, want, atol=0.05 * float(want.abs().max()), rtol=0.0)
    assert all(torch.equal(before[k], v) for k, v in scorer.state_dict().items())


def test_bf16_mode_runs_autocast_or_falls_back(scorer, pairs, monkeypatch) -> None:
    monkeypatch.setattr(inference, "cpu_supports_bf16", lambda: False)
    assert FastCrossEncoder(scorer, "bf16").mode == "fp32"
    monkeypatch.setattr(inference, "cpu_supports_bf16", lambda: True)
    fast = FastCrossEncoder(scorer, "bf16", chunk_size=4)
    got, want = _fast(fast, pairs), _reference(scorer, pairs)
    assert fast.mode == "bf16" and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0.05 * float(want.abs().max()), rtol=0.0)


def test_onnx_matches_pytorch(scorer, pairs) -> None:
    pytest.importorskip("onnxruntime")
    got = _fast(FastCrossEncoder(scorer, "onnx", chunk_size=4), pairs)
    torch.testing.assert_close(got, _reference(scorer, pairs), atol=1e-4, rtol=1e-4)


def test_resolve_mode() -> None:
    assert resolve_mode("auto", "cpu") == inference.AUTO_MODE
    assert resolve_mode("auto", "cpu", hidden_size=384) == inference.AUTO_MODE  # MiniLM
    assert resolve_mode("auto", "cpu", hidden_size=128) == "fp32"  # tiny_bert
    assert resolve_mode("auto", "cuda") == "fp32"
    assert resolve_mode("int8", "cpu") == "int8"
    with pytest.raises(ConfigError, match=r"inference.mode must be one of .*'int8'.*got 'int4'"):
        resolve_mode("int4")
    with pytest.raises(ConfigError, match=r"inference\.mode=onnx runs on CPU only"):
        resolve_mode("onnx", "cuda")


def test_bad_chunk_size_names_the_key(scorer) -> None:
    with pytest.raises(ConfigError, match=r"inference\.chunk_size must be a positive int"):
        FastCrossEncoder(scorer, "fp32", chunk_size=0)


def test_cpu_bf16_detection_reads_cpuinfo_flags(monkeypatch, tmp_path) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    monkeypatch.setattr(inference, "Path", lambda _: fake)
    inference.cpu_supports_bf16.cache_clear()
    try:
        assert inference.cpu_supports_bf16() is True
        fake.write_text("processor: 0\nflags\t\t: fpu sse avx512f\n")
        inference.cpu_supports_bf16.cache_clear()
        assert inference.cpu_supports_bf16() is False
    finally:
        inference.cpu_supports_bf16.cache_clear()


def test_module_uses_the_fast_scorer_for_test_and_predict_only(pairs) -> None:
    from ranking.modules.cross_encoder import RankingModule

    torch.manual_seed(0)
    module = RankingModule(
        encoder=TINY,
        tasks=[{"name": "relevance", "label": "relevance"}],
        loss={"name": "listnet"},
        region_names=["eu", "na"],
    ).eval()
    module.use_data_regions(["eu", "na"])
    B, L, T = 2, 3, pairs["input_ids"].shape[1]
    batch = {
        k: pairs[k].reshape(B, L, T) for k in ("input_ids", "attention_mask", "token_type_ids")
    }
    batch.update(mask=torch.ones(B, L, dtype=torch.bool), region=torch.tensor([0, 1]))
    calls = []
    module.use_inference("fp32", chunk_size=2)
    module.on_test_start()
    fast = module.fast_scorer
    assert fast is not None and fast.mode == "fp32"
    original = fast.pooled
    fast.pooled = lambda *a: calls.append(1) or original(*a)  # type: ignore[method-assign]
    with torch.inference_mode():
        scores = module(batch)
    assert calls, "test-time scoring did not go through the fast scorer"
    with torch.inference_mode():
        want, _ = score_lists(module.model, batch, module.region_lookup[batch["region"]])
    torch.testing.assert_close(scores, want, atol=1e-5, rtol=1e-5)
    calls.clear()
    module.train()
    module(batch)  # training: autograd through the float32 scorer
    assert not calls
    module.on_validation_start()
    assert module.fast_scorer is None


def test_inference_options_name_the_key() -> None:
    assert inference.inference_options(None) == {"mode": "auto", "chunk_size": 32}
    assert inference.inference_options({"mode": "int8"})["mode"] == "int8"
    with pytest.raises(ConfigError, match=r"inference\.chunk is not an option"):
        inference.inference_options({"chunk": 8})
    with pytest.raises(ConfigError, match=r"inference\.mode must be one of"):
        inference.inference_options({"mode": "fp16"})
    with pytest.raises(ConfigError, match=r"inference\.chunk_size must be a positive int"):
        inference.inference_options({"chunk_size": "32"})


def test_a_score_prior_and_missing_segment_ids_are_honoured(scorer, pairs) -> None:
    """Scorers that add a prior on pair features, or whose encoder takes no token_type_ids,
    are scored the same way by the fast scorer."""
    import copy

    with_prior = copy.deepcopy(scorer)
    with_prior.prior = torch.nn.Linear(1, 2)
    with_prior.uses_token_type_ids = False
    features = torch.arange(6.0)[:, None]
    fast = FastCrossEncoder(with_prior, "fp32", chunk_size=4)
    got = fast(
        pairs["input_ids"],
        pairs["attention_mask"],
        pairs["token_type_ids"],
        pairs["region"],
        pair_features=features,
    ).scores
    with torch.inference_mode():
        h = with_prior.encoder(
            input_ids=pairs["input_ids"], attention_mask=pairs["attention_mask"]
        ).last_hidden_state[:, 0]
        want = with_prior.tower(h, pairs["region"]).scores + with_prior.prior(features)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="score prior but the batch carries no pair_features"):
        fast(pairs["input_ids"], pairs["attention_mask"], None, pairs["region"])
