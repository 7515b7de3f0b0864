"""Cross-encoder scorer: one transformer pass over ``[CLS] query [SEP] product [SEP]``."""

from __future__ import annotations

import torch
from torch import nn

from ranking.encoders import pool


class CrossEncoder(nn.Module):
    """Scores (query, product) pairs jointly encoded by a BERT-family transformer.

    ``score = W · dropout(pool(BERT([CLS] q [SEP] p [SEP]))) + b`` with one output per task
    (Nogueira & Cho, 2019, "Passage Re-ranking with BERT"; the multi-task BERT product-ranking
    paper shares the encoder across engagement tasks the same way).

    Args:
        encoder: Hugging Face encoder returning ``last_hidden_state [N, T, H]``.
        num_tasks: K, the number of scores per pair.
        pooling: ``cls`` or ``mean``.
        dropout: Dropout on the pooled vector.
    """

    def __init__(
        self, encoder: nn.Module, num_tasks: int, pooling: str = "cls", dropout: float = 0.1
    ):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_tasks)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Score N pairs.

        Args:
            input_ids: ``[N, T]`` token ids.
            attention_mask: ``[N, T]``, 1 for real tokens.
            token_type_ids: ``[N, T]`` segment ids (0 query, 1 product).

        Returns:
            ``[N, K]`` scores (logits).
        """
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return self.head(self.dropout(pool(hidden, attention_mask, self.pooling)))


def score_lists(scorer: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Run ``scorer`` on the real items of a listwise batch only, and scatter back to lists.

    Padded list positions cost nothing: the ``[B, L, T]`` inputs are packed to ``[N, T]`` with the
    list mask (N = number of real items) and trimmed to the longest real sequence.

    Returns:
        ``[B, L, K]`` scores, 0 at padded positions.
    """
    mask = batch["mask"]
    attention = batch["attention_mask"][mask]
    seq_len = int(attention.sum(-1).max())
    packed = scorer(
        input_ids=batch["input_ids"][mask][:, :seq_len],
        attention_mask=attention[:, :seq_len],
        token_type_ids=batch["token_type_ids"][mask][:, :seq_len],
    )
    scores = packed.new_zeros((*mask.shape, packed.shape[-1]))
    scores[mask] = packed
    return scores
