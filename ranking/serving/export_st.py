"""The sentence-transformers form of an exported model: a CrossEncoder, or
one SentenceTransformer per task.

Written by :func:`ranking.serving.export.export_model` where the model is expressible as pooling
plus dense layers (see its module docstring) and checked there against PyTorch.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ranking.serving.exported import check_parity


def st_cross_encoder_unsupported(module: Any) -> str | None:
    """Why the cross-encoder has no sentence-transformers form (``None``: it has one)."""
    tower = dict(module.hparams.get("tower") or {"name": "shared_bottom"})
    if module.uses_region_mask:
        return "a region-masked model needs the region id (use ranking.Ranker)"
    if getattr(module, "prior_feature_names", None):
        return "a model with a score prior needs its first-stage scores (use ranking.Ranker)"
    if tower.get("name") != "shared_bottom":
        return f"tower '{tower.get('name')}' is not a stack of dense layers (use ranking.Ranker)"
    if len(module.task_names) > 1 and list(tower.get("hidden_dims") or []):
        return "several tasks with hidden layers are parallel MLPs (use ranking.Ranker)"
    return None


def build_st_cross_encoder(module: Any, tokenizer: Any, out: Path) -> Any:
    """A ``sentence_transformers.CrossEncoder`` computing the module's scores.

    Transformer (``feature-extraction``, the module's ``max_length``) -> Pooling (the module's
    ``cls``/``mean``) -> Dense layers (the task heads; ReLU between hidden layers, Identity at the
    end, output ``scores``), activation ``Identity`` so that ``predict`` returns logits.
    """
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    scorer = module.model
    scorer.encoder.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    max_length = int(module.hparams.encoder.get("max_length", 64))
    transformer = Transformer(str(out), transformer_task="feature-extraction")
    transformer.max_seq_length = max_length
    hidden = int(scorer.encoder.config.hidden_size)
    pooling = Pooling(hidden, pooling_mode=scorer.pooling)
    layers = _dense_layers(scorer.tower.heads)
    dense = []
    for i, (linear, last) in enumerate(layers):
        block = Dense(
            linear.in_features,
            linear.out_features,
            activation_function=None if last else nn.ReLU(),
            init_weight=linear.weight.detach().clone(),
            init_bias=linear.bias.detach().clone(),
            module_output_name="scores" if i == len(layers) - 1 else None,
        )
        dense.append(block)
    return CrossEncoder(
        modules=[transformer, pooling, *dense], activation_fn=nn.Identity(), device="cpu"
    )


def _dense_layers(heads: nn.ModuleList) -> list[tuple[nn.Linear, bool]]:
    """The heads as a chain of linear layers: one head's MLP, or K linear heads stacked."""
    linears = [[m for m in head if isinstance(m, nn.Linear)] for head in heads]
    if len(heads) == 1:
        chain = linears[0]
        return [(layer, i == len(chain) - 1) for i, layer in enumerate(chain)]
    stacked = nn.Linear(linears[0][0].in_features, len(heads))
    with torch.no_grad():
        stacked.weight.copy_(torch.cat([h[0].weight for h in linears]))
        stacked.bias.copy_(torch.cat([h[0].bias for h in linears]))
    return [(stacked, True)]


def build_st_student(module: Any, tokenizer: Any, task: int) -> Any:
    """A ``SentenceTransformer`` of one task of the student: a query route and a document route.

    Each route: Transformer (its side's encoder and max length) -> Pooling -> Dense (the task's
    rows of that side's projection) -> Normalize when the student's similarity is cosine. The
    model's ``similarity_fn_name`` is ``cosine`` or ``dot`` accordingly.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Router, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    model, opts = module.model, module.bi_options
    dim = int(opts["dim"])
    routes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side, encoder, head, length in (
            ("query", model.query_encoder, model.query_head, opts["query_max_length"]),
            (
                "document",
                model.product_encoder or model.query_encoder,
                model.product_head,
                opts["product_max_length"],
            ),
        ):
            path = Path(tmp) / side
            encoder.save_pretrained(str(path))
            tokenizer.save_pretrained(str(path))
            transformer = Transformer(str(path), transformer_task="feature-extraction")
            transformer.max_seq_length = int(length)
            rows = slice(task * dim, (task + 1) * dim)
            hidden = int(encoder.config.hidden_size)
            modules = [
                transformer,
                Pooling(hidden, pooling_mode=opts["pooling"]),
                Dense(
                    hidden,
                    dim,
                    activation_function=None,
                    init_weight=head.weight[rows].detach().clone(),
                    init_bias=head.bias[rows].detach().clone(),
                ),
            ]
            if opts["similarity"] == "cosine":
                modules.append(Normalize())
            routes[side] = modules
        router = Router.for_query_document(routes["query"], routes["document"])
        similarity = "cosine" if opts["similarity"] == "cosine" else "dot"
        return SentenceTransformer(modules=[router], similarity_fn_name=similarity, device="cpu")


def check_st_student(
    path: Path,
    queries: Sequence[str],
    products: Sequence[str],
    reference: np.ndarray,
    module: Any,
    tolerance: float,
) -> float:
    from sentence_transformers import SentenceTransformer

    loaded = SentenceTransformer(str(path), local_files_only=True, device="cpu")
    q = loaded.encode_query(list(queries), convert_to_tensor=True)
    p = loaded.encode_document(list(products), convert_to_tensor=True)
    scores = loaded.similarity(q, p).numpy()
    if module.bi_options["similarity"] == "cosine":
        scores = scores / float(module.bi_options["temperature"])
    return check_parity(f"SentenceTransformer {path.name}", scores, reference, tolerance)
