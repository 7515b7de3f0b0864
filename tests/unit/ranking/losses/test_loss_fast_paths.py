"""The fast paths of the losses give the same results as the general ones.

ListNet, softmax cross-entropy and ListMLE run as autograd Functions with written-out gradients;
masking is arithmetic when every value is finite (padding included) and ``where`` otherwise;
ListMLE switches to ``logcumsumexp`` when scores spread too far for one ``exp``. Each test
compares two paths on the same real items, so it fails if either is wrong.
"""

from __future__ import annotations

import pytest
import torch

from ranking.losses import ALLRANK_DEFAULTS, LOSSES, build_loss
from tests.reference_losses import NAIVE_LOSSES

F64 = torch.float64


def _batch(seed: int, dtype: torch.dtype = F64, spread: float = 2.0):
    gen = torch.Generator().manual_seed(seed)
    scores = (torch.randn(5, 7, generator=gen, dtype=F64) * spread).to(dtype)
    labels = torch.argsort(torch.rand(5, 7, generator=gen), dim=-1).to(dtype) / 2  # no ties
    mask = torch.rand(5, 7, generator=gen) > 0.25
    mask[:, 0] = True
    return scores, labels, mask


def _value_grad(loss, scores, labels, mask):
    scores = scores.clone().requires_grad_(True)
    value = loss(scores, labels, mask)
    (grad,) = torch.autograd.grad(value, scores)
    return value.detach(), grad


FUSED = [
    ("listnet", {}),
    ("listnet", {"gain": "exp2"}),
    ("listnet", ALLRANK_DEFAULTS["listnet"]),
    ("softmax_ce", {}),
    ("listmle", {}),
    ("listmle", ALLRANK_DEFAULTS["listmle"]),
]


@pytest.mark.parametrize(("name", "options"), FUSED, ids=[f"{n}-{o}" for n, o in FUSED])
def test_where_and_arithmetic_masking_agree(name: str, options: dict) -> None:
    """Padding with finite values takes the arithmetic path, NaN padding the ``where`` one."""
    scores, labels, mask = _batch(0)
    finite_pad = (torch.where(mask, scores, 3.0), torch.where(mask, labels, 2.0))
    nan_pad = (torch.where(mask, scores, torch.nan), torch.where(mask, labels, -1.0))
    loss = build_loss(name, **options)
    value_a, grad_a = _value_grad(loss, *finite_pad, mask)
    value_w, grad_w = _value_grad(loss, *nan_pad, mask)
    torch.testing.assert_close(value_a, value_w, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad_a, grad_w, rtol=1e-12, atol=1e-14)
    assert torch.all(grad_a[~mask] == 0) and torch.all(grad_w[~mask] == 0)


@pytest.mark.parametrize("spread", [40.0, 400.0])
def test_listmle_far_apart_scores_in_float32_match_float64(spread: float) -> None:
    """Scores 400 apart underflow a single ``exp`` in float32: the exact path must take over."""
    scores, labels, mask = _batch(1, torch.float32, spread=spread)
    value32, grad32 = _value_grad(LOSSES["listmle"], scores, labels, mask)
    value64, grad64 = _value_grad(NAIVE_LOSSES["listmle"], scores.double(), labels.double(), mask)
    assert torch.isfinite(value32) and torch.isfinite(grad32).all()
    torch.testing.assert_close(value32.double(), value64, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad32.double(), grad64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["listnet", "softmax_ce", "listmle"])
def test_second_derivatives_fail_loudly(name: str) -> None:
    scores, labels, mask = _batch(2)
    scores.requires_grad_(True)
    value = LOSSES[name](scores, labels, mask)
    with pytest.raises(RuntimeError, match=f"{name}: second derivatives are not supported"):
        torch.autograd.grad(value, scores, create_graph=True)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize(
    ("bad", "message"),
    [(torch.nan, "scores contain NaN at 1 real positions"), (torch.inf, "scores contain inf")],
    ids=["nan", "inf"],
)
def test_every_loss_rejects_a_non_finite_score(name: str, bad: float, message: str) -> None:
    scores, labels, mask = _batch(3)
    labels = (labels > 1).to(F64) if name == "bce" else labels
    scores[1, 0] = bad
    with pytest.raises(ValueError, match=f"{name}: {message}"):
        LOSSES[name](scores, labels, mask)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_rejects_a_negative_label_but_not_negative_padding(name: str) -> None:
    scores, labels, mask = _batch(4)
    labels = (labels > 1).to(F64) if name == "bce" else labels
    padded = torch.where(mask, labels, -1.0)
    assert torch.isfinite(LOSSES[name](scores, padded, mask))
    labels[2, 0] = -0.5
    with pytest.raises(ValueError, match=f"{name}: labels are negative at 1 real positions"):
        LOSSES[name](scores, labels, mask)


@pytest.mark.parametrize("name", ["listnet", "softmax_ce", "listmle", "approx_ndcg"])
def test_an_empty_batch_gives_zero(name: str) -> None:
    scores = torch.zeros(0, 5, requires_grad=True)
    value = LOSSES[name](scores, torch.zeros(0, 5), torch.zeros(0, 5, dtype=torch.bool))
    value.backward()
    assert value.item() == 0.0 and scores.grad.shape == (0, 5)
