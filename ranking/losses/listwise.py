"""Listwise losses: softmax cross-entropy, ListNet, ListMLE and ApproxNDCG.

All take ``scores``, ``labels`` and ``mask`` of shape ``[B, L]`` (mask True = real item) and return
a scalar. See ``ranking.losses`` for the shared conventions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ranking.losses._dcg import check_k, ideal_dcg
from ranking.losses._pipeline import (
    large_negative,
    list_weights,
    log_softmax,
    reduce_lists,
    validate,
)
from ranking.losses.gains import GainSpec, resolve_gain


def _masked_log_softmax(scores: Tensor, mask: Tensor, eps: float) -> Tensor:
    filled = torch.where(mask, scores, large_negative(scores.dtype))
    if eps > 0:
        # allRank's log(softmax + eps): bounds the per-item loss, changes it for far-off items.
        return torch.log(log_softmax(filled, dim=-1).exp() + eps)
    return log_softmax(filled, dim=-1)


def softmax_ce(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    gain: GainSpec = "linear",
    empty_lists: str = "skip",
    reduction: str = "mean",
) -> Tensor:
    r"""Softmax cross-entropy (TF-Ranking's ``SoftmaxLoss``).

    Per list: :math:`\ell = -\sum_i \frac{g(y_i)}{\sum_j g(y_j)} \log \mathrm{softmax}(s)_i` over
    real items, where ``g`` is the gain (identity by default). Lists without a positive label have
    no target distribution and get weight 0 (they add 0 even with ``empty_lists="count"``).

    Prefer it as a strong, cheap default for click/purchase lists with one or few positives
    (Bruch et al., "An Analysis of the Softmax Cross Entropy Loss for Learning-to-Rank", SIGIR
    2019, show it bounds NDCG); prefer ApproxNDCG or LambdaLoss for graded labels.

    Args:
        scores: ``[B, L]`` logits, higher = ranked higher.
        labels: ``[B, L]`` labels >= 0 at real positions.
        mask: ``[B, L]`` bool, True for real items.
        gain: label transform before normalising (``"linear"``, ``"exp2"`` or a mapping).
        empty_lists: ``"skip"`` (default) or ``"count"`` lists with no positive label.
        reduction: ``"mean"`` over contributing lists or ``"sum"``.

    Returns:
        Scalar loss.

    Example:
        >>> s = torch.tensor([[2.0, 0.0]]); y = torch.tensor([[1.0, 0.0]])
        >>> round(float(softmax_ce(s, y, torch.ones_like(s, dtype=torch.bool))), 4)
        0.1269
    """
    scores, labels = validate(scores, labels, mask, "softmax_ce")
    gains = resolve_gain(gain)(labels, mask)
    total = gains.sum(dim=-1, keepdim=True)
    target = gains / torch.where(total > 0, total, torch.ones_like(total))
    log_p = _masked_log_softmax(scores, mask, 0.0)
    per_list = -(target * torch.where(mask, log_p, 0)).sum(dim=-1)
    weights = list_weights(labels, mask, empty_lists, "softmax_ce")
    return reduce_lists(per_list, weights, reduction, "softmax_ce")


def listnet(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    gain: GainSpec = "linear",
    eps: float = 0.0,
    empty_lists: str = "skip",
    reduction: str = "mean",
) -> Tensor:
    r"""ListNet with top-one probabilities (Cao et al., "Learning to Rank: From Pairwise Approach
    to Listwise Approach", ICML 2007).

    Per list: :math:`\ell = -\sum_i \mathrm{softmax}(g(y))_i \, \log \mathrm{softmax}(s)_i` over
    real items (padded items are excluded from both softmaxes).

    Prefer softmax cross-entropy when labels are sparse binary engagement (ListNet puts mass on
    negatives too: a list with labels (1, 0, 0) targets (0.58, 0.21, 0.21)); prefer ApproxNDCG or
    LambdaLoss to optimise NDCG on graded labels.

    Differences from allRank's ``listNet``: allRank counts lists without a positive (with a
    uniform target) and takes ``log(softmax(s) + 1e-10)``; our defaults skip such lists and use an
    exact ``log_softmax``. ``empty_lists="count", eps=1e-10`` reproduces allRank.

    Args:
        scores: ``[B, L]`` logits, higher = ranked higher.
        labels: ``[B, L]`` labels >= 0 at real positions.
        mask: ``[B, L]`` bool, True for real items.
        gain: label transform inside the target softmax (default identity, as in allRank).
        eps: added to the predicted probabilities before the log (0 = exact log-softmax).
        empty_lists: ``"skip"`` (default) or ``"count"`` lists with no positive label.
        reduction: ``"mean"`` over contributing lists or ``"sum"``.

    Returns:
        Scalar loss.

    Example:
        >>> s = torch.tensor([[2.0, 0.0]]); y = torch.tensor([[1.0, 0.0]])
        >>> round(float(listnet(s, y, torch.ones_like(s, dtype=torch.bool))), 4)
        0.6648
    """
    scores, labels = validate(scores, labels, mask, "listnet")
    gains = resolve_gain(gain)(labels, mask)
    target = log_softmax(torch.where(mask, gains, large_negative(gains.dtype)), dim=-1).exp()
    log_p = _masked_log_softmax(scores, mask, eps)
    per_list = -(torch.where(mask, target * log_p, 0)).sum(dim=-1)
    weights = list_weights(labels, mask, empty_lists, "listnet")
    return reduce_lists(per_list, weights, reduction, "listnet")


def listmle(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    eps: float = 0.0,
    empty_lists: str = "skip",
    reduction: str = "mean",
) -> Tensor:
    r"""ListMLE: Plackett-Luce negative log-likelihood of the label order (Xia et al., "Listwise
    Approach to Learning to Rank: Theory and Algorithm", ICML 2008).

    With real items sorted by label descending, :math:`\pi`:
    :math:`\ell = \sum_{i} \left(\log \sum_{j \ge i} e^{s_{\pi_j}} - s_{\pi_i}\right)`, computed
    with a reversed ``logcumsumexp`` (stable for any logit magnitude).

    Ties in labels are broken by original position (stable sort), so the loss is deterministic;
    allRank shuffles randomly instead. With many ties (binary labels) the likelihood of an
    arbitrary order among equals is noise: prefer softmax cross-entropy or LambdaLoss there.

    Differences from allRank's ``listMLE``: allRank counts lists without a positive, breaks ties
    randomly and takes ``log(sum + 1e-10)`` after subtracting the list max;
    ``empty_lists="count", eps=1e-10`` reproduces it on labels without ties.

    Args:
        scores: ``[B, L]`` logits, higher = ranked higher.
        labels: ``[B, L]`` labels >= 0 at real positions.
        mask: ``[B, L]`` bool, True for real items.
        eps: allRank's additive constant inside the log (0 = exact).
        empty_lists: ``"skip"`` (default) or ``"count"`` lists with no positive label.
        reduction: ``"mean"`` over contributing lists or ``"sum"``.

    Returns:
        Scalar loss.

    Example:
        >>> s = torch.tensor([[2.0, 0.0]]); y = torch.tensor([[1.0, 0.0]])
        >>> round(float(listmle(s, y, torch.ones_like(s, dtype=torch.bool))), 4)
        0.1269
    """
    scores, labels = validate(scores, labels, mask, "listmle")
    neg = large_negative(scores.dtype)
    # Real items by label descending (stable: ties keep their original order), padding last.
    key = torch.where(mask, labels, -math.inf)
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    s_sorted = torch.gather(torch.where(mask, scores, neg), -1, order)
    m_sorted = torch.gather(mask, -1, order)
    # log sum_{j >= i} exp(s_j): padded items sit at the end with a huge negative score, so they
    # add exactly 0 to the suffix sums of real positions.
    suffix_lse = torch.logcumsumexp(s_sorted.flip(-1), dim=-1).flip(-1)
    if eps > 0:
        top = torch.where(m_sorted, s_sorted, neg).max(dim=-1, keepdim=True).values.detach()
        top = torch.where(m_sorted.any(-1, keepdim=True), top, torch.zeros_like(top))
        log_eps = torch.full_like(suffix_lse, math.log(eps))
        suffix_lse = torch.logaddexp(suffix_lse - top, log_eps) + top
    per_item = torch.where(m_sorted, suffix_lse - s_sorted, 0)
    per_list = per_item.sum(dim=-1)
    weights = list_weights(labels, mask, empty_lists, "listmle")
    return reduce_lists(per_list, weights, reduction, "listmle")


def approx_ndcg(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    alpha: float | None = None,
    temperature: float | None = None,
    k: int | None = None,
    gain: GainSpec = "exp2",
    eps: float = 0.0,
    empty_lists: str = "skip",
    reduction: str = "mean",
) -> Tensor:
    r"""ApproxNDCG: minus NDCG with ranks replaced by a smooth approximation (Qin, Liu & Li, "A
    General Approximation Framework for Direct Optimization of Information Retrieval Measures",
    Information Retrieval 2010; Bruch et al., "Revisiting Approximate Metric Optimization in the Age
    of Deep Neural Networks", SIGIR 2019).

    Approximate rank :math:`\hat\pi_i = 1 + \sum_{j \ne i} \sigma(\alpha (s_j - s_i))` over real
    items, then :math:`\ell = -\frac{1}{\mathrm{IDCG@k}} \sum_i \frac{g(y_i)}{\log_2(1 +
    \hat\pi_i)} c_i` with :math:`c_i = 1` without ``k`` and the soft cut-off
    :math:`c_i = \sigma(\alpha (k + \tfrac12 - \hat\pi_i))` with ``k``. Cost :math:`O(L^2)` per
    list.

    ListBERT (Kumar et al., "ListBERT: Learning to Rank E-commerce products with Listwise BERT",
    SIGIR eCom 2022) found ApproxNDCG the best loss for e-commerce ranking, hence it is our
    recommended default. Prefer softmax cross-entropy for single-positive click lists (ApproxNDCG's
    gradient vanishes once the positive is on top and can be flat when far from it), and lower
    ``alpha`` when training is unstable with very large logits.

    Differences from allRank's ``approxNDCGLoss``: our default ``alpha`` is 10 (TF-Ranking's
    temperature 0.1; allRank uses 1), lists without a positive get weight 0 (allRank counts them as
    NDCG 0 in the mean) and sigmoids are not clamped at 1e-10. ``alpha=1, empty_lists="count",
    eps=1e-10`` reproduces allRank.

    Args:
        scores: ``[B, L]`` logits, higher = ranked higher.
        labels: ``[B, L]`` labels >= 0 at real positions.
        mask: ``[B, L]`` bool, True for real items.
        alpha: sigmoid sharpness (default 10). Give ``alpha`` or ``temperature``, not both.
        temperature: ``1 / alpha`` (TF-Ranking's parameter).
        k: optional cut-off: IDCG@k and a soft cut-off on the approximate rank.
        gain: ``"exp2"`` (default), ``"linear"`` or a mapping ``{grade: gain}``.
        eps: lower clamp on each sigmoid (allRank uses 1e-10; 0 = no clamp).
        empty_lists: ``"skip"`` (default) or ``"count"`` lists with no positive label.
        reduction: ``"mean"`` over contributing lists or ``"sum"``.

    Returns:
        Scalar loss in ``[-1, 0]`` for ``reduction="mean"``.

    Example:
        >>> s = torch.tensor([[2.0, 0.0]]); y = torch.tensor([[1.0, 0.0]])
        >>> round(float(approx_ndcg(s, y, torch.ones_like(s, dtype=torch.bool))), 4)
        -1.0
    """
    scores, labels = validate(scores, labels, mask, "approx_ndcg")
    if alpha is not None and temperature is not None:
        raise ValueError("approx_ndcg: give alpha or temperature, not both")
    if temperature is not None:
        if temperature <= 0:
            raise ValueError(f"approx_ndcg: temperature must be > 0, got {temperature}")
        alpha = 1.0 / temperature
    alpha = 10.0 if alpha is None else float(alpha)
    if alpha <= 0:
        raise ValueError(f"approx_ndcg: alpha must be > 0, got {alpha}")
    check_k(k, "approx_ndcg")
    gains = resolve_gain(gain)(labels, mask)

    size = scores.shape[-1]
    eye = torch.eye(size, dtype=torch.bool, device=scores.device)
    pairs = mask[:, :, None] & mask[:, None, :] & ~eye
    diffs = torch.where(pairs, scores[:, None, :] - scores[:, :, None], 0)  # [b, i, j] = s_j - s_i
    beats = torch.sigmoid(alpha * diffs)
    if eps > 0:
        beats = beats.clamp(min=eps)
    approx_rank = 1.0 + torch.where(pairs, beats, 0).sum(dim=-1)
    contrib = gains / torch.log2(1.0 + approx_rank)
    if k is not None:
        contrib = contrib * torch.sigmoid(alpha * (k + 0.5 - approx_rank))
    idcg = ideal_dcg(gains, k)
    dcg = torch.where(mask, contrib, 0).sum(dim=-1)
    ndcg = dcg / torch.where(idcg > 0, idcg, torch.ones_like(idcg))
    weights = list_weights(labels, mask, empty_lists, "approx_ndcg")
    return reduce_lists(-ndcg, weights, reduction, "approx_ndcg")


__all__ = ["approx_ndcg", "listmle", "listnet", "softmax_ce"]
