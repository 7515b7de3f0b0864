"""Ranking metrics as pure functions returning one value per list, ``Tensor[B]``.

Conventions:

* Inputs ``scores``, ``labels``, ``mask`` of shape ``[B, L]``; ``mask`` True for real items;
  padded positions are ignored whatever their scores and labels.
* Items are ranked by score descending; **ties are broken by original position** (the earlier
  item ranks higher; a stable sort), the same everywhere. trec_eval breaks ties by document id,
  so results can differ from it only on tied scores.
* Binary relevance (MRR, MAP, precision, recall): ``relevance_threshold=None`` (default) means
  ``label > 0``, which equals trec_eval's ``grade >= 1`` on integer grades and 0/1 engagement,
  and also counts fractional gains such as ESCI's (E/S/C = 1/0.1/0.01) as relevant. A number
  ``t`` means ``label >= t`` (e.g. ``t=1.0`` for "ESCI exact only" with those gains).
* A list with no relevant item (or no real item) has no ideal: NDCG, MAP and recall give it
  ``no_relevant`` (0.0 by default, like trec_eval and the ESCI scoring script; allRank uses 1.0
  for NDCG). MRR and precision are 0 there.
* ``k=None`` means the whole list. ``precision@k`` divides by ``k`` even for lists shorter than
  ``k`` (trec_eval's ``P_k``); MAP with ``k`` divides by the number of relevant items (trec_eval's
  ``map_cut``).
* NDCG's gain: ``"exp2"`` (2^y - 1, default; allRank/TF-Ranking/Burges), ``"linear"``
  (trec_eval) or a mapping such as ESCI's ``{3: 1.0, 2: 0.1, 1: 0.01, 0: 0.0}`` (the official
  ESCI script swaps the S and C gains; we do not). Discount ``1 / log2(rank + 1)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ranking.losses._dcg import ideal_dcg, rank_discounts
from ranking.losses._pipeline import validate
from ranking.losses.gains import GainSpec, resolve_gain


def _prepare(scores: Tensor, labels: Tensor, mask: Tensor, name: str) -> tuple[Tensor, Tensor]:
    scores = scores.detach()
    if not scores.is_floating_point():
        scores = scores.double()
    return validate(scores, labels.detach(), mask, name)


def _sort_by_score(scores: Tensor, mask: Tensor, *columns: Tensor) -> list[Tensor]:
    """Gather ``columns`` in ranked order: score descending, ties by position, padding last."""
    key = torch.where(mask, scores, -torch.inf)
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    return [torch.gather(c, -1, order) for c in columns]


def _relevant(labels: Tensor, mask: Tensor, threshold: float | None) -> Tensor:
    rel = labels > 0 if threshold is None else labels >= threshold
    return rel & mask


def _topk(length: int, k: int | None, like: Tensor, name: str) -> Tensor:
    """``[L]`` bool: rank position < k."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"{name}: k must be a positive int or None, got {k!r}")
    positions = torch.arange(length, device=like.device)
    return positions < (length if k is None else k)


def _fill(values: Tensor, defined: Tensor, no_relevant: float) -> Tensor:
    return torch.where(defined, values, torch.full_like(values, float(no_relevant)))


def ndcg(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    k: int | None = None,
    gain: GainSpec = "exp2",
    no_relevant: float = 0.0,
) -> Tensor:
    r"""NDCG@k per list: :math:`\mathrm{DCG@k} / \mathrm{IDCG@k}` with
    :math:`\mathrm{DCG@k} = \sum_{r \le k} g(y_{(r)}) / \log_2(r + 1)`.

    Args:
        scores: ``[B, L]`` scores, higher = ranked higher.
        labels: ``[B, L]`` graded labels >= 0 at real positions.
        mask: ``[B, L]`` bool, True for real items.
        k: cut-off, or None for the whole list.
        gain: ``"exp2"`` (default), ``"linear"`` (trec_eval) or a mapping ``{grade: gain}``.
        no_relevant: value for lists whose IDCG is 0 (0.0 like trec_eval, 1.0 like allRank).

    Returns:
        ``[B]`` NDCG values.

    Example:
        >>> mask = torch.ones(1, 2, dtype=torch.bool)
        >>> ndcg(torch.tensor([[0.0, 1.0]]), torch.tensor([[1, 0]]), mask)
        tensor([0.6309])
    """
    scores, labels = _prepare(scores, labels, mask, "ndcg")
    gains = resolve_gain(gain)(labels, mask)
    (ranked,) = _sort_by_score(scores, mask, gains)
    disc = rank_discounts(scores.shape[-1], gains) * _topk(scores.shape[-1], k, gains, "ndcg")
    dcg = (ranked * disc).sum(dim=-1)
    idcg = ideal_dcg(gains, k)
    defined = idcg > 0
    return _fill(dcg / torch.where(defined, idcg, torch.ones_like(idcg)), defined, no_relevant)


def mrr(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    k: int | None = None,
    relevance_threshold: float | None = None,
) -> Tensor:
    """Reciprocal rank of the first relevant item within the top ``k`` (0 if none), per list.

    Matches trec_eval's ``recip_rank`` (without ``k``). See the module docstring for relevance.

    Returns:
        ``[B]`` reciprocal ranks.
    """
    scores, labels = _prepare(scores, labels, mask, "mrr")
    (rel,) = _sort_by_score(scores, mask, _relevant(labels, mask, relevance_threshold))
    length = scores.shape[-1]
    inv_rank = 1.0 / torch.arange(1, length + 1, dtype=scores.dtype, device=scores.device)
    hits = rel & _topk(length, k, scores, "mrr")
    # 1/rank decreases with rank, so the max over hits is the first hit.
    return (
        (hits.to(scores.dtype) * inv_rank).amax(dim=-1) if length else scores.new_zeros(len(scores))
    )


def average_precision(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    k: int | None = None,
    relevance_threshold: float | None = None,
    no_relevant: float = 0.0,
) -> Tensor:
    """Average precision per list: mean of precision@r over the ranks r of relevant items.

    Divided by the number of relevant real items ``R`` (trec_eval's ``map``; with ``k``, only
    ranks <= k are summed and the divisor stays ``R``, as trec_eval's ``map_cut``).

    Returns:
        ``[B]`` average precisions; ``no_relevant`` where ``R == 0``.
    """
    scores, labels = _prepare(scores, labels, mask, "average_precision")
    relevant = _relevant(labels, mask, relevance_threshold)
    (rel,) = _sort_by_score(scores, mask, relevant.to(scores.dtype))
    length = scores.shape[-1]
    ranks = torch.arange(1, length + 1, dtype=scores.dtype, device=scores.device)
    precision_at = rel.cumsum(dim=-1) / ranks
    summed = (rel * precision_at * _topk(length, k, scores, "average_precision")).sum(dim=-1)
    total = relevant.sum(dim=-1).to(scores.dtype)
    defined = total > 0
    return _fill(summed / torch.where(defined, total, torch.ones_like(total)), defined, no_relevant)


def precision(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    k: int | None = None,
    relevance_threshold: float | None = None,
) -> Tensor:
    """Fraction of the top ``k`` that is relevant, per list (trec_eval's ``P_k``).

    The divisor is ``k`` even when a list has fewer than ``k`` real items; with ``k=None`` it is
    the number of real items (0 for an empty list).

    Returns:
        ``[B]`` precisions.
    """
    scores, labels = _prepare(scores, labels, mask, "precision")
    (rel,) = _sort_by_score(scores, mask, _relevant(labels, mask, relevance_threshold))
    length = scores.shape[-1]
    hits = (rel & _topk(length, k, scores, "precision")).sum(dim=-1).to(scores.dtype)
    if k is None:
        size = mask.sum(dim=-1).to(scores.dtype)
        return hits / size.clamp(min=1)
    return hits / k


def recall(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    k: int | None = None,
    relevance_threshold: float | None = None,
    no_relevant: float = 0.0,
) -> Tensor:
    """Fraction of the relevant items found in the top ``k``, per list (trec_eval's
    ``recall_k``).

    Returns:
        ``[B]`` recalls; ``no_relevant`` for lists without a relevant item.
    """
    scores, labels = _prepare(scores, labels, mask, "recall")
    relevant = _relevant(labels, mask, relevance_threshold)
    (rel,) = _sort_by_score(scores, mask, relevant)
    length = scores.shape[-1]
    hits = (rel & _topk(length, k, scores, "recall")).sum(dim=-1).to(scores.dtype)
    total = relevant.sum(dim=-1).to(scores.dtype)
    defined = total > 0
    return _fill(hits / torch.where(defined, total, torch.ones_like(total)), defined, no_relevant)


MetricFn = Callable[..., Tensor]

#: Metric name -> function; every one accepts ``k`` (None = whole list).
METRICS: dict[str, MetricFn] = {
    "ndcg": ndcg,
    "mrr": mrr,
    "map": average_precision,
    "precision": precision,
    "recall": recall,
}


def metric_key(metric: str, k: int | None = None) -> str:
    """Display name of a metric: ``"ndcg@10"``, or ``"map"`` without a cut-off."""
    return metric if k is None else f"{metric}@{k}"
