"""Straightforward per-list reference implementations of every loss (our default conventions).

One Python loop over lists; inside a list only its real items are kept, so no masking tricks are
needed. They exist to cross-check the vectorised losses (tests) and to measure what the
vectorisation buys (``bench/bench_losses.py``). Not for training.

Each function takes ``(scores, labels, mask, **options)`` like its vectorised twin and supports
the options listed in its signature, with reduction "mean" over contributing lists.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ranking.losses.gains import GainSpec, resolve_gain


def _lists(scores: Tensor, labels: Tensor, mask: Tensor) -> list[tuple[Tensor, Tensor]]:
    labels = labels.to(scores.dtype)
    return [(scores[b][mask[b]], labels[b][mask[b]]) for b in range(scores.shape[0])]


def _mean(values: list[Tensor], like: Tensor) -> Tensor:
    if not values:
        return (like * 0).sum()
    return torch.stack(values).mean()


def _contributes(y: Tensor, skip_empty: bool) -> bool:
    return y.numel() > 0 and (not skip_empty or bool((y > 0).any()))


def _gains(y: Tensor, gain: GainSpec) -> Tensor:
    return resolve_gain(gain)(y, torch.ones_like(y, dtype=torch.bool))


def _idcg(g: Tensor, k: int | None) -> Tensor:
    ideal = g.sort(descending=True).values[:k]
    ranks = torch.arange(1, ideal.numel() + 1, dtype=g.dtype)
    return (ideal / torch.log2(ranks + 1)).sum()


def bce(scores: Tensor, labels: Tensor, mask: Tensor, max_label: float | None = None) -> Tensor:
    out = []
    for s, y in _lists(scores, labels, mask):
        if y.numel():
            t = y / max_label if max_label else y
            out.append(F.binary_cross_entropy_with_logits(s, t))
    return _mean(out, scores)


def mse(scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    out = [((s - y) ** 2).mean() for s, y in _lists(scores, labels, mask) if y.numel()]
    return _mean(out, scores)


def ranknet(scores: Tensor, labels: Tensor, mask: Tensor, weight_by_diff: bool = False) -> Tensor:
    out = []
    for s, y in _lists(scores, labels, mask):
        better = y[:, None] > y[None, :]
        if not bool(better.any()):
            continue
        loss = -F.logsigmoid(s[:, None] - s[None, :])
        if weight_by_diff:
            loss = loss * (y[:, None] - y[None, :]).abs()
        out.append(loss[better].mean())
    return _mean(out, scores)


def softmax_ce(scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    out = []
    for s, y in _lists(scores, labels, mask):
        if _contributes(y, True):
            out.append(-(y / y.sum() * torch.log_softmax(s, 0)).sum())
    return _mean(out, scores)


def listnet(scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    out = []
    for s, y in _lists(scores, labels, mask):
        if _contributes(y, True):
            out.append(-(torch.softmax(y, 0) * torch.log_softmax(s, 0)).sum())
    return _mean(out, scores)


def listmle(scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    out = []
    for s, y in _lists(scores, labels, mask):
        if not _contributes(y, True):
            continue
        ordered = s[torch.sort(y, descending=True, stable=True).indices]
        suffix = torch.logcumsumexp(ordered.flip(0), 0).flip(0)  # log sum_{j >= i} exp(s_j)
        out.append((suffix - ordered).sum())
    return _mean(out, scores)


def approx_ndcg(
    scores: Tensor, labels: Tensor, mask: Tensor, alpha: float = 10.0, k: int | None = None
) -> Tensor:
    out = []
    for s, y in _lists(scores, labels, mask):
        if not _contributes(y, True):
            continue
        g = _gains(y, "exp2")
        beats = torch.sigmoid(alpha * (s[None, :] - s[:, None]))
        rank = 1 + beats.sum(1) - torch.diagonal(beats)
        contrib = g / torch.log2(1 + rank)
        if k is not None:
            contrib = contrib * torch.sigmoid(alpha * (k + 0.5 - rank))
        out.append(-contrib.sum() / _idcg(g, k))
    return _mean(out, scores)


def lambdaloss(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    weighing_scheme: str = "ndcgLoss2++",
    k: int | None = None,
    mu: float = 10.0,
) -> Tensor:
    out = []
    for s, y in _lists(scores, labels, mask):
        if not _contributes(y, True):
            continue
        n = s.numel()
        order = torch.sort(s.detach(), descending=True, stable=True).indices
        s, y = s[order], y[order]
        g = _gains(y, "exp2") / _idcg(_gains(y, "exp2"), k)
        pos = torch.arange(n)
        d = torch.log2(2 + pos.to(s.dtype))
        gain_gap = (g[:, None] - g[None, :]).abs()
        lam = (1 / d[:, None] - 1 / d[None, :]).abs() * gain_gap
        gap = (pos[:, None] - pos[None, :]).abs().to(s.dtype)
        delta = (1 / torch.log2(1 + gap) - 1 / torch.log2(2 + gap)).abs()
        nd2 = torch.where(gap > 0, delta, 0) * gain_gap
        weight = {
            "none": torch.ones_like(lam),
            "ndcgLoss1": (g / d)[:, None].expand(n, n),
            "ndcgLoss2": nd2,
            "lambdaRank": lam,
            "ndcgLoss2++": mu * nd2 + lam,
        }[weighing_scheme]
        if weighing_scheme == "ndcgLoss1":
            valid = torch.ones(n, n, dtype=torch.bool)
        else:
            valid = y[:, None] > y[None, :]
        if k is not None:
            valid = valid & (pos[:, None] < k) & (pos[None, :] < k)
        if not bool(valid.any()):  # a list without a valid pair carries no pairwise signal
            continue
        loss = -weight * F.logsigmoid(s[:, None] - s[None, :]) / math.log(2)
        out.append(loss[valid].sum())
    return _mean(out, scores)


def neural_ndcg(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    k: int | None = None,
    sinkhorn_iters: int = 50,
    sinkhorn_tol: float = 1e-6,
) -> Tensor:
    out = []
    for s, y in _lists(scores, labels, mask):
        if not _contributes(y, True):
            continue
        n = s.numel()
        spread = (s[:, None] - s[None, :]).abs().sum(1)
        scaling = n + 1 - 2 * torch.arange(1, n + 1, dtype=s.dtype)
        p = torch.softmax((scaling[:, None] * s[None, :] - spread[None, :]) / temperature, -1)
        for _ in range(sinkhorn_iters):
            p = p / p.sum(0, keepdim=True)
            p = p / p.sum(1, keepdim=True)
            done = (p.sum(0) - 1).abs().max() < sinkhorn_tol and (p.sum(1) - 1).abs().max() < (
                sinkhorn_tol
            )
            if sinkhorn_tol > 0 and done:
                break
        g = _gains(y, "exp2")
        disc = 1 / torch.log2(torch.arange(2, n + 2, dtype=s.dtype))
        out.append(-((p @ g) * disc)[:k].sum() / _idcg(g, k))
    return _mean(out, scores)


NAIVE_LOSSES: dict[str, Callable[..., Tensor]] = {
    "bce": bce,
    "mse": mse,
    "ranknet": ranknet,
    "softmax_ce": softmax_ce,
    "listnet": listnet,
    "listmle": listmle,
    "approx_ndcg": approx_ndcg,
    "lambdaloss": lambdaloss,
    "neural_ndcg": neural_ndcg,
}
