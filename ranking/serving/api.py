"""``Ranker``: score and rank products for a query from Python, with any trained shoprank model.

    >>> from ranking import Ranker
    >>> ranker = Ranker.from_checkpoint("logs/train/runs/<run>/checkpoints/last.ckpt")
    >>> ranker.rank("red running shoes", ["Nike Air Zoom ; Nike ; red", "Blue wool hat"])
    [Ranked(product='Nike Air Zoom ; Nike ; red', score=2.31, index=0), ...]

A :class:`Ranker` wraps a cross-encoder (:class:`ranking.modules.cross_encoder.RankingModule`) or a
distilled bi-encoder student (:class:`ranking.modules.bi_encoder.BiEncoderModule`), loaded from a
Lightning checkpoint or from a directory written by ``python -m experiments.export``. It builds the
texts exactly as training did (:class:`TextOptions`: the query prefixed with its region when the run
had ``data.region_in_query``, product fields joined by " ; "), tokenises, batches (longest texts
together, so padding stays short) and runs on the chosen device without gradients.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import torch
import yaml

from data_modules.errors import ConfigError, DataValidationError
from data_modules.schema import DEFAULT_PRODUCT_FIELDS, product_text_expr

log = logging.getLogger(__name__)

EXPORT_CONFIG = "shoprank.json"
Product = str | Mapping[str, Any]


@dataclass(frozen=True)
class TextOptions:
    """How a run turned a (query, product) row into text (from its ``data`` config).

    Attributes:
        region_in_query: Prefix the query with its region, ``"eu | red shoes"``.
        product_text_fields: Product columns joined by " ; " into the product text.
    """

    region_in_query: bool = True
    product_text_fields: tuple[str, ...] = DEFAULT_PRODUCT_FIELDS

    @classmethod
    def from_run_config(cls, path: str | Path) -> TextOptions:
        """The options of a run's resolved ``config.yaml`` (defaults where it has none)."""
        config = yaml.safe_load(Path(path).read_text()) or {}
        data = config.get("data") or {}
        return cls(
            region_in_query=bool(data.get("region_in_query", True)),
            product_text_fields=tuple(data.get("product_text_fields") or DEFAULT_PRODUCT_FIELDS),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "region_in_query": self.region_in_query,
            "product_text_fields": list(self.product_text_fields),
        }


def run_config_of(checkpoint: str | Path) -> Path | None:
    """``<run dir>/config.yaml`` of a checkpoint in ``<run dir>/checkpoints/``, if present."""
    checkpoint = Path(checkpoint).expanduser().resolve()
    for directory in (checkpoint.parent.parent, checkpoint.parent):
        if (directory / "config.yaml").is_file():
            return directory / "config.yaml"
    return None


class Ranked(NamedTuple):
    """One product of a ranking: the product as given, its score, its position in the input."""

    product: Product
    score: float
    index: int


@dataclass
class Ranker:
    """Scores and ranks products for a query with a trained model (see the module docstring).

    Args:
        module: A loaded :class:`~ranking.modules.cross_encoder.RankingModule` or
            :class:`~ranking.modules.bi_encoder.BiEncoderModule`.
        text: How the run built its texts.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...; ``None``: CUDA when available.
        batch_size: Pairs (cross-encoder) or texts (student) per forward pass.
    """

    module: Any
    text: TextOptions = field(default_factory=TextOptions)
    device: str | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        from ranking.modules.bi_encoder import BiEncoderModule
        from ranking.nn.encoders import load_tokenizer

        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.module = self.module.to(self.device).eval()
        self.kind = "bi_encoder" if isinstance(self.module, BiEncoderModule) else "cross_encoder"
        self.tokenizer = load_tokenizer(self.module.hparams.encoder)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | None = None,
        batch_size: int = 64,
        text: TextOptions | None = None,
    ) -> Ranker:
        """Load a checkpoint of ``experiments.train`` or ``experiments.distill``.

        The text options come from the run's ``config.yaml`` beside ``checkpoints/`` unless
        ``text`` is given (defaults, with a warning, when neither exists).
        """
        from ranking.serving.checkpoints import load_checkpoint

        module = load_checkpoint(path)
        if text is None:
            config = run_config_of(path)
            text = TextOptions.from_run_config(config) if config else TextOptions()
            if config is None:
                log.warning("%s: no run config.yaml found; default text options %s", path, text)
        return cls(module, text, device, batch_size)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | None = None, batch_size: int = 64
    ) -> Ranker:
        """Load a directory written by ``python -m experiments.export`` (no pickle involved)."""
        from ranking.serving.exported import load_exported

        module, text = load_exported(directory)
        return cls(module, TextOptions(**text), device, batch_size)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, batch_size: int = 64) -> Ranker:
        """:meth:`from_pretrained` for an exported directory, :meth:`from_checkpoint` otherwise."""
        if (Path(path).expanduser() / EXPORT_CONFIG).is_file():
            return cls.from_pretrained(path, device, batch_size)
        return cls.from_checkpoint(path, device, batch_size)

    # ------------------------------------------------------------------ properties
    @property
    def tasks(self) -> list[str]:
        """The model's tasks, in score order."""
        return list(self.module.task_names)

    @property
    def regions(self) -> list[str]:
        """The regions the model was trained on."""
        return list(self.module.model_regions)

    # ------------------------------------------------------------------ texts
    def _region_prefix(self) -> bool:
        if self.kind == "bi_encoder":
            return bool(self.module.bi_options["query_region_prefix"])
        return self.text.region_in_query

    def _region(self, region: str | None) -> tuple[str | None, int]:
        """The region's name for the text and its id in the model (checked)."""
        regions = self.regions
        needs = self.module.uses_region_mask or self._region_prefix()
        if region is None:
            if needs and len(regions) > 1:
                raise ConfigError(
                    f"region: the model was trained on regions {regions} and reads the region "
                    "(region mask or region in the query text); pass region=<one of them>"
                )
            region = regions[0] if needs else None
        if region is not None and region not in regions and self.module.uses_region_mask:
            raise ConfigError(
                f"region {region!r} was not in the training data (model regions: {regions}); "
                "a region-masked model cannot score it"
            )
        index = regions.index(region) if region in regions else 0
        return region, index

    def query_text(self, query: str, region: str | None = None) -> str:
        """The query as the model reads it (``"{region} | {query}"`` when trained so)."""
        name, _ = self._region(region)
        return f"{name} | {query}" if self._region_prefix() and name is not None else query

    def product_texts(self, products: Sequence[Product]) -> list[str]:
        """Product texts: strings as they are, mappings joined from the run's product fields."""

        if isinstance(products, str | Mapping):
            raise DataValidationError("products must be a list (of texts or of field mappings)")
        if not products:
            return []
        if all(isinstance(p, str) for p in products):
            return list(products)
        if not all(isinstance(p, Mapping) for p in products):
            raise DataValidationError(
                "products: give all texts (str) or all field mappings, e.g. "
                "{'product_title': ..., 'product_brand': ...}"
            )
        fields = [f for f in self.text.product_text_fields if any(f in p for p in products)]
        if "product_title" not in fields:
            raise DataValidationError("products: every mapping needs a 'product_title'")
        frame = pl.DataFrame(
            {f: [None if p.get(f) is None else str(p.get(f)) for p in products] for f in fields},
            schema={f: pl.String for f in fields},
        )
        return frame.select(product_text_expr(fields)).to_series().to_list()

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score(
        self,
        query: str,
        products: Sequence[Product],
        region: str | None = None,
        region_features: Sequence[float] | np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Scores of each product for ``query``, per task: ``{task: float32 [len(products)]}``.

        Args:
            query: The query text.
            products: Product texts, or mappings of product fields (``product_title``, ...).
            region: The query's region (needed when the model reads it and knows several).
            region_features: ``[F]`` or ``[len(products), F]`` values of the region feature
                columns, for a region mask trained with them.

        Returns:
            Logits, higher is better (not probabilities).
        """
        texts = self.product_texts(products)
        name, index = self._region(region)
        qtext = self.query_text(query, name)
        if not texts:
            return {t: np.zeros(0, np.float32) for t in self.tasks}
        if self.kind == "bi_encoder":
            scores = self._score_student(qtext, texts)
        else:
            prior = self._prior_features(query, texts)  # the raw query, as in training
            scores = self.score_pairs([(qtext, p) for p in texts], index, region_features, prior)
        return {t: scores[:, k] for k, t in enumerate(self.tasks)}

    def _prior_features(self, query: str, texts: list[str]) -> np.ndarray | None:
        """``[N, P]`` prior features of (raw query, product text) pairs (model with a prior)."""
        names = list(getattr(self.module, "prior_feature_names", []) or [])
        if not names:
            return None
        from ranking.scorers.prior_features import compute_prior_features

        pairs = pl.DataFrame({"query": [query] * len(texts), "product": texts})
        return compute_prior_features(names, pairs)

    def rank(
        self,
        query: str,
        products: Sequence[Product],
        region: str | None = None,
        task: str | None = None,
        top_k: int | None = None,
        region_features: Sequence[float] | np.ndarray | None = None,
    ) -> list[Ranked]:
        """``products`` ordered by ``task``'s score (default: the first task), best first.

        Ties keep the input order. ``top_k`` keeps the best ``k``.
        """
        task = task or self.tasks[0]
        if task not in self.tasks:
            raise ConfigError(f"task: unknown task {task!r}; the model's: {self.tasks}")
        scores = self.score(query, products, region, region_features)[task]
        order = np.argsort(-scores, kind="stable")[: top_k if top_k is not None else None]
        return [Ranked(products[i], float(scores[i]), int(i)) for i in order]

    def _batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        order = np.argsort(-np.asarray(lengths), kind="stable")
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def _pad(self, encoded: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        padded = self.tokenizer.pad(encoded, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in padded.items()}

    def _features(self, values: Any, n: int) -> torch.Tensor | None:
        dim = self.module.region_feature_dim
        if dim == 0:
            if values is not None:
                raise ConfigError("region_features: the model has no region features")
            return None
        if values is None:
            raise ConfigError(
                f"region_features: the model's region mask reads {dim} feature(s) "
                f"{self.module.region_feature_columns}; pass them"
            )
        array = np.asarray(values, dtype=np.float32)
        array = np.broadcast_to(array, (n, dim)) if array.ndim == 1 else array
        if array.shape != (n, dim):
            raise ConfigError(f"region_features must be [{dim}] or [{n}, {dim}], got {array.shape}")
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    @torch.no_grad()
    def score_pairs(
        self,
        pairs: Sequence[tuple[str, str]],
        region: int = 0,
        region_features: Any = None,
        prior_features: np.ndarray | None = None,
    ) -> np.ndarray:
        """Cross-encoder scores ``[N, K]`` of (query text, product text) pairs taken as they are.

        No region prefix is added (the texts are what the encoder reads); ``region`` is the
        model's region id for a region mask. A model with a score prior (``model.prior``) needs
        ``prior_features [N, P]``; without them they are computed from the pairs' texts.
        """
        if self.kind != "cross_encoder":
            raise ConfigError("score_pairs: a bi-encoder student scores a query's products: score")
        max_length = int(self.module.hparams.encoder.get("max_length", 64))
        queries = [q for q, _ in pairs]
        products = [p for _, p in pairs]
        encoded = self.tokenizer(
            queries,
            products,
            truncation="longest_first",
            max_length=max_length,
            return_token_type_ids=True,
        )
        rows = [{k: encoded[k][i] for k in encoded} for i in range(len(pairs))]
        features = self._features(region_features, len(pairs))
        if prior_features is None and getattr(self.module, "prior_feature_names", None):
            from ranking.scorers.prior_features import compute_prior_features

            frame = pl.DataFrame({"query": queries, "product": products})
            prior_features = compute_prior_features(self.module.prior_feature_names, frame)
        prior = None if prior_features is None else torch.as_tensor(prior_features).to(self.device)
        out = np.zeros((len(pairs), len(self.tasks)), np.float32)
        for index in self._batches([len(r["input_ids"]) for r in rows]):
            batch = self._pad([rows[i] for i in index])
            result = self.module.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch.get("token_type_ids"),
                region=torch.full((len(index),), region, device=self.device),
                region_features=None if features is None else features[torch.from_numpy(index)],
                pair_features=None if prior is None else prior[torch.from_numpy(index)],
            )
            out[index] = result.scores.float().cpu().numpy()
        return out

    @torch.no_grad()
    def _score_student(self, query: str, products: list[str]) -> np.ndarray:
        from data_modules.student import tokenize_texts

        opts = self.module.bi_options
        model = self.module.model
        pad = int(self.tokenizer.pad_token_id)
        q_tokens = tokenize_texts(self.tokenizer, [query], int(opts["query_max_length"]))
        p_tokens = tokenize_texts(self.tokenizer, products, int(opts["product_max_length"]))
        ids, attention = q_tokens.pad(np.array([0]), pad)
        q_vec = model.encode_queries(
            torch.from_numpy(ids).to(self.device), torch.from_numpy(attention).to(self.device)
        )
        out = np.zeros((len(products), len(self.tasks)), np.float32)
        lengths = p_tokens.offsets[1:] - p_tokens.offsets[:-1]
        for index in self._batches(lengths):
            ids, attention = p_tokens.pad(index, pad)
            p_vec = model.encode_products(
                torch.from_numpy(ids).to(self.device), torch.from_numpy(attention).to(self.device)
            )
            out[index] = model.similarity_scores(q_vec, p_vec).float().cpu().numpy()
        return out

    def __repr__(self) -> str:
        return (
            f"Ranker(kind={self.kind}, tasks={self.tasks}, regions={self.regions}, "
            f"device={self.device}, text={json.dumps(self.text.to_dict())})"
        )
