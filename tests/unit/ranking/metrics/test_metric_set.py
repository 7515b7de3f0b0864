"""Per-task, per-region metric names and values; the random baseline's determinism."""

from __future__ import annotations

import math

import pytest
import torch

from data_modules.errors import ConfigError
from ranking.metrics.metric_set import RankingMetricSet, metric_names, parse_metric
from ranking.scorers.baselines import evaluate_scorer, random_scorer


def batch() -> dict[str, torch.Tensor]:
    # 3 lists: list 0 (region 0) perfect, list 1 (region 1) reversed, list 2 (region 1) no positive.
    scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 2.0, 0.0]]).unsqueeze(-1)
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).unsqueeze(-1)
    mask = torch.tensor([[True, True, True], [True, True, True], [True, True, False]])
    return {"scores": scores, "labels": labels, "mask": mask, "region": torch.tensor([0, 1, 1])}


def test_names_values_and_lists_without_positive_are_left_out() -> None:
    b = batch()
    metric_set = RankingMetricSet(["purchase"], ["us", "de"], ["ndcg@10", "mrr@10"])
    metric_set.update(b["scores"], b["labels"], b["mask"], b["region"])
    out = metric_set.compute("test")
    reversed_ndcg = 1 / math.log2(4)  # the positive at rank 3
    assert out["test/purchase/us/ndcg@10"] == pytest.approx(1.0)
    assert out["test/purchase/de/ndcg@10"] == pytest.approx(reversed_ndcg)
    assert out["test/purchase/ndcg@10"] == pytest.approx((1.0 + reversed_ndcg) / 2)
    assert out["test/purchase/de/mrr@10"] == pytest.approx(1 / 3)
    assert out["test/ndcg@10"] == pytest.approx(out["test/purchase/ndcg@10"])
    assert out["test/purchase/lists"] == 2 and out["test/purchase/de/lists"] == 1


def test_mean_over_tasks_and_task_axis() -> None:
    b = batch()
    scores = torch.cat([b["scores"], -b["scores"]], dim=-1)
    labels = torch.cat([b["labels"], b["labels"]], dim=-1)
    metric_set = RankingMetricSet(["click", "purchase"], ["us", "de"], ["ndcg@10"])
    metric_set.update(scores, labels, b["mask"], b["region"])
    out = metric_set.compute("val")
    assert out["val/click/us/ndcg@10"] == pytest.approx(1.0)
    assert out["val/purchase/us/ndcg@10"] == pytest.approx(1 / math.log2(4))
    assert out["val/ndcg@10"] == pytest.approx(
        (out["val/click/ndcg@10"] + out["val/purchase/ndcg@10"]) / 2
    )


def test_reset_clears_state() -> None:
    b = batch()
    metric_set = RankingMetricSet(["purchase"], ["us", "de"], ["ndcg@10"])
    metric_set.update(b["scores"], b["labels"], b["mask"], b["region"])
    metric_set.reset()
    metric_set.update(b["scores"][:1], b["labels"][:1], b["mask"][:1], b["region"][:1])
    assert metric_set.compute("val")["val/purchase/lists"] == 1


@pytest.mark.parametrize(("spec", "parsed"), [("ndcg@10", ("ndcg", 10)), ("map", ("map", None))])
def test_parse_metric(spec, parsed) -> None:
    assert parse_metric(spec) == parsed


@pytest.mark.parametrize("spec", ["ndgc@10", "ndcg@0", "ndcg@x"])
def test_parse_metric_rejects_typos(spec) -> None:
    with pytest.raises(ConfigError, match="metrics"):
        parse_metric(spec)


def test_random_baseline_is_seeded_and_uses_the_same_metrics() -> None:
    b = batch()
    batches = [{"mask": b["mask"], "labels": b["labels"], "region": b["region"]}] * 4
    args = (["purchase"], ["us", "de"], ["ndcg@10"], "test")
    first = evaluate_scorer(batches, random_scorer(1, seed=7), *args)
    again = evaluate_scorer(batches, random_scorer(1, seed=7), *args)
    other = evaluate_scorer(batches, random_scorer(1, seed=8), *args)
    assert first == again and first != other
    assert first["test/purchase/lists"] == 8


def test_random_baseline_averages_draws_and_keeps_list_counts() -> None:
    b = batch()
    batches = [{"mask": b["mask"], "labels": b["labels"], "region": b["region"]}]
    args = (["purchase"], ["us", "de"], ["mrr@10"], "test")
    mean = evaluate_scorer(batches, random_scorer(1, seed=0), *args, draws=4)
    # The same generator stream, one draw per call: the averaged result is their mean.
    score = random_scorer(1, seed=0)
    single = [evaluate_scorer(batches, score, *args)["test/purchase/mrr@10"] for _ in range(4)]
    assert len(set(single)) > 1  # the draws differ
    assert mean["test/purchase/mrr@10"] == pytest.approx(sum(single) / 4)
    assert mean["test/purchase/lists"] == 2  # counted once, not once per draw


def test_a_task_without_positive_lists_is_left_out_of_the_mean() -> None:
    b = batch()
    scores = torch.cat([b["scores"], b["scores"]], dim=-1)
    labels = torch.cat([b["labels"], torch.zeros_like(b["labels"])], dim=-1)  # no purchase
    metric_set = RankingMetricSet(["click", "purchase"], ["us", "de"], ["ndcg@10"])
    metric_set.update(scores, labels, b["mask"], b["region"])
    out = metric_set.compute("val")
    assert out["val/purchase/lists"] == 0
    assert out["val/ndcg@10"] == pytest.approx(out["val/click/ndcg@10"])


def test_metric_names_are_every_name_compute_gives() -> None:
    b = batch()
    scores = torch.cat([b["scores"], b["scores"]], dim=-1)
    labels = torch.cat([b["labels"], b["labels"]], dim=-1)
    metric_set = RankingMetricSet(["click", "purchase"], ["us", "de"], ["ndcg@10", "map"])
    metric_set.update(scores, labels, b["mask"], b["region"])
    names = metric_names("val", ["click", "purchase"], ["us", "de"], ["ndcg@10", "map"])
    assert set(metric_set.compute("val")) == set(names)
