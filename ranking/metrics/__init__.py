"""Ranking metrics: per-list functional metrics and a DDP-safe grouped mean.

Compute ``values = METRICS[name](scores, labels, mask, k=k)`` per batch, then feed ``values`` and
the list's group (e.g. region id) to a ``GroupedMean``. Log names downstream are
``{stage}/{task}/{metric_key(name, k)}`` and ``{stage}/{task}/{region}/{metric_key(name, k)}``.
"""

from ranking.metrics.aggregation import GroupedMean
from ranking.metrics.functional import (
    METRICS,
    average_precision,
    metric_key,
    mrr,
    ndcg,
    precision,
    recall,
)

__all__ = [
    "METRICS",
    "GroupedMean",
    "average_precision",
    "metric_key",
    "mrr",
    "ndcg",
    "precision",
    "recall",
]
