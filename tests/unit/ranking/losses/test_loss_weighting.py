"""Static and uncertainty (Kendall et al., 2018) weighting of per-task losses."""

from __future__ import annotations

import math
import re

import pytest
import torch

from data_modules.errors import ConfigError
from ranking.losses.weighting import StaticWeighting, UncertaintyWeighting, build_loss_weighting

LISTNET = {"name": "listnet"}
APPROX = {"name": "approx_ndcg", "alpha": 10.0}


def test_static_is_the_weighted_sum():
    weighting = build_loss_weighting(None, [1.0, 0.5, 2.0], [LISTNET] * 3)
    assert isinstance(weighting, StaticWeighting)
    total = weighting(torch.tensor([1.0, 2.0, 3.0]))
    assert total.item() == pytest.approx(1.0 + 1.0 + 6.0)


def test_uncertainty_matches_the_formula_and_shifts_negated_ndcg():
    weighting = build_loss_weighting(
        {"name": "uncertainty", "init_log_variance": 0.0}, [1.0, 2.0], [LISTNET, APPROX]
    )
    assert isinstance(weighting, UncertaintyWeighting)
    with torch.no_grad():
        weighting.log_variance.copy_(torch.tensor([0.5, -1.0]))
    per_task = torch.tensor([0.8, -0.6])  # ListNet 0.8; ApproxNDCG loss -NDCG = -0.6
    expected = (0.5 * math.exp(-0.5) * 0.8 + 0.25) + (0.5 * math.exp(1.0) * 2.0 * 0.4 - 0.5)
    assert weighting(per_task).item() == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(
        weighting.log_values()["weight"], 0.5 * torch.exp(-torch.tensor([0.5, -1.0]))
    )


def test_uncertainty_optimum_is_the_log_of_the_weighted_loss():
    # d/ds [0.5 e^{-s} c + 0.5 s] = 0  <=>  s = log c, so gradient descent on s alone lands there.
    weighting = build_loss_weighting({"name": "uncertainty"}, [1.0, 3.0], [LISTNET, LISTNET])
    per_task = torch.tensor([0.2, 1.5])
    optimizer = torch.optim.SGD(weighting.parameters(), lr=0.5)
    for _ in range(400):
        optimizer.zero_grad()
        weighting(per_task).backward()
        optimizer.step()
    assert torch.allclose(weighting.log_variance, torch.log(torch.tensor([0.2, 4.5])), atol=1e-4)


def test_uncertainty_gradient_reaches_the_scores_scaled_by_the_weight():
    weighting = build_loss_weighting({"name": "uncertainty"}, [1.0], [APPROX])
    loss = torch.tensor([-0.3], requires_grad=True)
    weighting(loss).backward()
    assert loss.grad.item() == pytest.approx(0.5)  # 0.5 * e^0 * w
    assert weighting.log_variance.grad.item() == pytest.approx(-0.5 * 0.7 + 0.5)


@pytest.mark.parametrize(
    ("spec", "losses", "message"),
    [
        ({"name": "learned"}, [LISTNET], "'static' or 'uncertainty'"),
        ({"name": "uncertainty", "init": 1.0}, [LISTNET], "unknown option(s) ['init']"),
        ({"name": "static", "init_log_variance": 1.0}, [LISTNET], "static takes no options"),
        (
            {"name": "uncertainty"},
            [{"name": "approx_ndcg", "reduction": "sum"}],
            "needs reduction=mean",
        ),
    ],
)
def test_bad_weighting_configs_are_named(spec, losses, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_loss_weighting(spec, [1.0] * len(losses), losses)
