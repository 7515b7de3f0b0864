"""LambdaMART over text-match features: the learning-to-rank baseline a ranking team already has.

Gradient-boosted trees with the LambdaRank objective (LightGBM) over documented, cheap features of
each (query, product) pair, trained on the *training* split's lists, early-stopped on the
validation split's NDCG@10, and scored on the same test lists as the model. One booster per task.

Features (:data:`FEATURES`), computed once for every pair row:

* ``bm25_product``, ``bm25_title``, ``bm25_description``, ``bm25_brand``: BM25 (Lucene variant,
  :func:`ranking.scorers.text_baselines.bm25_row_scores`) of the query against the joined product
  text and against each field alone (0 where a field is empty or absent);
* ``cosine``: zero-shot all-MiniLM-L6-v2 cosine of query and product text (the
  ``minilm_zero_shot`` baseline's score);
* ``query_words``, ``title_words``, ``description_chars`` (``log1p``): lengths;
* ``title_coverage`` / ``product_coverage``: share of the query's words found in the title / in
  the whole product text; ``title_jaccard``: Jaccard of the word sets; ``trigram_jaccard``:
  Jaccard of character 3-gram sets of query and title; ``phrase_in_title``: the whole query
  appears in the title; ``number_match``: share of the query's numbers found in the title
  (1 when the query has none);
* list-relative: ``bm25_rank``, ``cosine_rank`` (1 = best in the list, ties share the best
  rank), ``bm25_gap``, ``cosine_gap`` (distance to the list's best) and ``list_size``.

Labels: LambdaRank needs integer grades. A task's labels (gains, grades or 0/1) become grades
``round(G * y)`` with the smallest ``G <= 30`` that puts every value within ``0.05 / G`` of a
grade (Home Depot's averages of 3 or 4 ratings, printed to two decimals: G = 24; CrowdFlower's
averaged medians: G = 6; integer grades: G = 1), and ``label_gain[i] = 2^(i / G) - 1``: the
booster then optimises the very NDCG (exponential gain of ``y``) that the project reports.

References:
    C. J. C. Burges, "From RankNet to LambdaRank to LambdaMART: An Overview", Microsoft Research
    Technical Report MSR-TR-2010-82, 2010.
    G. Ke et al., "LightGBM: A Highly Efficient Gradient Boosting Decision Tree", NeurIPS 2017.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import torch

from data_modules.errors import ConfigError, DataValidationError
from ranking.metrics.per_query import ScoreFn
from ranking.scorers.text_baselines import PAD_SCORE, biencoder_row_scores, bm25_row_scores

log = logging.getLogger(__name__)

FEATURES = (
    "bm25_product",
    "bm25_title",
    "bm25_description",
    "bm25_brand",
    "cosine",
    "query_words",
    "title_words",
    "description_chars",
    "title_coverage",
    "product_coverage",
    "title_jaccard",
    "trigram_jaccard",
    "phrase_in_title",
    "number_match",
    "bm25_rank",
    "cosine_rank",
    "bm25_gap",
    "cosine_gap",
    "list_size",
)
DEFAULTS: dict[str, Any] = {
    "n_estimators": 2000,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 20,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "early_stopping_rounds": 100,
    "eval_at": 10,
}
MAX_GRID = 30
GRADE_TOLERANCE = 0.05
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _trigrams(text: str) -> set[str]:
    text = f" {text.lower()} "
    return {text[i : i + 3] for i in range(len(text) - 2)}


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _field(table: pl.DataFrame, column: str) -> list[str]:
    if column not in table.columns:
        return [""] * table.height
    return table.get_column(column).cast(pl.String).fill_null("").to_list()


def _bm25_or_zero(queries: list[str], texts: list[str]) -> np.ndarray:
    """BM25 of each pair; 0 for all when no text of the field has a word (e.g. no brands)."""
    if not any(_WORD.search(t) for t in texts):
        return np.zeros(len(texts), dtype=np.float32)
    frame = pl.DataFrame({"query": queries, "product": texts})
    try:
        return bm25_row_scores(frame)
    except DataValidationError:  # only stopwords in the field
        return np.zeros(len(texts), dtype=np.float32)


def pair_features(
    rows: pl.DataFrame, product_text: Sequence[str], cosine: np.ndarray
) -> np.ndarray:
    """The :data:`FEATURES` matrix ``[N, F]`` (float32) of ``N`` pair rows.

    Args:
        rows: One row per pair, in pair-row order: ``query_id``, ``query``, ``product_title`` and,
            when present, ``product_description`` and ``product_brand``.
        product_text: The joined product text of each pair (what the model reads).
        cosine: ``[N]`` zero-shot cosine of each pair.
    """
    queries = _field(rows, "query")
    titles, descriptions = _field(rows, "product_title"), _field(rows, "product_description")
    columns: dict[str, np.ndarray] = {
        "bm25_product": _bm25_or_zero(queries, list(product_text)),
        "bm25_title": _bm25_or_zero(queries, titles),
        "bm25_description": _bm25_or_zero(queries, descriptions),
        "bm25_brand": _bm25_or_zero(queries, _field(rows, "product_brand")),
        "cosine": np.asarray(cosine, dtype=np.float32),
    }
    lexical = np.zeros((len(queries), 9), dtype=np.float32)
    for i, (query, title, description, product) in enumerate(
        zip(queries, titles, descriptions, product_text, strict=True)
    ):
        q_words, t_words = _words(query), _words(title)
        numbers = set(_NUMBER.findall(query))
        lexical[i] = (
            len(q_words),
            len(t_words),
            np.log1p(len(description)),
            len(q_words & t_words) / len(q_words) if q_words else 0.0,
            len(q_words & _words(product)) / len(q_words) if q_words else 0.0,
            _jaccard(q_words, t_words),
            _jaccard(_trigrams(query), _trigrams(title)),
            float(query.strip().lower() in title.lower()) if query.strip() else 0.0,
            len(numbers & set(_NUMBER.findall(title))) / len(numbers) if numbers else 1.0,
        )
    names = FEATURES[5:14]
    columns.update({name: lexical[:, j] for j, name in enumerate(names)})
    frame = pl.DataFrame(
        {
            "query_id": rows.get_column("query_id"),
            "bm25": columns["bm25_product"],
            "cosine": columns["cosine"],
        }
    )
    relative = frame.select(
        pl.col("bm25").rank("min", descending=True).over("query_id").alias("bm25_rank"),
        pl.col("cosine").rank("min", descending=True).over("query_id").alias("cosine_rank"),
        (pl.col("bm25").max().over("query_id") - pl.col("bm25")).alias("bm25_gap"),
        (pl.col("cosine").max().over("query_id") - pl.col("cosine")).alias("cosine_gap"),
        pl.len().over("query_id").alias("list_size"),
    )
    columns.update({name: relative.get_column(name).to_numpy() for name in relative.columns})
    return np.stack([columns[name].astype(np.float32) for name in FEATURES], axis=1)


def label_grades(values: np.ndarray, task: str) -> tuple[np.ndarray, list[float]]:
    """``(integer grades, label_gain)`` for LambdaRank from non-negative labels ``values``.

    Grades are ``round(G * y)`` with the smallest ``G <= 30`` that puts every value within 0.05
    of a grade (labels printed with two decimals, such as Home Depot's gain 0.665 of a 2.33
    rating, are not exact multiples), and ``label_gain[i] = 2^(i / G) - 1``: the exponential gain
    of the original ``y``, the gain of the project's NDCG. Labels that need a finer grid are
    rounded to ``G = 30`` (logged).

    Raises:
        DataValidationError: a negative or non-finite label, naming the task.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all() or values.min() < 0:
        raise DataValidationError(
            f"baselines.lambdamart: task '{task}' labels must be finite and >= 0, found "
            f"[{np.nanmin(values) if values.size else 'none'}, "
            f"{np.nanmax(values) if values.size else 'none'}]"
        )
    for grid in range(1, MAX_GRID + 1):
        if np.abs(values * grid - np.round(values * grid)).max() < GRADE_TOLERANCE:
            break
    else:
        log.info("lambdamart: task '%s' labels rounded to 1/%d steps", task, MAX_GRID)
    grades = np.round(values * grid).astype(np.int32)
    return grades, [float(2 ** (i / grid) - 1) for i in range(int(grades.max()) + 1)]


def _groups(query_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(order, sizes)``: rows sorted so each query's rows are contiguous, and the run lengths."""
    codes = pl.Series(query_ids).cast(pl.Categorical).to_physical().to_numpy()
    order = np.argsort(codes, kind="stable")
    _, sizes = np.unique(codes[order], return_counts=True)
    return order, sizes


def fit_lambdamart(
    features: np.ndarray,
    labels: np.ndarray,
    query_ids: Sequence[str],
    splits: Mapping[str, np.ndarray],
    task_names: Sequence[str],
    seed: int = 0,
    threads: int = 0,
    **options: Any,
) -> list[Any]:
    """One early-stopped LightGBM LambdaRank booster per task.

    Args:
        features: ``[N, F]`` of every pair row.
        labels: ``[N, K]`` gains of every pair row.
        query_ids: ``[N]`` query of each pair row (list key).
        splits: ``{"train": rows, "val": rows}`` pair-row indices of the two splits.
        task_names: The ``K`` task names.
        seed: Seed of LightGBM's bagging and feature sampling.
        threads: LightGBM threads (0: its default).
        **options: Overrides of :data:`DEFAULTS` (``baselines.lambdamart.<option>``).

    Returns:
        ``K`` fitted ``lightgbm.LGBMRanker`` (``None`` for a task with no positive training label).
    """
    import lightgbm

    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"baselines.lambdamart: unknown option(s) {unknown}; accepted: {sorted(DEFAULTS)}"
        )
    opts = {**DEFAULTS, **options}
    stop, eval_at = int(opts.pop("early_stopping_rounds")), int(opts.pop("eval_at"))
    query_ids = np.asarray(query_ids, dtype=object)
    prepared = {}
    for name in ("train", "val"):
        rows = np.asarray(splits[name])
        order, sizes = _groups(query_ids[rows])
        prepared[name] = (rows[order], sizes)
    boosters = []
    for k, task in enumerate(task_names):
        grades, gains = label_grades(labels[:, k], task)
        (train_rows, train_sizes), (val_rows, val_sizes) = prepared["train"], prepared["val"]
        if grades[train_rows].max() == 0:
            log.warning("lambdamart: task '%s' has no positive training label; not fitted", task)
            boosters.append(None)
            continue
        ranker = lightgbm.LGBMRanker(
            objective="lambdarank",
            label_gain=gains,
            random_state=seed,
            n_jobs=threads or None,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
            **opts,
        )
        ranker.fit(
            features[train_rows],
            grades[train_rows],
            group=train_sizes,
            eval_X=(features[val_rows],),
            eval_y=(grades[val_rows],),
            eval_group=[val_sizes],
            eval_at=[eval_at],
            callbacks=[lightgbm.early_stopping(stop, verbose=False)],
        )
        log.info(
            "lambdamart: task '%s' stopped at %d trees (val ndcg@%d %.4f)",
            task,
            ranker.best_iteration_,
            eval_at,
            ranker.best_score_["valid_0"][f"ndcg@{eval_at}"],
        )
        boosters.append(ranker)
    return boosters


def lambdamart_scorer(
    datamodule: Any,
    num_tasks: int,
    seed: int = 0,
    cosine: np.ndarray | None = None,
    **options: Any,
) -> ScoreFn:
    """The LambdaMART baseline of a set-up :class:`~data_modules.ListwiseDataModule`.

    Trains on the datamodule's ``train`` lists, early-stops on ``val``, scores every pair row.

    Args:
        datamodule: The set-up DataModule (its split tables, pair texts and labels).
        num_tasks: ``K``.
        seed: LightGBM's seed.
        cosine: ``[N]`` zero-shot cosine of every pair row when already computed (the
            ``minilm_zero_shot`` baseline's); else computed here.
        **options: :data:`DEFAULTS` overrides.

    Returns:
        ``score(batch) -> [B, L, K]`` (task ``k`` from booster ``k``); :data:`PAD_SCORE` at padding.

    Raises:
        ConfigError: the datamodule has no ``train`` or ``val`` split (e.g. ``split=all``).
    """
    lists = datamodule.lists
    missing = [name for name in ("train", "val") if name not in lists or not len(lists[name])]
    if missing:
        raise ConfigError(
            f"baselines.lambdamart: needs training and validation lists; this data has no "
            f"{missing} split (a run on split=all cannot train it)"
        )
    table = _pair_table(datamodule)
    if cosine is None:
        cosine = biencoder_row_scores(datamodule.pair_texts)
    features = pair_features(table, datamodule.pair_texts.get_column("product").to_list(), cosine)
    splits = {name: np.concatenate(lists[name].rows) for name in ("train", "val")}
    boosters = fit_lambdamart(
        features,
        datamodule.labels,
        table.get_column("query_id").to_list(),
        splits,
        [str(c) for c in datamodule.label_columns],
        seed=seed,
        **options,
    )
    scores = np.full((features.shape[0], num_tasks), PAD_SCORE, dtype=np.float32)
    for k, booster in enumerate(boosters[:num_tasks]):
        if booster is not None:
            scores[:, k] = booster.predict(features, num_iteration=booster.best_iteration_)
        else:
            scores[:, k] = features[:, FEATURES.index("bm25_product")]
    row_scores = torch.from_numpy(scores)

    def score(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows = batch["rows"]
        values = row_scores[rows.clamp_min(0).cpu()]
        return values.masked_fill(~(rows >= 0).cpu().unsqueeze(-1), PAD_SCORE).to(rows.device)

    return score


def _pair_table(datamodule: Any) -> pl.DataFrame:
    """The datamodule's split tables as one frame, one row per pair row, in pair-row order."""
    table = pl.concat(list(datamodule.tables.values()), how="diagonal_relaxed").sort("__pair")
    if (
        table.height != datamodule.pair_texts.height
        or not (table.get_column("__pair").to_numpy() == np.arange(table.height)).all()
    ):
        raise DataValidationError(
            "baselines.lambdamart: the split tables do not cover every pair row exactly once"
        )
    return table
