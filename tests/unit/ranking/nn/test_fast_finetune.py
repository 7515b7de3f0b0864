"""The CPU fine-tuning levers: length buckets, a frozen vocabulary, fused AdamW, precision=auto,
and the pairs/s throughput callback."""

from __future__ import annotations

import pytest
import torch

from callbacks.throughput import PairThroughput
from data_modules.errors import ConfigError
from ranking.modules.optim import adamw_with_warmup, fusable
from ranking.nn.cross_encoder import CrossEncoder, length_chunks
from ranking.nn.encoders import load_encoder_model, load_tokenizer
from ranking.nn.precision import resolve_precision
from ranking.nn.towers import build_tower
from tests.conftest import TINY_ENCODER


@pytest.mark.parametrize(
    ("lengths", "budget", "expected"),
    [
        ([3, 3, 4, 8, 8], 12, [(0, 3), (3, 4), (4, 5)]),
        ([1, 1, 1, 1], 2, [(0, 2), (2, 4)]),
        ([20], 5, [(0, 1)]),  # longer than the budget: a chunk of its own
        ([], 5, []),
        ([2, 2, 2], 100, [(0, 3)]),
    ],
)
def test_length_chunks(lengths, budget, expected) -> None:
    chunks = length_chunks(lengths, budget)
    assert [(c.start, c.stop) for c in chunks] == expected
    for chunk in chunks[:-1] if chunks else []:  # every chunk but a lone long pair fits
        if chunk.stop - chunk.start > 1:
            assert (chunk.stop - chunk.start) * lengths[chunk.stop - 1] <= budget


def _pairs(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` pairs of random lengths 3..20 padded to 24 tokens."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 21, (n,), generator=generator)
    ids = torch.randint(1000, 2000, (n, 24), generator=generator)
    attention = (torch.arange(24) < lengths[:, None]).long()
    return {
        "input_ids": ids * attention,
        "attention_mask": attention,
        "token_type_ids": torch.zeros_like(ids),
    }


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_length_buckets_score_like_one_padded_call(pooling) -> None:
    torch.manual_seed(0)
    encoder = load_encoder_model(TINY_ENCODER, len(load_tokenizer(TINY_ENCODER)))
    tower = build_tower("seq", hidden_size=16, num_tasks=3, num_regions=1)
    plain = CrossEncoder(encoder, tower, pooling=pooling).eval()
    bucketed = CrossEncoder(encoder, tower, pooling=pooling, bucket_tokens=40).eval()
    pairs = _pairs(13)
    region = torch.zeros(13, dtype=torch.long)
    with torch.no_grad():
        one = plain(**pairs, region=region)
        many = bucketed(**pairs, region=region)
    # Same pairs in input order, same tower auxiliary loss (the tower sees all pairs at once).
    torch.testing.assert_close(many.scores, one.scores, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(many.aux_loss, one.aux_loss)
    # The budget really split the work: every chunk holds at most 40 padded tokens.
    lengths = sorted(pairs["attention_mask"].sum(-1).tolist())
    assert len(length_chunks(lengths, 40)) > 1


def test_bucketed_gradients_equal_one_call() -> None:
    torch.manual_seed(0)
    encoder = load_encoder_model(TINY_ENCODER, len(load_tokenizer(TINY_ENCODER)))
    tower = build_tower("shared_bottom", hidden_size=16, num_tasks=1, num_regions=1)
    pairs, region = _pairs(9, seed=1), torch.zeros(9, dtype=torch.long)
    grads = []
    for budget in (None, 30):
        scorer = CrossEncoder(encoder, tower, bucket_tokens=budget).eval()  # no dropout noise
        scorer.zero_grad()
        scorer(**pairs, region=region).scores.square().sum().backward()
        grads.append([p.grad.clone() for p in scorer.parameters() if p.grad is not None])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_bucket_tokens_must_be_positive() -> None:
    encoder = load_encoder_model(TINY_ENCODER, len(load_tokenizer(TINY_ENCODER)))
    tower = build_tower("shared_bottom", hidden_size=16, num_tasks=1, num_regions=1)
    with pytest.raises(ValueError, match="bucket_tokens"):
        CrossEncoder(encoder, tower, bucket_tokens=0)


def test_frozen_word_embeddings_do_not_train_and_leave_the_optimizer() -> None:
    spec = {**TINY_ENCODER, "freeze_word_embeddings": True}
    model = load_encoder_model(spec, len(load_tokenizer(spec)))
    words = model.get_input_embeddings().weight
    assert not words.requires_grad
    assert model.embeddings.position_embeddings.weight.requires_grad
    config = adamw_with_warmup(model.parameters(), total_steps=10, lr=1e-3)
    optimized = {id(p) for group in config["optimizer"].param_groups for p in group["params"]}
    assert id(words) not in optimized
    assert len(optimized) == sum(1 for p in model.parameters() if p.requires_grad)


def test_adamw_recipe_groups_fused_and_schedule() -> None:
    layer = torch.nn.Linear(4, 3)
    config = adamw_with_warmup(layer.parameters(), total_steps=10, lr=0.1, warmup_ratio=0.2)
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    decay, no_decay = optimizer.param_groups
    assert decay["params"] == [layer.weight] and decay["weight_decay"] == 0.01
    assert no_decay["params"] == [layer.bias] and no_decay["weight_decay"] == 0.0
    assert optimizer.defaults["fused"] is True and fusable([layer.weight])
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # Linear warm-up over 2 steps to 0.1, then linear decay to 0 at step 10.
    assert lrs == pytest.approx(
        [0.0, 0.05, 0.1, 0.0875, 0.075, 0.0625, 0.05, 0.0375, 0.025, 0.0125]
    )
    assert not fusable([]) and not fusable([torch.zeros(2, dtype=torch.long)])


def test_precision_auto(monkeypatch) -> None:
    assert resolve_precision("32-true", "cpu") == ("32-true", "as configured")
    assert resolve_precision("bf16-mixed", "cpu")[0] == "bf16-mixed"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert resolve_precision("auto", "cpu")[0] == "32-true"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert resolve_precision("auto", "cpu")[0] == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto", "gpu") == ("32-true", "no CUDA device with bf16")


class _Logged:
    def __init__(self) -> None:
        self.values: list[float] = []

    def log(self, name, value, **kwargs) -> None:
        assert name == "train/pairs_per_s" and kwargs["prog_bar"] is True
        self.values.append(value)


def test_pair_throughput_counts_real_pairs_over_the_window(monkeypatch) -> None:
    clock = iter([0.0, 1.0, 10.0, 12.0, 20.0, 24.0])
    monkeypatch.setattr("callbacks.throughput.time.perf_counter", lambda: next(clock))
    callback, module = PairThroughput(window=2), _Logged()
    masks = [torch.tensor([[True, True, False]]), torch.ones(2, 3, dtype=torch.bool)]
    for mask in [masks[0], masks[1], masks[1]]:
        callback.on_train_batch_start(None, module, {"mask": mask}, 0)
        callback.on_train_batch_end(None, module, None, {"mask": mask}, 0)
    # Steps: 2 pairs in 1 s, 6 in 2 s, 6 in 4 s; window 2 -> (2+6)/3, then (6+6)/6.
    assert module.values == pytest.approx([2.0, 8 / 3, 2.0])


def test_frozen_lower_layers_stop_backward_below_them() -> None:
    two_layers = {**TINY_ENCODER["architecture"], "num_hidden_layers": 2}
    spec = {**TINY_ENCODER, "architecture": two_layers, "freeze_layers": 1}
    model = load_encoder_model(spec, len(load_tokenizer(spec)))
    layers = model.encoder.layer
    assert len(layers) == 2
    assert not any(p.requires_grad for p in model.embeddings.parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    ids = torch.tensor([[2, 5, 6, 3]])
    model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.sum().backward()
    assert all(p.grad is None for p in layers[0].parameters())
    assert all(p.grad is not None for p in layers[1].parameters())


def test_freeze_layers_beyond_the_encoder_is_one_config_error() -> None:
    spec = {**TINY_ENCODER, "freeze_layers": 2}
    with pytest.raises(ConfigError, match=r"freeze_layers must be between 0 and 1 .* got 2"):
        load_encoder_model(spec, len(load_tokenizer(spec)))
