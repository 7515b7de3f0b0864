"""``experiments/results/<study>.md`` and its plots from the finished runs of a reproduce plan."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from ranking.analysis.claims_overview import plot_claims_overview
from ranking.analysis.compare import markdown_table, summarize_variants
from ranking.analysis.study import (
    RunRef,
    check_claims,
    claim_from_config,
    claims_markdown,
    plot_claims,
    study_table,
)
from ranking.analysis.sweep_report import plot_deltas, plot_variants

if TYPE_CHECKING:  # types only: experiments.reproduce imports this module to write its reports
    from omegaconf import DictConfig

    from experiments.reproduce import Plan, Variant

REPO = Path(__file__).resolve().parents[1]
# Non-model scorers shown beside a training study's variants, read from its base runs.
TEXT_BASELINES = ("random", "bm25")


def _has_per_query(path: Path) -> bool:
    return (path / "per_query.parquet").is_file()


def _refs(variants: dict[str, Variant]) -> tuple[dict[str, list[RunRef]], list[str]]:
    """Run references of the finished runs per variant, and the runs that are missing."""
    refs, missing = {}, []
    for name, variant in variants.items():
        refs[name] = [
            RunRef(seed, path, variant.scorer)
            for seed, path in variant.runs.items()
            if _has_per_query(path)
        ]
        missing += [str(path) for path in variant.runs.values() if not _has_per_query(path)]
    return {k: v for k, v in refs.items() if v}, sorted(set(missing))


def _baseline_refs(
    variants: dict[str, Variant], scorer_names: tuple[str, ...]
) -> dict[str, list[RunRef]]:
    """``baseline:<scorer>`` variants from the first variant's runs (same lists for every run)."""
    first = next(iter(variants.values()))
    return {
        f"baseline:{scorer}": [
            RunRef(seed, path, scorer) for seed, path in first.runs.items() if _has_per_query(path)
        ]
        for scorer in scorer_names
    }


def _latency_section(variants: dict[str, Variant]) -> list[str]:
    rows, speedups = [], []
    for seed, path in variants["student"].runs.items():
        file = path / "latency" / "latency.json"
        if not file.is_file():
            continue
        saved = json.loads(file.read_text())
        lat = saved["latency"]
        speedups.append(saved["speedup_median"])
        onnx = lat.get("student_onnx") or {}
        rows.append(
            f"| {seed} | {lat['teacher']['median_ms']:.2f} | {lat['student']['median_ms']:.2f} | "
            f"{saved['speedup_median']:.1f}x | "
            + (
                f"{onnx['median_ms']:.2f} | {saved['speedup_median_onnx']:.1f}x"
                if onnx
                else "- | -"
            )
            + f" | {saved['machine'].get('threads', '?')} |"
        )
    if not rows:
        return ["No latency measurement finished."]
    return [
        "Per-query latency of ranking 100 candidates from raw text (bench.bench_latency: the "
        "teacher scores 100 (query, product) pairs, the student encodes the query once against "
        "precomputed product vectors), run alone on the machine after training. Paper: ~10x.",
        "",
        "| seed | teacher median ms | student median ms | speed-up | student ONNX median ms | "
        "speed-up ONNX | threads |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Median speed-up, mean over {len(speedups)} seed(s): "
        f"**{sum(speedups) / len(speedups):.1f}x** (paper: ~10x; "
        + ("agrees: at least as large)." if min(speedups) >= 10 else "smaller in some seed).")
        + " Teacher and student use the same encoder architecture: the speed-up comes from "
        "what runs per query (one short query pass against precomputed product vectors instead of "
        "a pass over 100 query-product pairs). A teacher with a score prior also embeds the query "
        "for its prior per request (product embeddings computed once, like the student's).",
    ]


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def results_dir(cfg: DictConfig) -> Path:
    """``results_dir`` of ``conf/reproduce.yaml`` (relative to the repository), created."""
    out_dir = (REPO / cfg.results_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


SECTION = re.compile(r"^<!-- dataset: (\S+) -->$", re.MULTILINE)


def kept_sections(path: Path) -> dict[str, str]:
    """The dataset sections of an existing ``<study>.md``, by dataset name.

    Each section starts with a ``<!-- dataset: NAME -->`` line and carries its own provenance
    (command, date, commit, seeds), so a run of some datasets (``--datasets synthetic``) rewrites
    theirs and keeps the others' results, written earlier, as they were.
    """
    if not path.is_file():
        return {}
    text = path.read_text()
    marks = list(SECTION.finditer(text))
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return {
        m.group(1): text[m.start() : end].rstrip() + "\n"
        for m, end in zip(marks, ends, strict=True)
    }


def write_reports(plan: Plan, seeds: list[int], quick: bool = False) -> list[Path]:
    """Write ``<results_dir>/<study>.md`` (+ CSV and PNG per dataset) for every planned study.

    The file holds one section per dataset of the config, in the config's order; the planned
    datasets' sections are written from their runs, the others are kept from the file.
    """
    cfg = plan.cfg
    out_dir = results_dir(cfg)
    metric, resamples = str(cfg.metric), int(cfg.resamples)
    command = "make reproduce-quick" if quick else "make reproduce"
    rerun = "python -m experiments.reproduce" + (" --quick" if quick else "")
    provenance = (
        f"Runs: `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at commit "
        f"{_git_revision()}; seeds {seeds}. This section alone: `{rerun} --datasets {{dataset}}`."
    )
    headline = list(cfg.get("default_datasets") or cfg.datasets)
    written = []
    for study in plan.studies:
        spec = cfg.studies[study]
        claims = [claim_from_config(c, study) for c in spec.get("claims", []) if "metric" not in c]
        path = out_dir / f"{study}.md"
        sections = kept_sections(path)
        header = [
            f"# {spec.title}",
            "",
            f"Metric: test {metric}, mean over queries; intervals are 95% percentile bootstrap "
            f"intervals ({resamples} resamples) over (seed, query) units; p is a paired sign-flip "
            "permutation test. Settings: `conf/reproduce.yaml`, one section per dataset setting "
            f"in its order (headline: {', '.join(f'`{d}`' for d in headline)}); each section "
            "names the command, date, commit and seeds of its runs. What these runs can and "
            "cannot say (budget, plateaus, the real data's short lists): README, section Results.",
            "",
        ]
        for dataset in plan.datasets:
            variants = plan.variants[(study, dataset)]
            refs, missing = _refs(variants)
            if not refs and dataset in sections:
                # No run of this setting here (another machine's, or an old commit's results):
                # its section stays as written; a report never replaces results with nothing.
                print(f"reproduce: no runs of {dataset!r} for {study}; its section is kept")
                continue
            lines = [f"<!-- dataset: {dataset} -->", f"## {cfg.datasets[dataset].title}", ""]
            lines += [provenance.format(dataset=dataset), ""]
            grid = f"claims_{dataset}.png"
            lines += [f"Every study's claims on this setting in one grid: [{grid}]({grid}).", ""]
            train_only = cfg.datasets[dataset].get("train_overrides", [])
            lines += [f"Overrides: `{' '.join([*plan.data_overrides(dataset), *train_only])}`", ""]
            if missing:
                lines += [f"Missing runs (failed or not run): {', '.join(missing)}", ""]
            if len(refs) < 2:
                sections[dataset] = "\n".join([*lines, "Not enough finished runs to compare."])
                continue
            if spec.get("kind", "train") == "distill":
                refs["baseline:random"] = [
                    RunRef(r.seed, r.path, "random") for r in refs.get("student", [])
                ]
            else:
                refs.update(
                    {k: v for k, v in _baseline_refs(variants, TEXT_BASELINES).items() if v}
                )
            table = study_table(refs, metric)
            baseline = str(spec.get("baseline", next(iter(refs))))
            summary = summarize_variants(table, baseline, resamples=resamples)
            stem = f"{study}_{dataset}"
            summary.write_csv(out_dir / f"{stem}.csv")
            plot_variants(summary, metric, out_dir / f"{stem}.png")
            # The bars' y-axis hides 0.01-0.03 effects: the paired differences show them.
            plot_deltas(summary, metric, baseline, out_dir / f"{stem}_delta.png")
            usable = [c for c in claims if c.treatment in refs and c.control in refs]
            if usable:
                checked = check_claims(table, usable, resamples=resamples)
                checked.write_csv(out_dir / f"{stem}_claims.csv")
                plot_claims(checked, f"{spec.title}: {dataset}", out_dir / f"{stem}_claims.png")
                tally = Counter(v.split(" (")[0] for v in checked.get_column("verdict"))
                lines += [
                    "### The papers' claims, checked on our runs",
                    "",
                    "Verdicts: " + ", ".join(f"{n} {v}" for v, n in tally.most_common()) + ".",
                    "",
                    claims_markdown(checked, metric),
                    "",
                    "Sources of the paper column: " + "; ".join(sorted({c.source for c in usable})),
                    "",
                    f"![claims]({stem}_claims.png)",
                    "",
                ]
            if spec.get("kind") == "distill":
                lines += ["### Latency", "", *_latency_section(variants), ""]
            lines += [
                "### Every variant, per task and region",
                "",
                _queries_line(table),
                "",
                markdown_table(summary, metric, baseline),
                "",
                f"![variants]({stem}.png)",
                "",
                f"Paired difference to `{baseline}` on the same (seed, query) units, 95% interval:",
                "",
                f"![differences]({stem}_delta.png)",
                "",
                "### Per seed: mean over tasks of test NDCG@10",
                "",
                per_seed_markdown(table),
            ]
            sections[dataset] = "\n".join(lines)
        order = [d for d in cfg.datasets if d in sections] + [
            d for d in sections if d not in cfg.datasets
        ]
        body = [sections[d].rstrip() + "\n" for d in order]
        path.write_text("\n".join(header) + "\n" + "\n".join(body))
        written.append(path)
    return written


def per_seed_markdown(table: pl.DataFrame) -> str:
    """Variant x seed: the mean over tasks of each task's mean over queries (all regions).

    Shows what pooled intervals hide: a variant that stayed near the random level in one seed
    (a run that never left its initial plateau) next to seeds where it trained.
    """
    by_seed = (
        table.with_columns(pl.col("unit").str.split(":").list.first().alias("seed"))
        .group_by("variant", "seed", "task", maintain_order=True)
        .agg(pl.col("value").mean())
        .group_by("variant", "seed", maintain_order=True)
        .agg(pl.col("value").mean())
    )
    seeds = sorted(by_seed.get_column("seed").unique().to_list(), key=lambda s: (len(s), s))
    lines = [
        "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for variant in by_seed.get_column("variant").unique(maintain_order=True).to_list():
        cells = {
            r["seed"]: f"{r['value']:.3f}"
            for r in by_seed.filter(pl.col("variant") == variant).iter_rows(named=True)
        }
        lines.append(f"| {variant} | " + " | ".join(cells.get(s, "-") for s in seeds) + " |")
    return "\n".join(lines)


def _queries_line(table: pl.DataFrame) -> str:
    seeds = table.get_column("unit").str.split(":").list.first().unique().len()
    units = table.get_column("unit").unique().len()
    return f"{units} test queries over {seeds} seed(s)."


def write_overviews(plan: Plan) -> list[Path]:
    """``<results_dir>/claims_<dataset>.png``: every study's claims on a dataset in one grid.

    Read from the ``<study>_<dataset>_claims.csv`` files, so studies run at other times (or by
    another ``--studies`` subset) are included as last written.
    """
    out_dir = results_dir(plan.cfg)
    written = []
    for dataset in plan.datasets:
        checked = {
            study: pl.read_csv(path).with_columns(pl.col("paper").cast(pl.Float64, strict=False))
            for study in plan.cfg.studies
            if (path := out_dir / f"{study}_{dataset}_claims.csv").is_file()
        }
        if not checked:
            continue
        title = f"The papers' claims on our runs: {plan.cfg.datasets[dataset].title}"
        path = out_dir / f"claims_{dataset}.png"
        plot_claims_overview(checked, title, path)
        written.append(path)
    return written
