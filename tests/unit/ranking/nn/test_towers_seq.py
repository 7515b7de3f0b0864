"""Unit tests of the SEQ tower: sequential dependence over the task order and the regulariser."""

from __future__ import annotations

import copy

import pytest
import torch

from ranking.nn.towers import SeqTower, build_tower, descending_penalty

H, K, R, N, S = 12, 3, 2, 5, 8


def _seq(cell: str = "gru", **options) -> SeqTower:
    torch.manual_seed(0)
    options = {"state_dim": S, "cell": cell, **options}
    return build_tower("seq", H, K, R, **options).eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(N, H, generator=gen), torch.tensor([0, 1, 1, 0, 1])


def _first_step(tower: SeqTower, task: int, h: torch.Tensor) -> torch.Tensor:
    """Score of ``task``'s head on the state of a first step fed ``task``'s projection."""
    state = tower.step(tower.projections[task](h), torch.zeros(h.shape[0], S))
    return tower.heads[task](state)[:, 0]


# ------------------------------------------------------------------ the regulariser
def test_penalty_hand_computed() -> None:
    p = torch.tensor([[0.9, 0.5, 0.2], [0.3, 0.6, 0.1]], dtype=torch.float64)
    # relu(p_t - p_{t-1}): row 0 -> 0, 0; row 1 -> 0.3, 0; mean over 4 pairs.
    torch.testing.assert_close(
        descending_penalty(torch.logit(p)), torch.tensor(0.075, dtype=torch.float64)
    )


def test_penalty_zero_when_non_increasing() -> None:
    p = torch.tensor([[0.9, 0.9, 0.2], [0.5, 0.4, 0.4], [0.7, 0.1, 0.01]])
    assert descending_penalty(torch.logit(p)).item() == 0.0
    assert descending_penalty(torch.randn(4, 1)).item() == 0.0  # one task: nothing to compare


def _constant_scores(tower: SeqTower, probs: list[float]) -> None:
    """Make every head output ``logit(probs[t])`` whatever its input."""
    with torch.no_grad():
        for head, p in zip(tower.heads, probs, strict=True):
            head[-1].weight.zero_()
            head[-1].bias.fill_(torch.logit(torch.tensor(p)).item())


def test_tower_aux_zero_when_descending() -> None:
    tower = _seq(descending_weight=1.0)
    _constant_scores(tower, [0.6, 0.6, 0.3])
    out = tower(*_inputs())
    assert out.aux_loss.item() == 0.0


def test_tower_aux_exact_when_ascending() -> None:
    tower = _seq(descending_weight=0.5).train()
    _constant_scores(tower, [0.2, 0.5, 0.4])
    out = tower(*_inputs())
    # relu diffs per item: 0.3 (task 1 over task 0), 0 (task 2 under task 1): mean 0.15.
    torch.testing.assert_close(out.aux_loss, torch.tensor(0.5 * 0.15))
    torch.testing.assert_close(out.extras["descending_penalty"], torch.tensor(0.15))
    out.aux_loss.backward()
    # Only the violating pair (0, 1) is penalised: task 0 pushed up, task 1 pushed down.
    assert tower.heads[0][-1].bias.grad.item() < 0
    assert tower.heads[1][-1].bias.grad.item() > 0
    assert tower.heads[2][-1].bias.grad.item() == 0.0


def test_tower_aux_matches_penalty_of_scores() -> None:
    tower = _seq(descending_weight=0.3)
    out = tower(*_inputs())
    torch.testing.assert_close(out.aux_loss, 0.3 * descending_penalty(out.scores))


def test_weight_zero_disables() -> None:
    tower = _seq(descending_weight=0.0)
    _constant_scores(tower, [0.1, 0.9, 0.95])
    out = tower(*_inputs())
    assert out.aux_loss.item() == 0.0
    assert "descending_penalty" not in out.extras


# ------------------------------------------------------------------ order and dependence
@pytest.mark.parametrize("cell", ["gru", "none"])
def test_first_task_reads_only_its_projection_from_zero_state(cell: str) -> None:
    tower = _seq(cell)
    h, region = _inputs()
    torch.testing.assert_close(tower(h, region).scores[:, 0], _first_step(tower, 0, h))


@pytest.mark.parametrize("cell", ["gru", "none"])
def test_later_steps_continue_from_previous_state(cell: str) -> None:
    tower = _seq(cell)
    h, region = _inputs()
    scores = tower(h, region).scores
    state = torch.zeros(N, S)
    for t in range(K):
        state = tower.step(tower.projections[t](h), state)
        torch.testing.assert_close(scores[:, t], tower.heads[t](state)[:, 0])
    if cell == "none":
        x = [p(h) for p in tower.projections]
        manual = torch.tanh(x[1] + torch.tanh(x[0]))
        torch.testing.assert_close(tower.step(x[1], torch.tanh(x[0])), manual)


def _perturbed(tower: SeqTower, task: int) -> SeqTower:
    other = copy.deepcopy(tower)
    with torch.no_grad():
        other.projections[task].weight.add_(0.5)
    return other


@pytest.mark.parametrize("cell", ["gru", "none"])
def test_perturbing_a_projection_changes_only_that_task_and_later(cell: str) -> None:
    tower = _seq(cell)
    h, region = _inputs()
    base = tower(h, region).scores
    for task in range(K):
        scores = _perturbed(tower, task)(h, region).scores
        for k in range(K):
            same = torch.equal(scores[:, k], base[:, k])
            assert same == (k < task), (task, k)


def test_task_order_decides_which_head_reads_which_state() -> None:
    tower = _seq()
    h, region = _inputs()
    base = tower(h, region).scores
    perm = [2, 0, 1]  # new order: old task 2 first, then 0, then 1
    reordered = copy.deepcopy(tower)
    reordered.projections = torch.nn.ModuleList(tower.projections[i] for i in perm)
    reordered.heads = torch.nn.ModuleList(tower.heads[i] for i in perm)
    scores = reordered(h, region).scores
    # Old task 2, now first, reads its own projection from a zero state ...
    torch.testing.assert_close(scores[:, 0], _first_step(tower, 2, h))
    # ... which differs from its score when it came last (it no longer sees tasks 0 and 1),
    assert not torch.allclose(scores[:, 0], base[:, 2], atol=1e-4)
    # and old task 0, now second, reads the state left by old task 2.
    assert not torch.allclose(scores[:, 1], base[:, 0], atol=1e-4)
    state = tower.step(tower.projections[2](h), torch.zeros(N, S))
    state = tower.step(tower.projections[0](h), state)
    torch.testing.assert_close(scores[:, 1], tower.heads[0](state)[:, 0])
