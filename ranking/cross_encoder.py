"""Cross-encoder scorer: one transformer pass over ``[CLS] query [SEP] product [SEP]``, a tower."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ranking.encoders import pool
from ranking.towers import Tower, TowerOutput


class CrossEncoder(nn.Module):
    """Scores (query, product) pairs jointly encoded by a BERT-family transformer.

    ``h = dropout-free pool(BERT([CLS] q [SEP] p [SEP]))``, then
    ``tower(h, region, region_features) -> [N, K]``
    with one score per task (Nogueira & Cho, 2019, "Passage Re-ranking with BERT"; the multi-task
    BERT product-ranking paper shares the encoder across engagement tasks the same way). The tower
    (shared-bottom, MMoE or SEQ, optionally behind the MD region mask) owns dropout and heads.

    Args:
        encoder: Hugging Face encoder returning ``last_hidden_state [N, T, H]``.
        tower: A :class:`ranking.towers.Tower` built for hidden size H.
        pooling: ``cls`` or ``mean``.
    """

    def __init__(self, encoder: nn.Module, tower: Tower, pooling: str = "cls") -> None:
        super().__init__()
        self.encoder = encoder
        self.tower = tower
        self.pooling = pooling
        self.uses_token_type_ids = accepts_token_type_ids(encoder)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        region: torch.Tensor,
        region_features: torch.Tensor | None = None,
    ) -> TowerOutput:
        """Score N pairs.

        Args:
            input_ids: ``[N, T]`` token ids.
            attention_mask: ``[N, T]``, 1 for real tokens.
            token_type_ids: ``[N, T]`` segment ids (0 query, 1 product); ignored by encoders
                without segment embeddings (RoBERTa, DistilBERT: see
                :func:`accepts_token_type_ids`).
            region: ``[N]`` region id of each pair (model vocabulary).
            region_features: ``[N, F]`` raw region feature columns for the tower's region mask
                (standardised there), or ``None``.

        Returns:
            :class:`TowerOutput` with ``scores [N, K]`` (logits) and the tower's auxiliary loss.
        """
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.uses_token_type_ids and token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**inputs).last_hidden_state
        h = pool(hidden, attention_mask, self.pooling)
        if region_features is None:  # towers without a mask are called exactly as before
            return self.tower(h, region)
        return self.tower(h, region, region_features)


def accepts_token_type_ids(encoder: nn.Module) -> bool:
    """Whether ``encoder`` takes segment ids, and has more than one segment embedding.

    BERT and MiniLM do. DistilBERT's forward has no ``token_type_ids``; RoBERTa's takes them but
    has one segment embedding (``type_vocab_size=1``), so segment id 1 would index past it.
    """
    if "token_type_ids" not in inspect.signature(encoder.forward).parameters:
        return False
    config = getattr(encoder, "config", None)
    return int(getattr(config, "type_vocab_size", 2) or 0) >= 2


def score_lists(
    scorer: CrossEncoder, batch: dict[str, torch.Tensor], region: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``scorer`` on the real items of a listwise batch only, and scatter back to lists.

    Padded list positions cost nothing: the ``[B, L, T]`` inputs are packed to ``[N, T]`` with the
    list mask (N = number of real items) and trimmed to the longest real sequence.

    Args:
        scorer: The cross-encoder.
        batch: A listwise batch (see :class:`data_modules.listwise.ListwiseCollator`); its
            ``region_features [B, L, F]``, when present, reach the tower packed as ``[N, F]``.
        region: ``[B]`` region id of each list in the model's vocabulary.

    Returns:
        ``([B, L, K] scores, 0 at padded positions; the tower's scalar auxiliary loss)``.
    """
    mask = batch["mask"]
    features = batch.get("region_features")
    attention = batch["attention_mask"][mask]
    seq_len = int(attention.sum(-1).max())
    out = scorer(
        input_ids=batch["input_ids"][mask][:, :seq_len],
        attention_mask=attention[:, :seq_len],
        token_type_ids=batch["token_type_ids"][mask][:, :seq_len],
        region=region.unsqueeze(1).expand_as(mask)[mask],
        region_features=None if features is None else features[mask],
    )
    scores = out.scores.new_zeros((*mask.shape, out.scores.shape[-1]))
    scores[mask] = out.scores
    return scores, out.aux_loss
