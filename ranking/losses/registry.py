"""Name -> loss registry and ``build_loss``, which binds and checks options at build time."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from torch import Tensor

from ranking.losses._pipeline import EMPTY_LISTS, REDUCTIONS, check_choice
from ranking.losses.gains import resolve_gain
from ranking.losses.lambda_framework import canonical_scheme, lambdaloss
from ranking.losses.listwise import approx_ndcg, listmle, listnet, softmax_ce
from ranking.losses.neural_sort import neural_ndcg
from ranking.losses.pairwise import PAIR_REDUCTIONS, PAIRWISE_REDUCTIONS, ranknet
from ranking.losses.pointwise import bce, mse

LossFn = Callable[..., Tensor]

LOSSES: dict[str, LossFn] = {
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

_POSITIONAL = ("scores", "labels", "mask")


def loss_options(name: str) -> dict[str, object]:
    """The options of a registered loss with their defaults."""
    fn = _lookup(name)
    params = inspect.signature(fn).parameters
    return {p: v.default for p, v in params.items() if p not in _POSITIONAL}


def _lookup(name: str) -> LossFn:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {sorted(LOSSES)}")
    return LOSSES[name]


def build_loss(name: str, **options: object) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """Return ``fn(scores, labels, mask) -> scalar`` for a registered loss with options bound.

    Options are checked now, not at the first call: unknown names, and the values of the shared
    options ``gain``, ``empty_lists``, ``reduction``, ``pair_reduction``, ``weighing_scheme`` and
    ``k`` (loss-specific numbers such as ``alpha`` are checked at the first call). The result is
    a ``functools.partial`` (picklable, so it survives ``ddp_spawn``), with ``.func`` and
    ``.keywords`` for introspection.

    Args:
        name: one of ``LOSSES`` (e.g. ``"approx_ndcg"``).
        **options: keyword options of that loss (see its docstring).

    Raises:
        ValueError: unknown loss name (lists the valid ones) or unknown option (names the option,
            the loss and its valid options), or an invalid shared option value.

    Example:
        >>> loss = build_loss("approx_ndcg", alpha=1.0)
        >>> loss.keywords
        {'alpha': 1.0}
    """
    fn = _lookup(name)
    valid = loss_options(name)
    for option in options:
        if option not in valid:
            raise ValueError(
                f"unknown option {option!r} for loss {name!r}; valid options: {sorted(valid)}"
            )
    if "gain" in options:
        resolve_gain(options["gain"])  # type: ignore[arg-type]
    if "empty_lists" in options:
        check_choice("empty_lists", options["empty_lists"], EMPTY_LISTS, name)
    if "reduction" in options:
        choices = PAIRWISE_REDUCTIONS if "pair_reduction" in valid else REDUCTIONS
        check_choice("reduction", options["reduction"], choices, name)
    if "pair_reduction" in options:
        check_choice("pair_reduction", options["pair_reduction"], PAIR_REDUCTIONS, name)
    if "weighing_scheme" in options:
        canonical_scheme(options["weighing_scheme"])  # type: ignore[arg-type]
    if options.get("k") is not None:
        k = options["k"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{name}: k must be a positive int or None, got {k!r}")
    return functools.partial(fn, **options)
