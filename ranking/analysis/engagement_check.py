"""How much of simulated (or logged) engagement relevance explains, and how much position does.

For every engagement label (click, add-to-cart, purchase) and region, three rankings of each
query's items are scored with NDCG@k *on that label*:

* ``relevance``: the oracle ranking by graded relevance (ties in random order);
* ``position``: the display order of the logging policy (position 1 first);
* ``random``: the expected NDCG of a random order (mean over draws).

If engagement were pure position noise, ``position`` would far exceed ``relevance`` and
``relevance`` would sit near ``random``; engagement that carries relevance signal puts
``relevance`` well above ``random``. ``relevance - random`` over ``position - random`` is the
share of the position ranking's lift that relevance alone recovers (reported as ``relevance
share``). The logging policy itself ranks by noisy relevance, so position and relevance are
correlated by construction; the test is that a model that learns relevance can learn engagement.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import torch

from data_modules.errors import DataValidationError
from ranking.metrics import ndcg

LABELS = ("click", "add_to_cart", "purchase")


def _padded(table: pl.DataFrame, columns: Sequence[str]) -> dict[str, torch.Tensor]:
    """``[lists, L]`` tensors of ``columns`` (0 at padding) and the mask, one list per query."""
    grouped = table.group_by("query_id", maintain_order=True).agg([pl.col(c) for c in columns])
    size = int(grouped.select(pl.col(columns[0]).list.len().max()).item())
    out: dict[str, torch.Tensor] = {}
    lengths = grouped.get_column(columns[0]).list.len().to_numpy()
    out["mask"] = torch.from_numpy(np.arange(size)[None, :] < lengths[:, None])
    for column in columns:
        values = np.zeros((grouped.height, size), dtype=np.float32)
        for i, row in enumerate(grouped.get_column(column).to_list()):
            values[i, : len(row)] = row
        out[column] = torch.from_numpy(values)
    return out


def engagement_signal(
    table: pl.DataFrame, k: int = 10, draws: int = 20, seed: int = 0
) -> pl.DataFrame:
    """NDCG@k on each engagement label of the relevance, position and random rankings.

    Args:
        table: Rows with ``query_id``, ``region``, ``relevance``, ``position`` and the labels.
        k: Cut-off.
        draws: Random orders averaged for the random row (and random tie-breaks of relevance).
        seed: Seed of those orders.

    Returns:
        One row per (region incl. ``all``, label): ``lists`` (queries with a positive label),
        ``relevance``, ``position``, ``random``, ``relevance_share``.

    Raises:
        DataValidationError: a needed column is missing.
    """
    needed = ["query_id", "region", "relevance", "position", *LABELS]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DataValidationError(f"engagement check: missing column(s) {missing}")
    generator = torch.Generator().manual_seed(seed)
    rows = []
    regions = sorted(table.get_column("region").unique().to_list())
    for region in [*regions, "all"]:
        part = table if region == "all" else table.filter(pl.col("region") == region)
        lists = _padded(part, ["relevance", "position", *LABELS])
        mask = lists["mask"]
        for label in LABELS:
            y = lists[label]
            keep = ((y > 0) & mask).any(-1)
            if not keep.any():
                continue
            y, m = y[keep], mask[keep]
            rel, pos = lists["relevance"][keep], lists["position"][keep]
            by_relevance, by_random = [], []
            for _ in range(draws):
                noise = torch.rand(y.shape, generator=generator)
                by_relevance.append(ndcg(rel + 1e-6 * noise, y, m, k=k).mean())
                by_random.append(ndcg(noise, y, m, k=k).mean())
            relevance = float(torch.stack(by_relevance).mean())
            random = float(torch.stack(by_random).mean())
            position = float(ndcg(-pos, y, m, k=k).mean())
            lift = position - random
            rows.append(
                {
                    "region": region,
                    "label": label,
                    "lists": int(keep.sum()),
                    "relevance": relevance,
                    "position": position,
                    "random": random,
                    "relevance_share": (relevance - random) / lift if lift > 0 else float("nan"),
                }
            )
    return pl.DataFrame(rows)


def signal_markdown(frame: pl.DataFrame, k: int = 10) -> str:
    """The table of :func:`engagement_signal` as markdown."""
    lines = [
        f"| region | label | lists | NDCG@{k} by relevance | by position | random | "
        "relevance share of the position lift |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in frame.iter_rows(named=True):
        lines.append(
            f"| {r['region']} | {r['label']} | {r['lists']} | {r['relevance']:.3f} | "
            f"{r['position']:.3f} | {r['random']:.3f} | {r['relevance_share']:.2f} |"
        )
    return "\n".join(lines)
