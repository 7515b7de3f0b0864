"""Ranking metrics per task and per region, named ``{stage}/{task}/[{region}/]{metric}@{k}``."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from data_modules.errors import ConfigError
from ranking.metrics import METRICS, GroupedMean

_SPEC = re.compile(r"^(?P<name>[a-z_]+)(?:@(?P<k>\d+))?$")


def parse_metric(spec: str) -> tuple[str, int | None]:
    """``"ndcg@10" -> ("ndcg", 10)``; ``"map" -> ("map", None)``."""
    match = _SPEC.match(spec)
    if not match or match["name"] not in METRICS:
        raise ConfigError(
            f"metrics: cannot read '{spec}'; use <name>[@k] with name in {sorted(METRICS)}"
        )
    k = int(match["k"]) if match["k"] else None
    if k is not None and k < 1:
        raise ConfigError(f"metrics: cut-off must be >= 1 in '{spec}'")
    return match["name"], k


class RankingMetricSet(nn.Module):
    """Per-query ranking metrics, averaged per region and over all queries, DDP-safe.

    For each task and metric a :class:`~ranking.metrics.GroupedMean` keeps sum/count states per
    region. A list with no positive label for a task carries no ranking information for that task
    and is left out of that task's means (the count of lists used is reported as ``lists``).

    Args:
        task_names: Task names, in the order of the labels' last axis.
        region_names: Region names, indexed by the batch's ``region`` ids.
        metrics: Specs such as ``["ndcg@10", "mrr@10", "map"]``.
    """

    def __init__(
        self, task_names: Sequence[str], region_names: Sequence[str], metrics: Sequence[str]
    ) -> None:
        super().__init__()
        self.task_names = list(task_names)
        self.region_names = list(region_names)
        self.specs = [(spec, *parse_metric(spec)) for spec in metrics]
        self.means = nn.ModuleDict(
            {
                self._key(task, spec): GroupedMean(len(self.region_names))
                for task in self.task_names
                for spec, _, _ in [*self.specs, ("lists", None, None)]
            }
        )

    @staticmethod
    def _key(task: str, spec: str) -> str:
        return f"{task}__{spec.replace('@', '_at_')}"  # ModuleDict keys cannot hold '@' or '.'

    @torch.no_grad()
    def per_list(
        self, scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
    ) -> Iterator[tuple[str, str, torch.Tensor, torch.Tensor]]:
        """Per-list values of a batch: ``(task, metric spec, kept [B] bool, values [kept])``.

        ``kept`` marks the lists with a positive label for the task (the others are left out).
        """
        for t, task in enumerate(self.task_names):
            task_labels = labels[..., t]
            has_positive = ((task_labels > 0) & mask).any(-1)
            if not has_positive.any():
                continue
            s, y, m = scores[has_positive, :, t], task_labels[has_positive], mask[has_positive]
            for spec, name, k in self.specs:
                yield task, spec, has_positive, METRICS[name](s.float(), y.float(), m, k=k)

    @torch.no_grad()
    def update(
        self, scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, region: torch.Tensor
    ) -> None:
        """Add a batch: scores/labels ``[B, L, K]``, mask ``[B, L]``, region ``[B]``."""
        counted: set[str] = set()
        for task, spec, kept, values in self.per_list(scores, labels, mask):
            groups = region[kept]
            self.means[self._key(task, spec)].update(values, groups)
            if task not in counted:
                counted.add(task)
                self.means[self._key(task, "lists")].update(
                    torch.ones_like(groups, dtype=torch.float), groups
                )

    def compute(self, stage: str) -> dict[str, float]:
        """All values by name; ``{stage}/{metric}`` is the mean over tasks."""
        out: dict[str, float] = {}
        for spec, _, _ in [*self.specs, ("lists", None, None)]:
            per_task = []
            for task in self.task_names:
                metric = self.means[self._key(task, spec)]
                result = metric.compute()
                if spec == "lists":  # counts, not means
                    counts = metric.count
                    out[f"{stage}/{task}/lists"] = float(counts.sum())
                    for region, count in zip(self.region_names, counts.tolist(), strict=True):
                        out[f"{stage}/{task}/{region}/lists"] = float(count)
                    continue
                overall = float(result["overall"])
                out[f"{stage}/{task}/{spec}"] = overall
                per_task.append(overall)
                # torchmetrics squeezes one-element results: with one region ``per_group`` comes
                # back 0-d, so it is reshaped to one value per region before zipping.
                per_region = result["per_group"].reshape(len(self.region_names)).tolist()
                for region, value in zip(self.region_names, per_region, strict=True):
                    if not math.isnan(value):
                        out[f"{stage}/{task}/{region}/{spec}"] = value
            # A task without any list with a positive label (NaN) is left out of the mean.
            ranked = [v for v in per_task if not math.isnan(v)]
            if ranked:
                out[f"{stage}/{spec}"] = sum(ranked) / len(ranked)
        return out

    def reset(self) -> None:
        for metric in self.means.values():
            metric.reset()


def metric_names(
    stage: str, task_names: Sequence[str], region_names: Sequence[str], metrics: Sequence[str]
) -> list[str]:
    """Every name :meth:`RankingMetricSet.compute` can give for ``stage``.

    ``{stage}/{metric}`` (mean over tasks), ``{stage}/{task}/[{region}/]{metric}`` and the list
    counts ``{stage}/{task}/[{region}/]lists``.
    """
    names = [f"{stage}/{spec}" for spec in metrics]
    for task in task_names:
        for spec in [*metrics, "lists"]:
            names.append(f"{stage}/{task}/{spec}")
            names += [f"{stage}/{task}/{region}/{spec}" for region in region_names]
    return names
