"""Ranking losses: pure functions ``fn(scores, labels, mask, **options) -> scalar``.

Conventions shared by every loss:

* ``scores``, ``labels``, ``mask`` have shape ``[B, L]``; ``mask`` is True for real items. Labels
  at padded positions are ignored (any value, e.g. -1 or 0).
* Higher score = ranked higher. Scores are logits (no sigmoid/softmax applied beforehand).
* Every loss goes through one pipeline (``_pipeline``): validate -> per-item/per-pair loss ->
  list weights (lists without a real item always weigh 0; lists without a positive label weigh 0
  by default for listwise/pairwise losses, ``empty_lists="count"`` keeps them) -> reduction
  (``"mean"`` over contributing lists, or ``"sum"``). A batch with no contributing list gives 0.
* Ties in scores are broken by original position wherever an order is needed.

Use ``build_loss(name, **options)`` to get a configured callable; ``LOSSES`` maps names to
functions. Every call checks its inputs
(one fused pass: see ``_pipeline.validate``).

Defaults versus allRank (``allrank_options(name, **allrank_kwargs)`` gives the options that
reproduce allRank; ``tests/unit/ranking/losses/test_losses_reference.py`` checks them against its
numbers):

=============  =============================================  ====================================
loss           our default                                    allRank
=============  =============================================  ====================================
list/pairwise  lists without a positive label: weight 0       counted (as NDCG 0 / uniform target)
approx_ndcg    alpha 10 (TF-Ranking temp. 0.1), no clamp      alpha 1, sigmoids clamped at 1e-10
listnet        exact log-softmax                              log(softmax + 1e-10)
listmle        label ties broken by position, exact log       random tie-break, log(sum + 1e-10)
ranknet        mean over a list's pairs, then over lists      mean over all pairs of the batch
lambdaloss     ndcgLoss2++, per-list sum, mean over lists,    no scheme, sum over all pairs,
               exact logsigmoid                               clamps at 1e-10 (zero gradients)
neural_ndcg    same as allRank; padding may sit anywhere      padding must be at the list end
bce, mse       per-list mean, lists without positive count    (not compared)
=============  =============================================  ====================================

Which loss: ``approx_ndcg`` (ListBERT's best for e-commerce) or ``lambdaloss`` for graded
relevance and NDCG; ``softmax_ce`` for click/purchase lists with few positives; ``ranknet`` as a
robust pairwise baseline; ``neural_ndcg`` for a tighter NDCG@k relaxation at higher cost; ``bce``
when calibrated probabilities matter; ``mse`` for regression or pointwise distillation.
"""

from ranking.losses.compat import ALLRANK_DEFAULTS, allrank_options
from ranking.losses.gains import GainSpec, resolve_gain
from ranking.losses.lambda_framework import lambdaloss
from ranking.losses.listwise import approx_ndcg, listmle, listnet, softmax_ce
from ranking.losses.neural_sort import neural_ndcg
from ranking.losses.pairwise import ranknet
from ranking.losses.pointwise import bce, mse
from ranking.losses.registry import LOSSES, build_loss, loss_options

__all__ = [
    "ALLRANK_DEFAULTS",
    "LOSSES",
    "GainSpec",
    "allrank_options",
    "approx_ndcg",
    "bce",
    "build_loss",
    "lambdaloss",
    "listmle",
    "listnet",
    "loss_options",
    "mse",
    "neural_ndcg",
    "ranknet",
    "resolve_gain",
    "softmax_ce",
]
