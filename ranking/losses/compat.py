"""Options that make our losses reproduce allRank's (allegro/allRank 1.4.3) conventions.

Our defaults follow TF-Ranking where the two differ (see each loss's docstring). To compare with
numbers produced by allRank, translate its call with ``allrank_options``:

>>> options = allrank_options("lambdaloss", weighing_scheme="ndcgLoss2PP_scheme", reduction="mean")
>>> options["reduction"], options["eps"], options["empty_lists"]
('pair_mean', 1e-10, 'count')
"""

from __future__ import annotations

from typing import Any

#: Options that reproduce allRank's defaults for each loss (before its own keyword arguments).
ALLRANK_DEFAULTS: dict[str, dict[str, Any]] = {
    "approx_ndcg": {"alpha": 1.0, "empty_lists": "count", "eps": 1e-10},
    "listnet": {"empty_lists": "count", "eps": 1e-10},
    "listmle": {"empty_lists": "count", "eps": 1e-10},
    "ranknet": {"reduction": "pair_mean"},
    "lambdaloss": {
        "empty_lists": "count",
        "eps": 1e-10,
        "weighing_scheme": None,
        "reduction": "sum",
    },
    "neural_ndcg": {"temperature": 1.0},
}


def allrank_options(loss: str, **allrank_kwargs: Any) -> dict[str, Any]:
    """Translate an allRank loss call's keyword arguments into our options for ``loss``.

    Args:
        loss: our loss name (one of ``ALLRANK_DEFAULTS``).
        **allrank_kwargs: the keyword arguments given to allRank's function (``alpha``,
            ``weight_by_diff``, ``weighing_scheme``, ``k``, ``reduction``, ``temperature``...).

    Returns:
        Options for ``build_loss(loss, **options)``.

    Raises:
        ValueError: for a loss without an allRank counterpart here.
    """
    if loss not in ALLRANK_DEFAULTS:
        raise ValueError(
            f"no allRank convention for loss {loss!r}; known: {sorted(ALLRANK_DEFAULTS)}"
        )
    options = dict(ALLRANK_DEFAULTS[loss])
    for key, value in allrank_kwargs.items():
        if loss == "lambdaloss" and key == "reduction":
            # allRank's "mean" averages over all valid pairs pooled across the batch.
            value = "pair_mean" if value == "mean" else value
        options[key] = value
    return options
