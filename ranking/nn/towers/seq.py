"""SEQ tower: tasks learned as a sequence through a recurrent cell over the task order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from data_modules.errors import ConfigError
from ranking.nn.towers._checks import layer_dims, positive_int
from ranking.nn.towers.base import Tower, TowerOutput, mlp

CELLS = ("gru", "none")


def descending_penalty(scores: Tensor) -> Tensor:
    """Mean violation of descending task probabilities, ``mean(relu(p_t - p_{t-1}))``.

    ``p = sigmoid(scores)``; the mean runs over the N items and the K - 1 consecutive task pairs.
    Zero when every item's probabilities are non-increasing along the task order; 0 for K < 2 or
    N = 0. Gradients reach both ``p_t`` and ``p_{t-1}`` (as AITM's calibrator).

    Args:
        scores: ``[N, K]`` logits in task order.

    Returns:
        Scalar (float32 at least).

    Example:
        >>> p = torch.tensor([[0.9, 0.5, 0.2], [0.3, 0.6, 0.1]])
        >>> round(descending_penalty(torch.logit(p)).item(), 4)  # relu: 0, 0 / 0.3, 0
        0.075
    """
    if scores.shape[-1] < 2 or scores.shape[0] == 0:
        return scores.new_zeros((), dtype=torch.promote_types(scores.dtype, torch.float32))
    p = torch.sigmoid(scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores)
    return torch.relu(p[:, 1:] - p[:, :-1]).mean()


class SeqTower(Tower):
    """SEQ: multi-task learning as a sequence over the configured task order.

    A recurrent cell runs over the K tasks in ``tasks.order`` (e.g. click -> add-to-cart ->
    purchase); each step reads a task-specific projection of the shared representation and the
    state left by the previous task, and a task head scores that step's state::

        x_t = P_t dropout(h')                               [N, S]   (S = state_dim)
        z_t = GRUCell(x_t, z_{t-1}),  z_{-1} = 0            (cell="gru")
        z_t = tanh(x_t + z_{t-1})                           (cell="none")
        s_t = head_t(z_t)                                   scores [N, K]
        aux = descending_weight * mean_{n, t>=1} relu(p_t - p_{t-1}),   p = sigmoid(s)

    So task 0's score depends only on its own projection, and task t's on projections 0..t.

    Sources. SEQ+MD (S. Wang, A. Z. Chen, A. Clapp, S.-M. Shih, X. Zhao, "SEQ+MD: Learning
    Multi-Task as a SEQuence with Multi-Distribution Data", 2023) proposes learning the tasks as a
    sequence with a recurrent unit over tasks, each task's tower reading the previous task's state,
    and a regulariser that keeps the funnel's probabilities descending. Its exact wiring is not
    public; the closest published relative is AITM (Xi, Chen, Yan, Zhang, Zhu, Zhuang, Chen,
    "Modeling the Sequential Dependence among Audience Multi-step Conversions with Multi-task
    Learning in Targeted Display Advertising", KDD 2021), whose behavioural expectation
    calibrator is the same ``relu(p_t - p_{t-1})`` penalty (there summed, here averaged so its
    weight does not depend on N or K). Our interpretation: a GRU cell (not AITM's attention
    transfer), per-task linear projections as the step inputs, a zero initial state, per-task MLP
    heads on the states, and the averaged penalty on sigmoid of the logits.

    Note: with listwise losses the logits are only defined up to a per-list shift, so
    ``sigmoid(s)`` is not a calibrated probability; the penalty then constrains the logits'
    offsets between tasks. Set ``descending_weight=0`` to turn it off.

    Args:
        hidden_size: H.
        num_tasks: K, in the order the cell visits them.
        num_regions: Number of region ids.
        region_mask: Region mask spec (see :class:`~ranking.nn.towers.base.Tower`).
        state_dim: S, width of the projections and of the recurrent state.
        hidden_dims: Hidden widths of each task head (``()``: a linear head).
        dropout: Dropout on ``h'`` before the projections and before the heads' linear layers.
        cell: ``"gru"`` (``torch.nn.GRUCell``) or ``"none"`` (``tanh(x_t + z_{t-1})``, no
            parameters: an ablation of the gating).
        descending_weight: Weight of the descending probability regulariser (0 disables it).

    Raises:
        ConfigError: (a ``ValueError``) on an unknown cell or a negative weight.
    """

    def __init__(
        self,
        hidden_size: int,
        num_tasks: int,
        num_regions: int,
        region_mask: Mapping[str, object] | None = None,
        state_dim: int = 64,
        hidden_dims: Sequence[int] = (),
        dropout: float = 0.1,
        cell: str = "gru",
        descending_weight: float = 0.1,
    ) -> None:
        super().__init__(hidden_size, num_tasks, num_regions, region_mask)
        self.state_dim = positive_int(state_dim, "state_dim")
        if cell not in CELLS:
            raise ConfigError(f"unknown cell {cell!r} for tower 'seq'; valid cells: {list(CELLS)}")
        if not float(descending_weight) >= 0.0:
            raise ConfigError(f"descending_weight must be >= 0, got {descending_weight!r}")
        self.descending_weight = float(descending_weight)
        self.dropout = nn.Dropout(dropout)
        self.projections = nn.ModuleList(
            nn.Linear(self.hidden_size, self.state_dim) for _ in range(self.num_tasks)
        )
        self.cell = nn.GRUCell(self.state_dim, self.state_dim) if cell == "gru" else None
        heads = layer_dims(hidden_dims, "hidden_dims")
        self.heads = nn.ModuleList(
            mlp(self.state_dim, heads, 1, dropout) for _ in range(self.num_tasks)
        )

    def step(self, x: Tensor, state: Tensor) -> Tensor:
        """One step of the recurrence: next state from input ``x`` and previous ``state``."""
        return torch.tanh(x + state) if self.cell is None else self.cell(x, state)

    def score(self, h: Tensor) -> TowerOutput:
        h = self.dropout(h)
        state = h.new_zeros(h.shape[0], self.state_dim)
        columns = []
        for projection, head in zip(self.projections, self.heads, strict=True):
            state = self.step(projection(h), state)
            columns.append(head(state))
        scores = torch.cat(columns, dim=-1)
        extras: dict[str, Tensor] = {}
        if self.descending_weight > 0.0:
            penalty = descending_penalty(scores)
            extras["descending_penalty"] = penalty.detach()
            aux = self.descending_weight * penalty
        else:
            aux = scores.new_zeros(())
        return TowerOutput(scores, aux, extras)
