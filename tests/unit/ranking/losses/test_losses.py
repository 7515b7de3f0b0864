"""Unit tests of the loss registry, options and hand-computed loss values."""

from __future__ import annotations

import functools
import math
import pickle

import pytest
import torch

from ranking.losses import LOSSES, build_loss, loss_options

EXPECTED_NAMES = {
    "bce",
    "mse",
    "ranknet",
    "softmax_ce",
    "listnet",
    "listmle",
    "approx_ndcg",
    "lambdaloss",
    "neural_ndcg",
}


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    scores = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]], dtype=torch.float64)
    mask = labels >= 0
    return scores, labels, mask


def test_registry_has_every_expected_name() -> None:
    assert set(LOSSES) <= EXPECTED_NAMES
    assert {"listnet", "approx_ndcg"} <= set(LOSSES)


def test_registry_is_complete() -> None:
    assert set(LOSSES) == EXPECTED_NAMES


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_build_loss_defaults_give_finite_scalar(name: str) -> None:
    if name not in LOSSES:
        pytest.fail(f"loss {name!r} is not registered")
    scores, labels, mask = _batch()
    if name == "bce":
        labels = labels.clamp(max=1.0)
    scores.requires_grad_(True)
    value = build_loss(name)(scores, labels, mask)
    assert value.dim() == 0
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(scores.grad).all()
    assert (scores.grad[~mask] == 0).all()


def test_build_loss_binds_options_and_pickles() -> None:
    loss = build_loss("approx_ndcg", alpha=1.0, empty_lists="count")
    assert isinstance(loss, functools.partial)
    assert loss.keywords == {"alpha": 1.0, "empty_lists": "count"}
    scores, labels, mask = _batch()
    restored = pickle.loads(pickle.dumps(loss))
    assert torch.equal(restored(scores, labels, mask), loss(scores, labels, mask))


def test_build_loss_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown loss 'nope'.*approx_ndcg.*listnet"):
        build_loss("nope")


def test_build_loss_unknown_option_names_option_and_loss() -> None:
    with pytest.raises(ValueError, match=r"unknown option 'alpah' for loss 'approx_ndcg'"):
        build_loss("approx_ndcg", alpah=1.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"empty_lists": "drop"}, "empty_lists must be one of"),
        ({"gain": "cubic"}, "unknown gain 'cubic'"),
        ({"k": 0}, "k must be a positive int"),
        ({"reduction": "pair_mean"}, "reduction must be one of"),
    ],
)
def test_build_loss_checks_shared_option_values(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_loss("approx_ndcg", **options)


def test_build_loss_checks_pairwise_option_values() -> None:
    build_loss("ranknet", reduction="pair_mean")
    with pytest.raises(ValueError, match="pair_reduction must be one of"):
        build_loss("lambdaloss", pair_reduction="max")
    with pytest.raises(ValueError, match="unknown weighing_scheme"):
        build_loss("lambdaloss", weighing_scheme="ndcgLoss3")


def test_loss_options_lists_defaults() -> None:
    options = loss_options("approx_ndcg")
    assert options["gain"] == "exp2"
    assert options["empty_lists"] == "skip"
    assert "scores" not in options


def test_listnet_hand_computed() -> None:
    scores, labels, mask = _batch()
    # list 0: target softmax(1,0,0), list 1: target softmax(0,2) over two real items
    t0 = torch.softmax(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), 0)
    l0 = -(t0 * torch.log_softmax(scores[0], 0)).sum()
    t1 = torch.softmax(torch.tensor([0.0, 2.0], dtype=torch.float64), 0)
    l1 = -(t1 * torch.log_softmax(scores[1, :2], 0)).sum()
    got = LOSSES["listnet"](scores, labels, mask)
    assert torch.allclose(got, (l0 + l1) / 2, rtol=1e-12)
    got_sum = LOSSES["listnet"](scores, labels, mask, reduction="sum")
    assert torch.allclose(got_sum, l0 + l1, rtol=1e-12)


def test_approx_ndcg_hand_computed() -> None:
    scores = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    mask = torch.ones_like(labels, dtype=torch.bool)
    sig = 1 / (1 + math.exp(-1.0))  # item 1 is beaten by item 0 with prob sigma(1)
    expected = -(1.0 / math.log2(2.0 + sig)) / 1.0
    got = LOSSES["approx_ndcg"](scores, labels, mask, alpha=1.0)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_approx_ndcg_temperature_is_inverse_alpha() -> None:
    scores, labels, mask = _batch()
    a = LOSSES["approx_ndcg"](scores, labels, mask, alpha=4.0)
    b = LOSSES["approx_ndcg"](scores, labels, mask, temperature=0.25)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="not both"):
        LOSSES["approx_ndcg"](scores, labels, mask, alpha=1.0, temperature=1.0)


def test_empty_lists_skip_versus_count() -> None:
    scores = torch.tensor([[1.0, 0.0], [0.3, 0.3]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    mask = torch.ones_like(labels, dtype=torch.bool)
    only_first = LOSSES["listnet"](scores[:1], labels[:1], mask[:1])
    skip = LOSSES["listnet"](scores, labels, mask, empty_lists="skip")
    count = LOSSES["listnet"](scores, labels, mask, empty_lists="count")
    assert torch.allclose(skip, only_first)
    assert torch.allclose(count, (only_first + math.log(2.0)) / 2)


def test_esci_mapping_gain() -> None:
    esci = {3: 1.0, 2: 0.1, 1: 0.01, 0: 0.0}
    scores = torch.tensor([[0.2, 0.1, 0.4, 0.3]], dtype=torch.float64)
    labels = torch.tensor([[3.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    mask = torch.ones_like(labels, dtype=torch.bool)
    mapped = torch.tensor([[1.0, 0.1, 0.01, 0.0]], dtype=torch.float64)
    a = LOSSES["approx_ndcg"](scores, labels, mask, gain=esci)
    b = LOSSES["approx_ndcg"](scores, mapped, mask, gain="linear")
    assert torch.allclose(a, b, rtol=1e-12)
    with pytest.raises(ValueError, match="not in the gain mapping"):
        LOSSES["approx_ndcg"](scores, labels + 1, mask, gain=esci)


@pytest.mark.parametrize("tol", [0.0, 1e-6])
def test_sinkhorn_backward_matches_finite_differences(tol: float) -> None:
    from ranking.losses.neural_sort import sinkhorn

    kernel = torch.rand(3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kernel.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda k: sinkhorn(k, 7, tol), (kernel,))
    balanced = sinkhorn(kernel.detach(), 50, 0.0)
    torch.testing.assert_close(balanced.sum(-1), torch.ones(3, 5, dtype=torch.float64))
    torch.testing.assert_close(balanced.sum(-2), torch.ones(3, 5, dtype=torch.float64))
