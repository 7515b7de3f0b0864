"""Unit tests of the functional metrics and GroupedMean."""

from __future__ import annotations

import math

import pytest
import torch

from ranking.metrics import (
    METRICS,
    GroupedMean,
    average_precision,
    metric_key,
    mrr,
    ndcg,
    precision,
    recall,
)


def _one(scores: list[float], labels: list[float]) -> tuple[torch.Tensor, ...]:
    s = torch.tensor([scores], dtype=torch.float64)
    y = torch.tensor([labels], dtype=torch.float64)
    return s, y, torch.ones_like(y, dtype=torch.bool)


def test_ndcg_hand_computed_exp2_and_linear() -> None:
    s, y, m = _one([3.0, 2.0, 1.0], [0.0, 2.0, 1.0])
    dcg = 3 / math.log2(3) + 1 / math.log2(4)
    idcg = 3 / math.log2(2) + 1 / math.log2(3)
    assert ndcg(s, y, m).item() == pytest.approx(dcg / idcg, rel=1e-12)
    dcg_lin = 2 / math.log2(3) + 1 / math.log2(4)
    idcg_lin = 2 + 1 / math.log2(3)
    assert ndcg(s, y, m, gain="linear").item() == pytest.approx(dcg_lin / idcg_lin, rel=1e-12)
    assert ndcg(s, y, m, k=1).item() == 0.0


def test_ndcg_no_relevant_value() -> None:
    s, y, m = _one([1.0, 2.0], [0.0, 0.0])
    assert ndcg(s, y, m).item() == 0.0
    assert ndcg(s, y, m, no_relevant=1.0).item() == 1.0


def test_ndcg_ignores_padding_and_ties_break_by_position() -> None:
    scores = torch.tensor([[1.0, 1.0, 9.0]], dtype=torch.float64)
    labels = torch.tensor([[0.0, 1.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    # tie: item 0 ranks first, so the relevant item sits at rank 2
    assert ndcg(scores, labels, mask).item() == pytest.approx(1 / math.log2(3), rel=1e-12)


def test_ndcg_esci_mapping() -> None:
    s, y, m = _one([0.1, 0.2], [3.0, 2.0])
    esci = {3: 1.0, 2: 0.1, 1: 0.01, 0: 0.0}
    expected = (0.1 + 1.0 / math.log2(3)) / (1.0 + 0.1 / math.log2(3))
    assert ndcg(s, y, m, gain=esci).item() == pytest.approx(expected, rel=1e-12)


def test_binary_metrics_hand_computed() -> None:
    s, y, m = _one([5.0, 4.0, 3.0, 2.0, 1.0], [0.0, 1.0, 0.0, 2.0, 0.0])
    assert mrr(s, y, m).item() == pytest.approx(0.5)
    assert mrr(s, y, m, k=1).item() == 0.0
    assert average_precision(s, y, m).item() == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert precision(s, y, m, k=2).item() == pytest.approx(0.5)
    assert precision(s, y, m, k=10).item() == pytest.approx(0.2)
    assert recall(s, y, m, k=2).item() == pytest.approx(0.5)
    # threshold: only grade >= 2 relevant
    assert mrr(s, y, m, relevance_threshold=2).item() == pytest.approx(0.25)


def test_metrics_dict_and_keys() -> None:
    assert set(METRICS) == {"ndcg", "mrr", "map", "precision", "recall"}
    s, y, m = _one([1.0, 0.0], [1.0, 0.0])
    for fn in METRICS.values():
        assert fn(s, y, m, k=None).shape == (1,)
        assert fn(s, y, m, k=5).shape == (1,)
    assert metric_key("ndcg", 10) == "ndcg@10"
    assert metric_key("map") == "map"


def test_grouped_mean_fixed_input() -> None:
    metric = GroupedMean(num_groups=3)
    metric.update(torch.tensor([1.0, 0.0, 0.5, 0.25]), torch.tensor([0, 0, 2, 2]))
    out = metric.compute()
    assert torch.allclose(out["per_group"][[0, 2]], torch.tensor([0.5, 0.375]))
    assert math.isnan(out["per_group"][1].item())
    assert out["overall"].item() == pytest.approx(1.75 / 4)


def test_grouped_mean_overall_is_micro_mean() -> None:
    metric = GroupedMean(num_groups=2)
    metric.update(torch.tensor([1.0, 1.0, 1.0, 0.0]), torch.tensor([0, 0, 0, 1]))
    out = metric.compute()
    assert out["overall"].item() == pytest.approx(0.75)  # not (1 + 0) / 2


def test_grouped_mean_rejects_non_finite_and_bad_groups() -> None:
    metric = GroupedMean(num_groups=2)
    with pytest.raises(ValueError, match="finite"):
        metric.update(torch.tensor([1.0, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        metric.update(torch.tensor([1.0]), torch.tensor([2]))
    with pytest.raises(ValueError, match="integer"):
        metric.update(torch.tensor([1.0]), torch.tensor([0.0]))


def test_grouped_mean_merge_equals_single_instance() -> None:
    gen = torch.Generator().manual_seed(0)
    values = torch.rand(40, generator=gen)
    groups = torch.randint(0, 4, (40,), generator=gen)
    single = GroupedMean(num_groups=4)
    single.update(values, groups)
    a, b = GroupedMean(num_groups=4), GroupedMean(num_groups=4)
    a.update(values[:15], groups[:15])
    b.update(values[15:], groups[15:])
    # DDP sums the states across ranks; merge_state does the same in one process.
    a.merge_state(b)
    merged, expected = a.compute(), single.compute()
    assert torch.allclose(merged["per_group"], expected["per_group"], equal_nan=True)
    assert torch.allclose(merged["overall"], expected["overall"])
    # and by summing the raw states explicitly
    c, d = GroupedMean(num_groups=4), GroupedMean(num_groups=4)
    c.update(values[:15], groups[:15])
    d.update(values[15:], groups[15:])
    c.sum, c.count = c.sum + d.sum, c.count + d.count
    assert torch.allclose(c.compute()["overall"], expected["overall"])


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_grouped_mean_empty_overall_is_nan_and_reset() -> None:
    metric = GroupedMean(num_groups=2)
    assert math.isnan(metric.compute()["overall"].item())
    metric.update(torch.tensor([1.0]), torch.tensor([1]))
    metric.reset()
    assert int(metric.count.sum()) == 0
