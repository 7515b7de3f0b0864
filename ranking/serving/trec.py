"""Standard evaluation files: TREC run and qrels files per task, and a cross-check of our metrics.

What trec_eval, ``ir_measures`` and ``ranx`` read:

* run ``run.<task>.trec``: ``qid Q0 docid rank score run_name``, one line per scored pair, best
  first within a query (ranks from the score, ties broken by docid descending: trec_eval's own
  order, so its evaluation agrees with the file);
* qrels ``qrels.<task>.txt``: ``qid 0 docid grade``, one line per judged pair, for the queries
  that have at least one positive label for the task (a list without one is left out of our
  means, so it is left out here too and every tool averages over the same queries).

**Ids.** The format is whitespace-separated, but real ids are not always single words (Home Depot
and CrowdFlower use the query text as query id, CrowdFlower the title as product id). When any
query id (or product id) of a file set is empty or holds whitespace, every query id (product id)
is replaced by a number in the order of the sorted ids (``q1``, ``q2``, ... / ``d1``, ...), and
``qids.tsv`` (``docids.tsv``) maps them back; otherwise ids are written as they are. Run and
qrels files of one directory always share one mapping.

**Grades.** trec_eval reads integer grades. A task whose labels are all non-negative integers
(0/1 engagement, 0-3 relevance) is written as is. Otherwise (e.g. Home Depot's mean ratings
2.33, 2.67) each distinct positive label gets an integer level 1, 2, ... in increasing order
(labels <= 0 are level 0, so "relevant" stays ``label > 0``) and ``qrels.<task>.levels.tsv``
maps levels to labels.

**Gains.** Our NDCG uses the gain ``2^y - 1``; trec_eval's ``ndcg_cut`` uses the grade itself.
Both agree on 0/1 labels. :func:`cross_check` passes our gains to ``ir_measures`` (``nDCG(gains=
{grade: 2^label - 1})``), so it reproduces our values on graded labels too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from data_modules.errors import ConfigError

log = logging.getLogger(__name__)

RUN_FILE = "run.{task}.trec"
QRELS_FILE = "qrels.{task}.txt"
LEVELS_FILE = "qrels.{task}.levels.tsv"
QID_MAP_FILE = "qids.tsv"
DOCID_MAP_FILE = "docids.tsv"
CROSS_CHECK_TOLERANCE = 1e-6


# ---------------------------------------------------------------------------------------- ids
def _needs_numbers(ids: Sequence[str]) -> bool:
    return any(not i or any(c.isspace() for c in i) for i in ids)


@dataclass(frozen=True)
class TrecIds:
    """The ids written to TREC files: the ids themselves, or numbers with a mapping file.

    Attributes:
        queries: ``query_id -> qid`` when query ids are numbered, else ``None`` (written as is).
        products: ``product_id -> docid`` when product ids are numbered, else ``None``.
    """

    queries: dict[str, str] | None
    products: dict[str, str] | None

    @classmethod
    def for_ids(cls, query_ids: Sequence[str], product_ids: Sequence[str]) -> TrecIds:
        """Number the ids of a kind when any of them is empty or holds whitespace."""

        def numbered(ids: Sequence[str], prefix: str) -> dict[str, str] | None:
            unique = sorted({str(i) for i in ids})
            if not _needs_numbers(unique):
                return None
            return {value: f"{prefix}{n}" for n, value in enumerate(unique, start=1)}

        return cls(numbered(query_ids, "q"), numbered(product_ids, "d"))

    def apply(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with columns ``qid`` and ``docid`` (from ``query_id`` and ``product_id``)."""
        qid = pl.col("query_id").cast(pl.String)
        docid = pl.col("product_id").cast(pl.String)
        if self.queries is not None:
            qid = qid.replace_strict(self.queries)
        if self.products is not None:
            docid = docid.replace_strict(self.products)
        return frame.with_columns(qid.alias("qid"), docid.alias("docid"))

    def write_maps(self, directory: str | Path) -> list[Path]:
        """Write ``qids.tsv`` / ``docids.tsv`` (TREC id, original id) for the numbered kinds."""
        written = []
        for mapping, name, column in (
            (self.queries, QID_MAP_FILE, "query_id"),
            (self.products, DOCID_MAP_FILE, "product_id"),
        ):
            if mapping is None:
                continue
            path = Path(directory) / name
            trec = "qid" if column == "query_id" else "docid"
            pl.DataFrame({trec: list(mapping.values()), column: list(mapping.keys())}).write_csv(
                path, separator="\t"
            )
            written.append(path)
        return written


# ---------------------------------------------------------------------------------------- files
def _write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + ("\n" if lines else ""))
    tmp.replace(path)
    return path


def write_run(
    frame: pl.DataFrame, path: str | Path, score_column: str, run_name: str = "shoprank"
) -> Path:
    """Write a TREC run file from ``frame`` (columns ``qid``, ``docid`` and ``score_column``).

    Ranks are computed here: score descending, ties by docid descending (trec_eval's order).
    Scores are written with 9 significant digits, which round-trip float32: trec_eval re-sorts by
    score and must see the same ties as the file.

    Raises:
        ConfigError: ``run_name`` is empty or holds whitespace.
    """
    check_run_name(run_name)
    ordered = frame.sort(["qid", score_column, "docid"], descending=[False, True, True])
    ranks = ordered.select(pl.int_range(1, pl.len() + 1).over("qid")).to_series()
    lines = [
        f"{q} Q0 {d} {r} {s:.9g} {run_name}"
        for q, d, r, s in zip(
            ordered.get_column("qid"),
            ordered.get_column("docid"),
            ranks,
            ordered.get_column(score_column).cast(pl.Float64),
            strict=True,
        )
    ]
    return _write_lines(Path(path), lines)


@dataclass(frozen=True)
class Grades:
    """Integer TREC grades of one task's labels and the gain of each grade (``2^label - 1``)."""

    grades: np.ndarray  # [N] int64
    gains: dict[int, float]
    levels: dict[int, float] | None  # grade -> label when labels were mapped to levels


def grades_of(labels: np.ndarray) -> Grades:
    """Grades as the module docstring says: the labels themselves, or levels 0, 1, 2, ..."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.size and (np.isnan(labels).any()):
        raise ConfigError("qrels: a label is NaN; cannot write a grade for it")
    integral = bool(np.all(labels >= 0) and np.all(labels == np.round(labels)))
    if integral:
        grades = labels.astype(np.int64)
        values = sorted(set(grades.tolist()))
        return Grades(grades, {g: float(2.0**g - 1.0) for g in values}, None)
    positive = sorted(set(labels[labels > 0].tolist()))
    level_of = {value: n for n, value in enumerate(positive, start=1)}
    grades = np.array([level_of.get(v, 0) for v in labels.tolist()], dtype=np.int64)
    levels = {0: 0.0, **{n: value for value, n in level_of.items()}}
    return Grades(grades, {g: float(2.0 ** max(v, 0.0) - 1.0) for g, v in levels.items()}, levels)


def write_qrels(frame: pl.DataFrame, path: str | Path, label_column: str) -> Grades:
    """Write ``qid 0 docid grade`` for the queries with a positive ``label_column``.

    Returns:
        The :class:`Grades` of the rows written (their gains feed :func:`cross_check`).
    """
    judged = frame.filter((pl.col(label_column) > 0).any().over("qid")).sort(["qid", "docid"])
    grades = grades_of(judged.get_column(label_column).to_numpy())
    lines = [
        f"{q} 0 {d} {g}"
        for q, d, g in zip(
            judged.get_column("qid"), judged.get_column("docid"), grades.grades, strict=True
        )
    ]
    _write_lines(Path(path), lines)
    return grades


def check_run_name(run_name: str) -> None:
    """Raise ConfigError unless ``run_name`` is one word (the run format's last column)."""
    if not run_name or any(c.isspace() for c in str(run_name)):
        raise ConfigError(f"run_name must be one word without whitespace, got {run_name!r}")


def write_trec_files(
    directory: str | Path,
    frame: pl.DataFrame,
    tasks: Sequence[str],
    label_tasks: Sequence[str] = (),
    run_name: str = "shoprank",
) -> dict[str, Any]:
    """Write ``run.<task>.trec`` for every task and ``qrels.<task>.txt`` for ``label_tasks``.

    Args:
        directory: Where the files go.
        frame: One row per scored pair: ``query_id``, ``product_id``, ``score_<task>`` for every
            task and ``label_<task>`` for every task of ``label_tasks``.
        tasks: The model's tasks.
        label_tasks: Tasks whose labels are known (qrels are written for them only).
        run_name: The run files' last column.

    Returns:
        ``{"runs": {task: path}, "qrels": {task: path}, "gains": {task: {grade: gain}},
        "levels": {task: path}, "id_maps": [paths]}`` (paths as strings).
    """
    check_run_name(run_name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ids = TrecIds.for_ids(
        frame.get_column("query_id").cast(pl.String).to_list(),
        frame.get_column("product_id").cast(pl.String).to_list(),
    )
    frame = ids.apply(frame)
    out: dict[str, Any] = {"runs": {}, "qrels": {}, "gains": {}, "levels": {}}
    for task in tasks:
        path = write_run(frame, directory / RUN_FILE.format(task=task), f"score_{task}", run_name)
        out["runs"][task] = str(path)
    for task in label_tasks:
        path = directory / QRELS_FILE.format(task=task)
        grades = write_qrels(frame, path, f"label_{task}")
        out["qrels"][task] = str(path)
        out["gains"][task] = grades.gains
        if grades.levels is not None:
            levels = directory / LEVELS_FILE.format(task=task)
            pl.DataFrame(
                {"grade": list(grades.levels), "label": list(grades.levels.values())}
            ).write_csv(levels, separator="\t")
            out["levels"][task] = str(levels)
    out["id_maps"] = [str(p) for p in ids.write_maps(directory)]
    if out["id_maps"]:
        maps = ", ".join(out["id_maps"])
        log.info("Ids with whitespace were numbered in the TREC files; maps: %s", maps)
    return out


# ---------------------------------------------------------------------------------------- check
GAIN_RESOLUTION = 100_000  # largest integer gain handed to trec_eval for non-integer gains


def integer_gains(gains: Mapping[int, float]) -> tuple[dict[int, int], float]:
    """Gains as trec_eval takes them (small integers), and the tolerance they allow.

    NDCG does not change when every gain is multiplied by one constant, so integer gains
    (``2^g - 1`` of integer grades) are passed as they are, and other gains are scaled so that
    the largest is :data:`GAIN_RESOLUTION` and rounded (trec_eval allocates per gain value, so
    they must stay small); the rounding allows differences up to about 1e-4 then.
    """
    if all(float(v).is_integer() for v in gains.values()) and max(gains.values()) <= 1e6:
        return {g: int(v) for g, v in gains.items()}, CROSS_CHECK_TOLERANCE
    scale = GAIN_RESOLUTION / max(max(gains.values()), 1e-12)
    return {g: round(v * scale) for g, v in gains.items()}, 1e-4


def _measure(spec: str, gains: Mapping[int, float]) -> Any:
    """The ``ir_measures`` measure of one of our metric specs (None: no counterpart)."""
    import ir_measures

    from ranking.metrics.metric_set import parse_metric

    name, k = parse_metric(spec)
    if name == "ndcg":
        measure = ir_measures.nDCG(gains=dict(gains))
    else:
        measure = {
            "mrr": ir_measures.RR,
            "map": ir_measures.AP,
            "precision": ir_measures.P,
            "recall": ir_measures.R,
        }[name]
    return measure if k is None else measure @ k


def cross_check(
    files: Mapping[str, Any],
    metrics: Sequence[str],
    ours: Mapping[str, float],
    stage: str = "test",
    tolerance: float = CROSS_CHECK_TOLERANCE,
) -> dict[str, Any]:
    """Evaluate the written run and qrels files with ``ir_measures`` and compare with ours.

    Every measure is computed alone (``ir_measures`` 0.4 mixes up results when one call holds
    two nDCG variants).

    Args:
        files: The return value of :func:`write_trec_files`.
        metrics: Our metric specs (``ndcg@10``, ``mrr@10``, ``map``, ...).
        ours: Our aggregate values by name (``{stage}/{task}/{metric}``).
        stage: The prefix of ``ours``.
        tolerance: Largest difference reported as agreement (1e-4 where gains had to be
            rounded, see :func:`integer_gains`).

    Returns:
        ``{"tool", "values": {task: {metric: {"shoprank", "ir_measures"}}}, "max_abs_diff",
        "tolerance", "agrees"}``. Differences come from tied scores only (trec_eval breaks ties
        by docid, we by list position).

    Raises:
        ConfigError: ``ir_measures`` is not installed.
    """
    try:
        import ir_measures
    except ImportError as err:
        raise ConfigError(
            "cross_check=true needs ir_measures (pip install 'shoprank[eval]')"
        ) from err
    values: dict[str, dict[str, dict[str, float]]] = {}
    worst = 0.0
    for task, qrels_path in files["qrels"].items():
        qrels = list(ir_measures.read_trec_qrels(qrels_path))
        run = list(ir_measures.read_trec_run(files["runs"][task]))
        gains, task_tolerance = integer_gains({int(g): v for g, v in files["gains"][task].items()})
        tolerance = max(tolerance, task_tolerance)
        for spec in metrics:
            key = f"{stage}/{task}/{spec}"
            if key not in ours:
                continue
            measure = _measure(spec, gains)
            theirs = float(ir_measures.calc_aggregate([measure], qrels, run)[measure])
            values.setdefault(task, {})[spec] = {
                "shoprank": float(ours[key]),
                "ir_measures": theirs,
            }
            if not math.isnan(ours[key]):
                worst = max(worst, abs(theirs - float(ours[key])))
    result = {
        "tool": f"ir_measures {ir_measures.__version__}",
        "values": values,
        "max_abs_diff": worst,
        "tolerance": tolerance,
        "agrees": worst <= tolerance,
    }
    if result["agrees"]:
        log.info("ir_measures agrees with our metrics (max abs diff %.2e)", worst)
    else:
        log.warning(
            "ir_measures differs from our metrics by up to %.2e (tied scores are ordered "
            "differently: trec_eval by docid, shoprank by list position)",
            worst,
        )
    return result


def pair_frame(
    datamodule: Any,
    rows: np.ndarray,
    scores: np.ndarray,
    tasks: Sequence[str],
    label_tasks: Sequence[str] = (),
) -> pl.DataFrame:
    """The input of :func:`write_trec_files` for scored pair rows of a set-up datamodule.

    Args:
        datamodule: The listwise datamodule the rows index (``tables``, ``labels``).
        rows: ``[N]`` pair rows.
        scores: ``[N, K]`` scores, one column per task.
        tasks: The K task names.
        label_tasks: Tasks whose labels are taken from ``datamodule.labels`` (same column order
            as ``tasks``).
    """
    ids = pl.concat(
        [
            t.select(pl.col("__pair").cast(pl.Int64).alias("pair"), "query_id", "product_id")
            for t in datamodule.tables.values()
        ]
    ).with_columns(pl.col("query_id").cast(pl.String), pl.col("product_id").cast(pl.String))
    labels = datamodule.labels[rows] if label_tasks else None
    columns: dict[str, Any] = {"pair": np.asarray(rows, dtype=np.int64)}
    for k, task in enumerate(tasks):
        columns[f"score_{task}"] = np.asarray(scores[:, k], dtype=np.float32)
        if task in label_tasks:
            columns[f"label_{task}"] = labels[:, k].astype(np.float64)
    frame = pl.DataFrame(columns).join(ids, on="pair", how="left")
    return frame.drop("pair")
