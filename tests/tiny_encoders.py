"""Tiny random Hugging Face encoder directories of other families than BERT, built in the tests.

* ``roberta``: RoBERTa (one segment embedding, positions offset by the padding id) with a
  byte-level BPE tokenizer saved as ``vocab.json`` + ``merges.txt`` only (no ``tokenizer.json``,
  no ``vocab.txt``), trained on a few hundred synthetic texts.
* ``distilbert``: DistilBERT (no ``token_type_ids`` in its forward at all) with the WordPiece
  vocabulary of all-MiniLM-L6-v2.
"""

from __future__ import annotations

from pathlib import Path

KINDS = ("roberta", "distilbert")
SIZE = {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64, "positions": 130}


def _corpus() -> list[str]:
    from data_modules.synthetic import SyntheticConfig, generate_synthetic

    table = generate_synthetic(SyntheticConfig(num_products=80, num_queries=30, seed=0))
    return [*table.get_column("query").unique().to_list(), *table["product_title"].to_list()]


def build(kind: str, path: Path) -> Path:
    """Write a randomly initialised ``kind`` encoder and its tokenizer into ``path``."""
    import torch

    torch.manual_seed(0)
    path.mkdir(parents=True, exist_ok=True)
    if kind == "roberta":
        from tokenizers import ByteLevelBPETokenizer
        from transformers import RobertaConfig, RobertaModel

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(
            _corpus(),
            vocab_size=600,
            min_frequency=1,
            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        )
        bpe.save_model(str(path))  # vocab.json + merges.txt, nothing else
        config = RobertaConfig(
            vocab_size=bpe.get_vocab_size(),
            hidden_size=SIZE["hidden"],
            num_hidden_layers=SIZE["layers"],
            num_attention_heads=SIZE["heads"],
            intermediate_size=SIZE["intermediate"],
            max_position_embeddings=SIZE["positions"],
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        )
        RobertaModel(config, add_pooling_layer=False).save_pretrained(str(path))
    elif kind == "distilbert":
        from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

        from ranking.nn.encoders import minilm_package_dir

        tokenizer = AutoTokenizer.from_pretrained(str(minilm_package_dir()), local_files_only=True)
        tokenizer.save_pretrained(str(path))
        config = DistilBertConfig(
            vocab_size=len(tokenizer),
            dim=SIZE["hidden"],
            n_layers=SIZE["layers"],
            n_heads=SIZE["heads"],
            hidden_dim=SIZE["intermediate"],
            max_position_embeddings=SIZE["positions"],
            dropout=0.0,
            attention_dropout=0.0,
        )
        DistilBertModel(config).save_pretrained(str(path))
    else:
        raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")
    return path
