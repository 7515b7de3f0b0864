"""Listwise losses: softmax cross-entropy, ListNet, ListMLE and ApproxNDCG.

All take ``scores``, ``labels`` and ``mask`` of shape ``[B, L]`` (mask True = real item) and return
a scalar. See ``ranking.losses`` for the shared conventions.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from ranking.losses._dcg import check_k, ideal_dcg
from ranking.losses._pipeline import (
    fused_inputs,
    keep_lists,
    large_negative,
    list_coefficients,
    mask_as,
    no_double_backward,
    validate,
)
from ranking.losses.gains import GainSpec, validated_gains

# ListNet, softmax cross-entropy and ListMLE are a handful of [B, L] operations each, so their cost
# is per-operation overhead rather than arithmetic: each runs as one autograd Function with its
# gradient written out (about half the operations autograd would record), and validation is one
# fused pass (``validate``). Their value and gradient are checked against the per-list loops of
# ``_naive`` and against allRank in the tests.


def _softmax_and_log(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(softmax(x), log_softmax(x))`` over the last dim, stable for any logits.

    ``log p_i = x_i - max(x) + log(max_j p_j)``: the largest probability is ``1 / sum_j e^(x_j -
    max x)`` >= 1 / L, so its log is exact. One ``softmax`` plus [B]-sized reductions is several
    times cheaper on CPU than ``x - logsumexp(x)`` (whose ``exp`` of the padding's huge negative
    logits takes a slow path), and unlike ``torch.log_softmax`` it does not enter an OpenMP region
    for small batches (which stalls for milliseconds on a busy machine; see ``_pipeline``).
    """
    p = torch.softmax(logits, dim=-1)
    shift = logits.amax(dim=-1, keepdim=True) - p.amax(dim=-1, keepdim=True).log()
    return p, logits - shift


@functools.cache
def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A cached 0-d tensor (never written to): ops with a Python number wrap it anew each call."""
    return torch.tensor(value, dtype=dtype, device=device)


class _SoftmaxCrossEntropy(torch.autograd.Function):
    r"""``-sum_{b,i} w_bi log(softmax(s_b)_i + eps)`` over real items, one autograd node.

    ``w`` is the target distribution of each list already multiplied by the list's reduction
    coefficient, so the whole loss is one dot product. Gradient: with
    :math:`p = \mathrm{softmax}(s)` and :math:`g_i = w_i / (p_i + \epsilon)`,
    :math:`\partial \ell / \partial s_j = p_j (\sum_i g_i p_i - g_j)`, which is
    :math:`p_j \sum_i w_i - w_j` for :math:`\epsilon = 0`. Padded items have :math:`p_j = w_j = 0`
    exactly (their logit is ``large_negative``), so their gradient is exactly 0.
    """

    @staticmethod
    def forward(ctx, scores, mask, weights, eps):  # type: ignore[override]
        logits = torch.where(mask, scores, large_negative(scores.dtype))
        if eps > 0:
            p = torch.softmax(logits, dim=-1)
            log_q = torch.log(p + eps)
        else:
            p, log_q = _softmax_and_log(logits)
        ctx.save_for_backward(p, weights)
        ctx.eps = eps
        return -torch.dot(weights.reshape(-1), log_q.reshape(-1))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        no_double_backward("softmax_ce")
        p, weights = ctx.saved_tensors
        if ctx.eps > 0:
            g = weights / (p + ctx.eps)
            d = p * ((g * p).sum(dim=-1, keepdim=True) - g)
        else:
            d = p * weights.sum(dim=-1, keepdim=True) - weights
        return d * grad, None, None, None


class _ListNet(torch.autograd.Function):
    r"""ListNet's ``sum_b c_b * -sum_i t_bi log(p_bi + eps)``, one autograd node.

    ``t = softmax(gains)`` and ``p = softmax(scores)`` are taken with padding filled with
    ``large_negative``. Gradient, with
    :math:`g_i = t_i / (p_i + \epsilon)`: :math:`\partial \ell / \partial s_j = p_j (\sum_i g_i
    p_i - g_j)`, which is :math:`p_j - t_j` for :math:`\epsilon = 0` (``t`` sums to 1). Padded
    items have :math:`p_j = t_j = 0` exactly, so their gradient is exactly 0.
    """

    @staticmethod
    def forward(ctx, scores, gains, mask, coef, eps, real):  # type: ignore[override]
        neg = large_negative(scores.dtype)
        if real is not None:
            # every value is finite, padding included: x * 1 + 0 at real items, x * 0 + neg at
            # padded ones, exactly, in one fused multiply-add (``where`` costs several times more)
            bias = torch.add(_scalar(neg, scores.dtype, scores.device), real, alpha=-neg)
            logits = torch.addcmul(bias, scores, real)
            target_logits = torch.addcmul(bias, gains, real)
        else:
            logits = torch.where(mask, scores, neg)
            target_logits = torch.where(mask, gains, neg)
        p = torch.softmax(logits, dim=-1)
        # w = -c * t: the target scaled by minus each list's coefficient, so that the value is a
        # plain dot product sum_i w_i log q_i and the gradient needs no further scaling
        target = torch.softmax(target_logits, dim=-1)
        if isinstance(coef, Tensor):  # some lists dropped
            w, total = target.mul_(-coef[:, None]), None
        else:
            w, total = target.mul_(-coef), -coef  # rows of t sum to 1: rows of w to -c
        if eps > 0:
            q = p + eps
            ctx.save_for_backward(p, w, q)
            value = torch.dot(w.reshape(-1), q.log().reshape(-1))
        else:
            # log p = logits - lse, lse = max(logits) - log(max p): exact, one softmax only
            lse = logits.amax(dim=-1) - p.amax(dim=-1).log()
            ctx.save_for_backward(p, w, None)
            value = torch.dot(w.reshape(-1), (logits - lse[:, None]).reshape(-1))
        ctx.eps, ctx.total = eps, total
        return value

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        no_double_backward("listnet")
        p, w, q = ctx.saved_tensors
        if ctx.eps > 0:  # p_j (g_j - sum_i g_i p_i), g = w / q
            pg = (w / q).mul_(p)
            d = torch.addcmul(pg, p, pg.sum(dim=-1, keepdim=True), value=-1)
        elif ctx.total is not None:  # w_j - p_j sum_i w_i
            d = torch.add(w, p, alpha=-ctx.total)
        else:
            d = torch.addcmul(w, p, w.sum(dim=-1, keepdim=True), value=-1)
        return d.mul_(grad), None, None, None, None, None


class _ListMLE(torch.autograd.Function):
    r"""``sum_b c_b * sum_i m_i (lse_i - s_i)`` on label-sorted lists, one autograd node.

    With items sorted by label (padding last) and :math:`M` the list's largest score,
    :math:`\mathrm{lse}_i = M + \log c_i`, :math:`c_i = \sum_{j \ge i} e^{s_j - M}` (one
    ``exp`` and one reversed ``cumsum``; allRank's ``eps`` is added to :math:`c_i`). Gradient:
    :math:`\partial \ell / \partial s_k = e^{s_k - M} \sum_{i \le k} 1 / c_i - 1` for real
    :math:`k` (each term :math:`e^{s_k - M} / c_i \le 1` since :math:`c_i` contains it).

    Exactness: :math:`c_i` is accurate while its largest term is a normal float; when a list's
    scores spread so far that a suffix sum falls below ``L * tiny / eps_machine`` (a spread of about
    65 in float32, 690 in float64) the batch is computed with ``logcumsumexp`` instead (slower,
    exact for any spread). Exponents are clamped at ``log(tiny) + 1``, which keeps ``exp`` on its
    fast path (subnormal results take a slow one, ~30x slower), for padding and for terms too small
    to change any sum above that floor.

    ``real`` is the mask as 0/1 floats; ``finite``: every score and label is finite, padding
    included, so masking is a multiplication instead of ``where`` (several times slower on CPU).
    """

    @staticmethod
    def forward(ctx, scores, labels, mask, real, coef, eps, finite):  # type: ignore[override]
        neg = large_negative(scores.dtype)
        if finite:  # x * 1 + 0 at real items, x * 0 + neg at padded ones, exactly
            bias = torch.add(_scalar(neg, scores.dtype, scores.device), real, alpha=-neg)
            key = torch.addcmul(bias, labels, real)  # labels >= 0 > neg: padding sorts last
            logits = torch.addcmul(bias, scores, real)
        else:
            key = torch.where(mask, labels, -math.inf)
            logits = torch.where(mask, scores, neg)
        # Real items by label descending (stable: ties keep their original order), padding last.
        order = torch.sort(key, dim=-1, descending=True, stable=True).indices
        top = logits.amax(dim=-1, keepdim=True)
        s_sorted = torch.gather(logits, -1, order)
        real_sorted = torch.gather(real, -1, order)
        finfo = torch.finfo(scores.dtype)
        # exp(log(tiny)) itself rounds to a subnormal: clamp one unit above
        e = (s_sorted - top).clamp_(min=math.log(finfo.tiny) + 1).exp_().mul_(real_sorted)
        c = e.flip(-1).cumsum(-1).flip(-1)  # 0 at padded positions (they come last)
        pad_sorted = 1.0 - real_sorted
        if eps > 0:
            c = c + eps
        elif c.numel() and (c + pad_sorted).amin().item() < c.shape[-1] * finfo.tiny / finfo.eps:
            return _ListMLE._forward_exact(ctx, s_sorted, real_sorted, order, coef)
        inv = (c + pad_sorted).reciprocal_()  # 1 at padded positions
        # real: log c_i + M - s_i; padded: (log 1 + M - neg) * 0
        per_list = (top - s_sorted).sub_(inv.log()).mul_(real_sorted).sum(dim=-1)
        _ListMLE._save(ctx, False, coef, order, e, inv.mul_(real_sorted), real_sorted)
        return (per_list * coef).sum()

    @staticmethod
    def _save(ctx, exact: bool, coef: Tensor | float, *tensors: Tensor) -> None:  # type: ignore[no-untyped-def]
        """Keep what backward needs; a float coefficient is kept on ``ctx``, not saved."""
        is_tensor = isinstance(coef, Tensor)
        ctx.save_for_backward(*tensors, coef if is_tensor else None)
        ctx.exact, ctx.coef = exact, None if is_tensor else coef

    @staticmethod
    def _forward_exact(ctx, s_sorted, real_sorted, order, coef):  # type: ignore[no-untyped-def]
        lse = torch.logcumsumexp(s_sorted.flip(-1), dim=-1).flip(-1)
        per_list = ((lse - s_sorted) * real_sorted).sum(dim=-1)
        _ListMLE._save(ctx, True, coef, order, s_sorted, lse, real_sorted)
        return (per_list * coef).sum()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        no_double_backward("listmle")
        order, a, b, real, coef = ctx.saved_tensors
        scale = grad * ctx.coef if coef is None else (grad * coef)[:, None]
        if ctx.exact:
            # a = scores, b = lse: prefix over i <= k of exp(-lse_i) reaches padded i only at
            # padded k (padding last), which the mask zeroes.
            d = torch.logcumsumexp(-b, dim=-1).add_(a).exp_()
            d = torch.where(real > 0, d, 0)
        else:
            d = a * b.cumsum(-1)  # a = exp(s - M) (0 at padding), b = 1 / c (0 at padding)
        d = (d - real) * scale
        return torch.zeros_like(d).scatter_(-1, order, d), None, None, None, None, None, None


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
    scores, labels = validate(scores, labels, mask, "softmax_ce", clean_scores=False)
    gains = validated_gains(gain, labels, mask)
    total = gains.sum(dim=-1, keepdim=True)
    keep = keep_lists(labels, mask, empty_lists, "softmax_ce")
    coef = list_coefficients(keep, reduction, "softmax_ce", scores.dtype)
    coef = coef[:, None] if isinstance(coef, Tensor) else torch.full_like(total, coef)
    weights = gains * (coef / torch.where(total > 0, total, 1))
    return _SoftmaxCrossEntropy.apply(scores, mask, weights, 0.0)


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
    inputs = fused_inputs(scores, labels, mask, "listnet", empty_lists, reduction)
    gains = validated_gains(gain, inputs.labels, mask)
    # When every value is finite, padding included, masking is arithmetic (see _ListNet), except
    # for 2**y - 1, which may overflow at a padded position.
    real = inputs.real if inputs.finite and gain != "exp2" else None
    return _ListNet.apply(scores, gains, mask, inputs.coef, float(eps), real)


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
    inputs = fused_inputs(scores, labels, mask, "listmle", empty_lists, reduction)
    return _ListMLE.apply(
        scores, inputs.labels, mask, inputs.real, inputs.coef, float(eps), inputs.finite
    )


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
    scores, labels = validate(scores, labels, mask, "approx_ndcg")
    gains = validated_gains(gain, labels, mask)  # exactly 0 at padded positions

    # [b, i, j] = sigmoid(alpha (s_j - s_i)). The [B, L, L] tensors are the whole cost, so they are
    # built with float arithmetic only (no bool masks or ``where`` at that size: several times
    # slower on CPU): padded items have clean scores (0), and their terms are dropped by the
    # matrix-vector product with the float mask below, not by selection.
    scaled = alpha * scores
    beats = torch.sigmoid(scaled[:, None, :] - scaled[:, :, None])
    if eps > 0:
        beats = beats.clamp(min=eps)
    real = mask_as(mask, scores.dtype)
    # 1 + sum_{j != i, real} beats_ij; the diagonal term is sigmoid(0) = 0.5 exactly (also clamped)
    approx_rank = 0.5 + (beats @ real[:, :, None]).squeeze(-1)
    contrib = gains / torch.log2(1.0 + approx_rank)  # 0 at padded positions (gain 0)
    if k is not None:
        contrib = contrib * torch.sigmoid(alpha * (k + 0.5 - approx_rank))
    idcg = ideal_dcg(gains, k)
    ndcg = contrib.sum(dim=-1) / torch.where(idcg > 0, idcg, 1)
    keep = keep_lists(labels, mask, empty_lists, "approx_ndcg")
    return -(ndcg * list_coefficients(keep, reduction, "approx_ndcg", scores.dtype)).sum()


__all__ = ["approx_ndcg", "listmle", "listnet", "softmax_ce"]
