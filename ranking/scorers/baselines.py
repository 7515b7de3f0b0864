"""Scores that need no model, evaluated through the same metric code as the model."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ranking.metrics.per_query import ScoreFn, per_query_metrics, summarize


def random_scorer(num_tasks: int, seed: int) -> ScoreFn:
    """Uniform random scores ``[B, L, K]`` from a seeded generator (same seed, same scores)."""
    generator = torch.Generator().manual_seed(seed)

    def score(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.rand((*batch["mask"].shape, num_tasks), generator=generator)

    return score


def evaluate_scorer(
    batches: Iterable[dict[str, torch.Tensor]],
    score: ScoreFn,
    task_names: list[str],
    region_names: list[str],
    metrics: list[str],
    stage: str,
    draws: int = 1,
) -> dict[str, float]:
    """Metrics of ``score`` over ``batches``, named like the model's (``{stage}/{task}/...``).

    Args:
        draws: Score every batch this many times and average; for a random scorer this estimates
            the *expected* metric of a random ranking instead of one noisy draw.
    """
    table = per_query_metrics(
        batches, {"scorer": (score, draws)}, task_names, region_names, metrics
    )
    return summarize(table, stage, task_names, region_names, metrics)
