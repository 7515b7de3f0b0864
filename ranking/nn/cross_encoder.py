"""Cross-encoder scorer: one transformer pass over ``[CLS] query [SEP] product [SEP]``, a tower."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from data_modules.errors import ConfigError
from ranking.nn.encoders import pool
from ranking.nn.towers import Tower, TowerOutput


class CrossEncoder(nn.Module):
    """Scores (query, product) pairs jointly encoded by a BERT-family transformer.

    ``h = dropout-free pool(BERT([CLS] q [SEP] p [SEP]))``, then
    ``tower(h, region, region_features) -> [N, K]``
    with one score per task (Nogueira & Cho, 2019, "Passage Re-ranking with BERT"; the multi-task
    BERT product-ranking paper shares the encoder across engagement tasks the same way). The tower
    (shared-bottom, MMoE or SEQ, optionally behind the MD region mask) owns dropout and heads.

    Length buckets: with ``bucket_tokens`` set, the N pairs are sorted by length and encoded in
    chunks of at most ``bucket_tokens`` padded tokens, each padded only to its own longest pair
    (instead of every pair to the longest of the batch). The pooled vectors are the same up to
    float rounding (padding is masked out of attention), and the tower still sees all N at once,
    so towers and their auxiliary losses are unchanged; only the padding work goes. On real
    product data the longest pair of a batch is about twice the mean (Home Depot: mean 24,
    longest of a 56-pair batch about 48 tokens), so this halves the encoder's work.

    Args:
        encoder: Hugging Face encoder returning ``last_hidden_state [N, T, H]``.
        tower: A :class:`ranking.nn.towers.Tower` built for hidden size H.
        pooling: ``cls`` or ``mean``.
        bucket_tokens: Padded tokens per encoder call when bucketing by length (``None``: one
            call for all pairs, padded to the longest).
        prior: A :class:`ranking.nn.prior.ScorePrior` whose term ``x @ W`` of the pairs' prior
            features is added to the tower's scores, or ``None``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        tower: Tower,
        pooling: str = "cls",
        bucket_tokens: int | None = None,
        prior: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if bucket_tokens is not None and bucket_tokens < 1:
            raise ValueError(f"bucket_tokens must be >= 1 or None, got {bucket_tokens}")
        self.encoder = encoder
        self.tower = tower
        self.pooling = pooling
        self.bucket_tokens = bucket_tokens
        self.prior = prior
        self.uses_token_type_ids = accepts_token_type_ids(encoder)

    def _encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """Pooled ``[n, H]`` of pairs trimmed to their longest real sequence."""
        seq_len = max(int(attention_mask.sum(-1).max()), 1)
        inputs = {
            "input_ids": input_ids[:, :seq_len],
            "attention_mask": attention_mask[:, :seq_len],
        }
        if self.uses_token_type_ids and token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids[:, :seq_len]
        hidden = self.encoder(**inputs).last_hidden_state
        return pool(hidden, attention_mask[:, :seq_len], self.pooling)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """Pooled pair vectors ``[N, H]`` (in input order), bucketed by length if configured."""
        if self.bucket_tokens is None or input_ids.shape[0] <= 1:
            return self._encode(input_ids, attention_mask, token_type_ids)
        lengths = attention_mask.sum(-1)
        order = torch.argsort(lengths, stable=True)
        pooled = []
        for chunk in length_chunks(lengths[order].tolist(), self.bucket_tokens):
            index = order[chunk]
            pooled.append(
                self._encode(
                    input_ids[index],
                    attention_mask[index],
                    None if token_type_ids is None else token_type_ids[index],
                )
            )
        sorted_h = torch.cat(pooled)
        out = torch.empty_like(sorted_h)
        out[order] = sorted_h
        return out

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        region: torch.Tensor,
        region_features: torch.Tensor | None = None,
        pair_features: torch.Tensor | None = None,
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
            pair_features: ``[N, P]`` prior features (a first-stage score per pair) when the
                scorer has a ``prior``; ignored otherwise.

        Returns:
            :class:`TowerOutput` with ``scores [N, K]`` (logits) and the tower's auxiliary loss.

        Raises:
            ConfigError: the scorer has a prior and no ``pair_features`` were given.
        """
        h = self.encode(input_ids, attention_mask, token_type_ids)
        if region_features is None:  # towers without a mask are called exactly as before
            out = self.tower(h, region)
        else:
            out = self.tower(h, region, region_features)
        if self.prior is None:
            return out
        if pair_features is None:
            raise ConfigError(
                "the model has a score prior (model.prior) but the batch carries no "
                "pair_features: attach them with "
                "ranking.scorers.prior_features.attach_prior_features"
            )
        return out._replace(scores=out.scores + self.prior(pair_features).to(out.scores.dtype))


def length_chunks(sorted_lengths: list[int], max_tokens: int) -> list[slice]:
    """Consecutive slices of length-sorted pairs, each at most ``max_tokens`` padded tokens.

    A chunk padded to its last (longest) pair costs ``count * longest`` tokens; a new chunk starts
    when adding the next pair would exceed ``max_tokens``. A single pair longer than the budget
    gets a chunk of its own.

    Example:
        >>> length_chunks([3, 3, 4, 8, 8], max_tokens=12)
        [slice(0, 3, None), slice(3, 4, None), slice(4, 5, None)]
    """
    chunks, start = [], 0
    for i, length in enumerate(sorted_lengths):
        if i > start and (i - start + 1) * length > max_tokens:
            chunks.append(slice(start, i))
            start = i
    if sorted_lengths:
        chunks.append(slice(start, len(sorted_lengths)))
    return chunks


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
    list mask (N = number of real items) and trimmed to the longest real sequence (or to each
    length bucket's own longest, see :class:`CrossEncoder`).

    Args:
        scorer: The cross-encoder.
        batch: A listwise batch (see :class:`data_modules.listwise.ListwiseCollator`); its
            ``region_features [B, L, F]`` and ``pair_features [B, L, P]``, when present, reach
            the tower and the prior packed as ``[N, F]`` and ``[N, P]``.
        region: ``[B]`` region id of each list in the model's vocabulary.

    Returns:
        ``([B, L, K] scores, 0 at padded positions; the tower's scalar auxiliary loss)``.
    """
    mask = batch["mask"]
    features = batch.get("region_features")
    prior = batch.get("pair_features")
    out = scorer(
        input_ids=batch["input_ids"][mask],
        attention_mask=batch["attention_mask"][mask],
        token_type_ids=batch["token_type_ids"][mask],
        region=region.unsqueeze(1).expand_as(mask)[mask],
        region_features=None if features is None else features[mask],
        pair_features=None if prior is None else prior[mask],
    )
    scores = out.scores.new_zeros((*mask.shape, out.scores.shape[-1]))
    scores[mask] = out.scores
    return scores, out.aux_loss
