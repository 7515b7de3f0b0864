"""The model card (``README.md``) of an exported model: what it is, how it was
trained, its metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _run_files(run_dir: Path | None) -> tuple[dict, dict, Any]:
    import polars as pl
    import yaml

    if run_dir is None:
        return {}, {}, None
    config = (
        yaml.safe_load((run_dir / "config.yaml").read_text())
        if (run_dir / "config.yaml").is_file()
        else {}
    )
    metrics = (
        json.loads((run_dir / "metrics.json").read_text())
        if (run_dir / "metrics.json").is_file()
        else {}
    )
    per_query = (
        pl.read_parquet(run_dir / "per_query.parquet")
        if (run_dir / "per_query.parquet").is_file()
        else None
    )
    return config or {}, metrics, per_query


def _metric_lines(module: Any, metrics: dict, per_query: Any) -> list[str]:
    import polars as pl

    from ranking.analysis.compare import bootstrap_interval

    if per_query is None or not metrics.get("test"):
        return ["No test metrics were found beside the checkpoint."]
    scorers = [s for s in ("model", "teacher", "random", "bm25") if s in set(per_query["scorer"])]
    lines = [
        f"Test split of the training run ({metrics.get('split', 'test')}), mean over queries with "
        "a positive label for the task, [95% percentile bootstrap interval over queries]:",
        "",
        "| task | metric | " + " | ".join(scorers) + " | queries |",
        "|---|---|" + "---|" * len(scorers) + "---|",
    ]
    for task in module.task_names:
        for spec in module.hparams.metrics:
            cells = []
            count = 0
            for scorer in scorers:
                values = per_query.filter(
                    (pl.col("scorer") == scorer)
                    & (pl.col("task") == task)
                    & (pl.col("metric") == spec)
                )["value"].to_numpy()
                mean, low, high = bootstrap_interval(values, resamples=1000)
                count = max(count, len(values))
                cells.append("n/a" if math.isnan(mean) else f"{mean:.3f} [{low:.3f}, {high:.3f}]")
            lines.append(f"| {task} | {spec} | " + " | ".join(cells) + f" | {count} |")
    return lines


def model_card(
    module: Any, config: Mapping[str, Any], summary: Mapping[str, Any], run_dir: Path | None
) -> str:
    """``README.md`` of an export: data, recipe, metrics with intervals, use, limits."""
    run_config, metrics, per_query = _run_files(run_dir)
    data = run_config.get("data") or {}
    hp = config["hparams"]
    kind = config["kind"]
    text = config["text"]
    prefix = (
        hp.get("bi_encoder", {}).get("query_region_prefix")
        if kind == "bi_encoder"
        else text["region_in_query"]
    )
    query_form = '`"{region} | {query}"`' if prefix else "the query text alone"
    st = summary.get("sentence_transformers")
    if kind == "cross_encoder" and st == ".":
        st_use = [
            "```python",
            "from sentence_transformers import CrossEncoder",
            "model = CrossEncoder('<this dir>')",
            "scores = model.predict([(query_text, product_text), ...])  # logits, [N] or [N, K]",
            "```",
        ]
    elif kind == "bi_encoder" and isinstance(st, Mapping):
        st_use = [
            "```python",
            "from sentence_transformers import SentenceTransformer",
            f"model = SentenceTransformer('<this dir>/sentence_transformers/{config['tasks'][0]}')",
            "scores = model.similarity(model.encode_query([query_text]), "
            "model.encode_document(product_texts))",
            "```",
        ]
    else:
        st_use = [f"sentence-transformers: {st}." if st else ""]
    recipe = {
        "encoder": (run_config.get("encoder") or {}).get("name") or hp["encoder"].get("name"),
        "pooling": hp["encoder"].get("pooling"),
        "max_length": hp["encoder"].get("max_length"),
        "tower": (hp.get("tower") or {}).get("name") if kind == "cross_encoder" else "bi-encoder",
        "region_mask": (hp.get("region_mask") or {}).get("name", "none")
        if kind == "cross_encoder"
        else "none",
        "loss": (hp.get("loss") or {}).get("name"),
        "lr": (hp.get("optimizer") or {}).get("lr"),
        "epochs": (run_config.get("trainer") or {}).get("max_epochs"),
        "seed": run_config.get("seed"),
    }
    if kind == "bi_encoder":
        recipe["distillation"] = hp.get("distillation")
        recipe["similarity"] = hp.get("bi_encoder", {}).get("similarity")
    checks = ", ".join(f"{k} {v:.1e}" for k, v in summary.get("checks", {}).items())
    lines = [
        "---",
        "library_name: shoprank",
        "tags: [shoprank, learning-to-rank, e-commerce, "
        + ("cross-encoder" if kind == "cross_encoder" else "bi-encoder")
        + "]",
        "---",
        "",
        f"# shoprank {kind.replace('_', '-')}: {', '.join(config['tasks'])}",
        "",
        "A product ranker trained with shoprank: one score per "
        f"task ({', '.join(config['tasks'])}), higher is better (logits, not probabilities).",
        "",
        "## Data",
        "",
        f"- source: `{data.get('_target_', 'unknown').rsplit('.', 1)[-1]}`"
        + (f" ({data['name']})" if data.get("name") else ""),
        *([f"- file: `{data['path']}`"] if data.get("path") else []),
        *(
            [f"- engagement labels simulated: `{data['engagement']}`"]
            if data.get("engagement")
            else []
        ),
        f"- regions: {', '.join(config['regions'])}",
        f"- splits by query: {data.get('splits', 'unknown')}, seed {data.get('seed', 'unknown')}",
        f"- product text: fields {', '.join(text['product_text_fields'])} joined by ` ; `",
        f"- query text: {query_form}",
        "",
        "## Recipe",
        "",
        *[f"- {k}: {v}" for k, v in recipe.items() if v is not None],
        "",
        "## Metrics",
        "",
        *_metric_lines(module, metrics, per_query),
        "",
        "## Use",
        "",
        "```python",
        "from ranking import Ranker",
        "ranker = Ranker.from_pretrained('<this dir>')",
        "ranker.rank('red running shoes', ['Nike Air Zoom ; Nike ; red', 'Blue wool hat'], "
        f"region='{config['regions'][0]}')",
        "```",
        "",
        *st_use,
        "",
        "ONNX: `onnx/` with its tokenizer (inputs and outputs in `export.json`).",
        f"Every copy was checked against the PyTorch model (max abs score difference: {checks}).",
        "",
        "## Intended use and limits",
        "",
        "- Re-ranking a short list of candidate products for a query (tens to hundreds); "
        + (
            "a cross-encoder reads every pair, so it does not scale to retrieval over a catalogue."
            if kind == "cross_encoder"
            else "product vectors can be precomputed; queries are encoded online."
        ),
        "- Trained on the data above only: other markets, languages or catalogues need their own "
        "evaluation before use; a region mask knows only its training regions.",
        "- The metrics are from one training run (one seed) on held-out queries of the same "
        "data; the intervals cover query sampling, not training randomness.",
        "- Engagement labels may be simulated (see the run's config, `data.engagement`); scores "
        "then reflect the simulator, not real shoppers.",
        "",
    ]
    return "\n".join(lines)
