"""Multi-gate mixture-of-experts (MMoE) tower."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from data_modules.errors import ConfigError
from ranking.nn.towers._checks import layer_dims, positive_int
from ranking.nn.towers.base import Tower, TowerOutput, mlp


class MMoETower(Tower):
    """Multi-gate mixture-of-experts tower (MMoE).

    Ma, Zhao, Yi, Chen, Hong, Chi, "Modeling Task Relationships in Multi-task Learning with
    Multi-gate Mixture-of-Experts", KDD 2018. E expert MLPs share the input; task k mixes them
    with its own softmax gate::

        f_e = expert_e(h')                                  [N, D]   (D = expert_dims[-1])
        g_k = softmax(W_k h')                               [N, E]   (sum_e g_k,e = 1)
        s_k = head_k(sum_e g_k,e f_e)                       [N]  ->  scores [N, K]

    The K gates are the row blocks of one ``Linear(H, K * E)`` (the same parameters as K separate
    gates, in one matrix product). ``extras["gates"]`` is ``[N, K, E]``.

    Args:
        hidden_size: H.
        num_tasks: K.
        num_regions: Number of region ids.
        region_mask: Region mask spec (see :class:`~ranking.nn.towers.base.Tower`).
        num_experts: E.
        expert_dims: Hidden widths of each expert MLP (non-empty; the last is D).
        hidden_dims: Hidden widths of each task head.
        dropout: Dropout before every linear layer of experts and heads.
    """

    def __init__(
        self,
        hidden_size: int,
        num_tasks: int,
        num_regions: int,
        region_mask: Mapping[str, object] | None = None,
        num_experts: int = 4,
        expert_dims: Sequence[int] = (64,),
        hidden_dims: Sequence[int] = (),
        dropout: float = 0.1,
    ) -> None:
        super().__init__(hidden_size, num_tasks, num_regions, region_mask)
        self.num_experts = positive_int(num_experts, "num_experts")
        experts = layer_dims(expert_dims, "expert_dims")
        if not experts:
            raise ConfigError("expert_dims must name at least one layer width")
        self.experts = nn.ModuleList(
            mlp(self.hidden_size, experts, None, dropout) for _ in range(self.num_experts)
        )
        self.gates = nn.Linear(self.hidden_size, self.num_tasks * self.num_experts)
        heads = layer_dims(hidden_dims, "hidden_dims")
        self.heads = nn.ModuleList(
            mlp(experts[-1], heads, 1, dropout) for _ in range(self.num_tasks)
        )

    def score(self, h: Tensor) -> TowerOutput:
        expert_out = torch.stack([expert(h) for expert in self.experts], dim=1)  # [N, E, D]
        logits = self.gates(h).view(-1, self.num_tasks, self.num_experts)
        gates = torch.softmax(logits, dim=-1)  # [N, K, E]
        mixed = torch.einsum("nke,ned->nkd", gates, expert_out)  # [N, K, D]
        scores = torch.cat([head(mixed[:, k]) for k, head in enumerate(self.heads)], dim=-1)
        return TowerOutput(scores, h.new_zeros(()), {"gates": gates})
