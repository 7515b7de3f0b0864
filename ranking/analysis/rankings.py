"""Top-k rankings of a fixed sample of queries: what a person reads to see what a model does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import torch

from ranking.metrics.per_query import ScoreFn


def sample_rankings(
    score: ScoreFn,
    datamodule: Any,
    split: str,
    task_names: Sequence[str],
    num_queries: int = 8,
    top_k: int = 10,
    seed: int = 0,
) -> pl.DataFrame:
    """Rank the lists of ``num_queries`` queries of ``split`` (a seeded, fixed sample) per task.

    Args:
        score: ``batch -> [B, L, K]`` scores (the model or a baseline).
        datamodule: A set-up listwise DataModule (``lists``, ``pair_texts``, ``eval_dataloader``).
        split: Which split's lists to sample.
        task_names: Task names in score order.
        num_queries: How many queries (all when the split has fewer).
        top_k: Items kept per ranking.
        seed: Seed of the sample: the same queries for every run of a sweep.

    Returns:
        Columns ``query_id, region, query, task, rank, product, score, label``; ``rank`` is 1-based.
    """
    lists = datamodule.lists[split]
    chosen = np.sort(
        np.random.default_rng(seed).choice(len(lists), min(num_queries, len(lists)), replace=False)
    )
    chosen_set = set(chosen.tolist())
    texts = datamodule.pair_texts
    rows: list[dict[str, Any]] = []
    for batch in datamodule.eval_dataloader(split):
        keep = [i for i, index in enumerate(batch["list_index"].tolist()) if index in chosen_set]
        if not keep:
            continue
        scores = score(batch)
        for b in keep:
            index = int(batch["list_index"][b])
            items = batch["rows"][b][batch["mask"][b]].tolist()
            for t, task in enumerate(task_names):
                item_scores = scores[b, : len(items), t]
                order = torch.argsort(item_scores, descending=True, stable=True)[:top_k].tolist()
                for rank, i in enumerate(order, start=1):
                    rows.append(
                        {
                            "query_id": lists.query_ids[index],
                            "region": datamodule.region_names[int(batch["region"][b])],
                            "query": texts["query"][items[i]],
                            "task": task,
                            "rank": rank,
                            "product": texts["product"][items[i]],
                            "score": float(item_scores[i]),
                            "label": float(batch["labels"][b, i, t]),
                        }
                    )
    return pl.DataFrame(rows)
