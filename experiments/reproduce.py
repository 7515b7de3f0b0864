"""``python -m experiments.reproduce [--quick] [--studies a,b] [--datasets a,b] [--set key=value]``.

Runs the studies of ``conf/reproduce.yaml`` (``make reproduce``, ``make reproduce-quick``) and
writes ``experiments/results/<study>.md`` with PNG plots: per dataset, the papers' claims checked
on our runs (relative change with a 95% paired bootstrap interval beside the paper's figure) and
the full table per variant, task and region (:mod:`ranking.analysis.study`,
:mod:`ranking.analysis.compare`).

Every run is an ordinary Hydra job (``experiments.train``, ``experiments.pretrain``,
``experiments.distill``, then ``bench.bench_latency`` alone on the machine) started as a
subprocess, ``jobs`` at a time. Hydra's multirun sweeper is not used here because the studies
share runs (the base variant belongs to three studies and teaches the distillation student) and
a rerun must reuse finished runs; each job is still one Hydra run with its overrides in
``.hydra/overrides.yaml``. A run is reused when its directory holds the finished output, the
command that made it (``reproduce.json``) is unchanged and the runs it was built on were not made
again since; otherwise it is trained again (:mod:`experiments.job_runner`).
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from data_modules.errors import ConfigError, ShoprankError
from experiments.job_runner import Job, clock, run_jobs

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "conf" / "reproduce.yaml"


# --------------------------------------------------------------------------------------- plan
@dataclass
class Variant:
    """A study's variant on one dataset: its run per seed, and which scorer in it is the variant."""

    name: str
    runs: dict[str, Path] = field(default_factory=dict)  # seed -> run dir
    scorer: str = "model"


def load_config(path: Path, sets: list[str]) -> DictConfig:
    """``conf/reproduce.yaml`` with ``--set key=value`` overrides; a mistyped key is an error."""
    if not path.is_file():
        raise ConfigError(f"reproduce: config {path} not found")
    cfg = OmegaConf.load(path)
    OmegaConf.set_struct(cfg, True)
    try:
        given = OmegaConf.from_dotlist(sets)
    except yaml.YAMLError as err:  # an unbalanced bracket or quote in a value
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"reproduce: --set {sets}: not a valid value ({problem})") from None
    try:
        cfg = OmegaConf.merge(cfg, given)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        known = OmegaConf.select(cfg, parent) if parent else cfg
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(known or []), n=3)
        hint = f"; close: {', '.join(close)}" if close else ""
        first = str(err.msg).splitlines()[0]
        raise ConfigError(f"reproduce: --set {sets}: {first} (in {path}){hint}") from None
    for key in ("jobs", "threads_per_job", "resamples"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise ConfigError(f"reproduce: {key} must be a positive integer, got {cfg[key]!r}")
    for key in ("seeds", "quick_seeds"):
        parse_seeds(cfg[key], key)
    return cfg


def parse_seeds(values: Any, what: str) -> list[int]:
    """Seeds as integers; anything else is a :class:`ConfigError` naming ``what``."""
    items = values.split(",") if isinstance(values, str) else list(values)
    try:
        seeds = [int(v) for v in items]
    except (TypeError, ValueError):
        raise ConfigError(f"reproduce: {what} must be integers, got {values!r}") from None
    if not seeds:
        raise ConfigError(f"reproduce: {what} is empty")
    return seeds


def _kv(overrides: dict[str, Any]) -> list[str]:
    return [f"{k}={v}" for k, v in overrides.items()]


def _slug(overrides: dict[str, Any], base: dict[str, Any]) -> str:
    """A directory name for a run: its overrides that differ from the base (``base`` if none).

    Only ``[A-Za-z0-9_.-]`` survive: the name goes into ``hydra.run.dir=...``, where ``=``,
    ``,`` and brackets would be read as override syntax.
    """
    changed = {k: v for k, v in overrides.items() if base.get(k) != v}
    clean = {k: re.sub(r"[^A-Za-z0-9_.]+", "-", str(v)).strip("-") for k, v in changed.items()}
    return "__".join(f"{k}-{v}" for k, v in clean.items()) or "base"


def study_variants(name: str, study: DictConfig) -> dict[str, dict[str, Any]]:
    """``{variant: overrides}`` of a study: each combination of its ``grid``, or ``variants``."""
    if "grid" in study:
        keys = list(study.grid)
        values = [list(study.grid[k]) for k in keys]
        return {
            ",".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True)): dict(
                zip(keys, combo, strict=True)
            )
            for combo in itertools.product(*values)
        }
    if "variants" in study:
        return {str(k): dict(v) for k, v in study.variants.items()}
    raise ConfigError(f"reproduce: studies.{name} has neither `grid` nor `variants`")


class Plan:
    """Every job of the chosen studies, datasets and seeds, each (dataset, variant, seed) once."""

    def __init__(self, cfg: DictConfig, studies: list[str], datasets: list[str], seeds: list[int]):
        self.cfg, self.studies, self.datasets, self.seeds = cfg, studies, datasets, seeds
        self.work = (REPO / cfg.work_dir).resolve()
        self.jobs: dict[str, Job] = {}
        self.variants: dict[tuple[str, str], dict[str, Variant]] = {}  # (study, dataset) -> ...
        self.base = {k: str(v) for k, v in cfg.base.items()}
        for study in studies:
            for dataset in datasets:
                self.variants[(study, dataset)] = self._plan(study, dataset)
        # Jobs others wait for start first (pretraining, the base runs that teach the students),
        # then the jobs waiting for them, so that a failure there shows early.
        order = (" pretrain ", " base ", " distill ", " adapted_")
        first = sorted(
            self.jobs, key=lambda n: next((i for i, o in enumerate(order) if o in n), len(order))
        )
        self.jobs = {n: self.jobs[n] for n in first}

    def data_overrides(self, dataset: str) -> list[str]:
        """The overrides every job on ``dataset`` gets (its own, then ``data_overrides``)."""
        return [*self.cfg.datasets[dataset].overrides, *self.cfg.data_overrides]

    def _train(
        self,
        dataset: str,
        overrides: dict[str, Any],
        seed: int,
        after: tuple[str, ...] = (),
        slug: str | None = None,
    ) -> Path:
        merged = {**self.base, **{k: str(v) for k, v in overrides.items()}}
        slug = slug or _slug(merged, self.base)
        run_dir = self.work / dataset / "train" / slug / f"seed_{seed}"
        name = f"{dataset} train {slug} seed={seed}"
        data = self.data_overrides(dataset)
        if "encoder" in merged:  # the variant picks the encoder: the dataset's choice steps aside
            data = [o for o in data if not o.startswith("encoder=")]
        argv = [
            "experiments.train",
            *data,
            *self.cfg.train_overrides,
            *self.cfg.datasets[dataset].get("train_overrides", []),  # e.g. the model's prior
            *self.cfg.job_overrides,
            *_kv(merged),
            f"seed={seed}",
        ]
        self.jobs.setdefault(
            name, Job(name, run_dir, "per_query.parquet", _argv(argv, run_dir), after)
        )
        return run_dir

    def _plan(self, study: str, dataset: str) -> dict[str, Variant]:
        spec = self.cfg.studies[study]
        kind = spec.get("kind", "train")
        if kind == "train":
            variants = {}
            for name, overrides in study_variants(study, spec).items():
                variants[name] = Variant(
                    name, {str(s): self._train(dataset, overrides, s) for s in self.seeds}
                )
            return variants
        if kind == "distill":
            return self._plan_distill(study, dataset, spec)
        if kind == "pretrain":
            return self._plan_pretrain(study, dataset, spec)
        raise ConfigError(f"reproduce: studies.{study}.kind '{kind}' (train, distill, pretrain)")

    def _plan_distill(self, study: str, dataset: str, spec: DictConfig) -> dict[str, Variant]:
        student = Variant("student")
        teacher = Variant("teacher", scorer="teacher")
        for seed in self.seeds:
            teacher_dir = self._train(dataset, {}, seed)
            teacher_job = f"{dataset} train base seed={seed}"
            run_dir = self.work / dataset / "distill" / f"seed_{seed}"
            name = f"{dataset} distill seed={seed}"

            def argv(teacher_dir: Path = teacher_dir, seed: int = seed) -> list[str]:
                return [
                    "experiments.distill",
                    f"teacher_ckpt={_best_checkpoint(teacher_dir)}",
                    *self.data_overrides(dataset),
                    *self.cfg.job_overrides,
                    "teacher_scores.progress=false",
                    *spec.get("distill_overrides", []),
                    f"seed={seed}",
                ]

            self.jobs[name] = Job(
                name, run_dir, "per_query.parquet", _argv_fn(argv, run_dir), (teacher_job,)
            )
            student.runs[str(seed)] = teacher.runs[str(seed)] = run_dir
            latency = spec.get("latency")
            if latency:
                self._latency(dataset, seed, run_dir, teacher_dir, latency, name)
        return {"student": student, "teacher": teacher}

    def _latency(
        self,
        dataset: str,
        seed: int,
        distill_dir: Path,
        teacher_dir: Path,
        options: DictConfig,
        after: str,
    ) -> None:
        name = f"{dataset} latency seed={seed}"
        out = distill_dir / "latency"

        def argv() -> list[str]:
            saved = json.loads((distill_dir / "metrics.json").read_text())
            cmd = [
                "bench.bench_latency",
                "--student", str(saved["best_checkpoint"]),
                "--teacher", str(_best_checkpoint(teacher_dir)),
                "--config", str(distill_dir / "config.yaml"),
                "--queries", str(options.get("queries", 100)),
                "--candidates", str(options.get("candidates", 100)),
                "--threads", str(self.cfg.threads_per_job),
                "--out", str(out / "latency.json"),
            ]  # fmt: skip
            return [*cmd, "--onnx"] if options.get("onnx", False) else cmd

        self.jobs[name] = Job(
            name, out, "latency.json", _argv_fn(argv, None), (after,), exclusive=True
        )

    def dataset_encoder(self, dataset: str) -> str:
        """The encoder group a dataset's runs use: its ``encoder=`` override, else tiny_bert."""
        chosen = [
            o.split("=", 1)[1] for o in self.data_overrides(dataset) if o.startswith("encoder=")
        ]
        return chosen[-1] if chosen else "tiny_bert"

    def _plan_pretrain(self, study: str, dataset: str, spec: DictConfig) -> dict[str, Variant]:
        # The generic encoder is the dataset's own (studies.pretraining.encoder overrides it).
        encoder = str(spec.get("encoder") or self.dataset_encoder(dataset))
        encoder_cfg = OmegaConf.load(REPO / "conf" / "encoder" / f"{encoder}.yaml")
        pre_dir = self.work / dataset / "pretrain" / encoder
        pre_name = f"{dataset} pretrain {encoder}"
        argv = [
            "experiments.pretrain",
            *[o for o in self.data_overrides(dataset) if o.startswith("data")],
            f"encoder={encoder}",
            *spec.get("pretrain_overrides", []),
            *self.cfg.datasets[dataset].get("pretrain_overrides", []),  # the dataset's win
            f"seed={self.seeds[0]}",
        ]
        self.jobs[pre_name] = Job(pre_name, pre_dir, "encoder/config.json", _argv(argv, pre_dir))
        generic = {} if encoder == self.dataset_encoder(dataset) else {"encoder": encoder}
        # The adapted encoder fine-tunes exactly as the generic one: its pooling, length and lr
        # (the dataset's own encoder.* overrides apply to both).
        adapted = {
            "encoder": "local",
            "encoder.path": str(pre_dir / "encoder"),
            **{
                f"encoder.{k}": encoder_cfg[k]
                for k in ("pooling", "max_length", "lr")
                if not any(o.startswith(f"encoder.{k}=") for o in self.data_overrides(dataset))
            },
        }
        return {
            "generic": Variant(
                "generic", {str(s): self._train(dataset, generic, s) for s in self.seeds}
            ),
            "domain-adapted": Variant(
                "domain-adapted",
                {
                    str(s): self._train(dataset, adapted, s, (pre_name,), f"adapted_{encoder}")
                    for s in self.seeds
                },
            ),
        }


def _best_checkpoint(run_dir: Path) -> str:
    saved = json.loads((run_dir / "metrics.json").read_text())
    if not saved.get("best_checkpoint"):
        raise ConfigError(f"reproduce: {run_dir}/metrics.json names no best_checkpoint")
    return str(saved["best_checkpoint"])


def _argv(args: list[str], run_dir: Path) -> Callable[[], list[str]]:
    return _argv_fn(lambda: args, run_dir)


def _argv_fn(build: Callable[[], list[str]], run_dir: Path | None) -> Callable[[], list[str]]:
    def argv() -> list[str]:
        args = [sys.executable, "-m", *[str(a) for a in build()]]
        return args if run_dir is None else [*args, f"hydra.run.dir={run_dir}"]

    return argv


# ------------------------------------------------------------------------------------- report
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.reproduce", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the quick seeds only (quick_seeds)")
    parser.add_argument("--studies", help="comma-separated subset of the config's studies")
    parser.add_argument("--datasets", help="comma-separated subset of the config's datasets")
    parser.add_argument("--seeds", help="comma-separated seeds (default: seeds / quick_seeds)")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument(
        "--report-only", action="store_true", help="write reports from finished runs"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the jobs, run nothing")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        studies = _pick(args.studies, list(cfg.studies), "studies")
        datasets = _pick(args.datasets, list(cfg.datasets), "datasets")
        if not args.datasets and cfg.get("default_datasets"):
            datasets = _pick(",".join(cfg.default_datasets), list(cfg.datasets), "default_datasets")
        if args.seeds:
            seeds = parse_seeds(args.seeds, "--seeds")
        else:
            seeds = parse_seeds(cfg.quick_seeds if args.quick else cfg.seeds, "seeds")
        plan = Plan(cfg, studies, datasets, seeds)
        print(
            f"reproduce: {len(plan.jobs)} jobs ({', '.join(studies)} on {', '.join(datasets)}, "
            f"seeds {seeds}), {cfg.jobs} at a time, runs under {plan.work}"
        )
        if args.dry_run:
            for job in plan.jobs.values():
                print(f"  {job.name}  <- {', '.join(job.after) or '-'}")
            return 0
        ok, began = True, time.time()
        if not args.report_only:
            ok = run_jobs(plan.jobs, int(cfg.jobs), int(cfg.threads_per_job))
        ran = time.time()
        from experiments.reproduce_report import write_overviews, write_reports

        for path in [*write_reports(plan, seeds, quick=args.quick), *write_overviews(plan)]:
            print("written:", path)
        if not args.report_only:
            states = Counter(job.state for job in plan.jobs.values())
            print(
                f"reproduce: wall time {clock(time.time() - began)} "
                f"(runs {clock(ran - began)}, reports {clock(time.time() - ran)}); jobs "
                + ", ".join(f"{n} {state}" for state, n in states.most_common())
            )
    except ShoprankError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not ok:
        print("error: some runs failed (their job.log is named above)", file=sys.stderr)
        return 1
    return 0


def _pick(chosen: str | None, available: list[str], what: str) -> list[str]:
    if not chosen:
        return available
    picked = [c for c in chosen.split(",") if c]
    unknown = [c for c in picked if c not in available]
    if unknown:
        raise ConfigError(f"reproduce: unknown {what} {unknown}; available: {available}")
    return picked


if __name__ == "__main__":
    sys.exit(main())
