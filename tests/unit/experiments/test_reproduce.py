"""experiments.reproduce: the job plan, the scheduler (reuse, dependencies, exclusivity)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from data_modules.errors import ConfigError
from experiments.job_runner import Job, run_jobs
from experiments.reproduce import CONFIG, Plan, _slug, load_config, main
from experiments.reproduce_report import write_reports

TASKS = ["relevance", "click", "add_to_cart", "purchase"]


def test_run_directory_names_carry_no_override_syntax() -> None:
    base = {"loss": "approx_ndcg", "tasks.order": "[relevance,click]"}
    assert _slug(base, base) == "base"
    assert _slug({**base, "tasks.order": "[click]"}, base) == "tasks.order-click"
    slug = _slug({"loss": "listnet", "tasks.order": "[a,b]"}, base)
    assert slug == "loss-listnet__tasks.order-a-b"
    assert not set("=,[]/") & set(slug)


@pytest.fixture(scope="module")
def cfg():
    return load_config(CONFIG, [f"work_dir={Path('/tmp/shoprank-reproduce-plan')}"])


def test_the_plan_trains_each_shared_run_once_and_orders_dependencies(cfg) -> None:
    plan = Plan(cfg, list(cfg.studies), ["synthetic", "real"], [0, 1])
    names = list(plan.jobs)
    # Per dataset and seed: base + 5 losses + 4 single-task + 5 tower/mask variants + the
    # adapted encoder + a student + its latency; per dataset: one pretraining run.
    assert len(names) == 2 * (2 * (1 + 5 + 4 + 5 + 1 + 1 + 1) + 1)
    assert sum(" train base " in n for n in names) == 4
    # Each dataset pretrains its own encoder: the tiny one, and MiniLM on the real data.
    assert names[:2] == ["synthetic pretrain tiny_bert", "real pretrain minilm_l6"]
    assert " base " in names[2] and " distill " in names[6]
    assert plan.jobs["real distill seed=1"].after == ("real train base seed=1",)
    assert plan.jobs["real latency seed=1"].exclusive
    adapted = plan.jobs["synthetic train adapted_tiny_bert seed=0"]
    assert adapted.after == ("synthetic pretrain tiny_bert",)
    # The base run is the same directory in every study that uses it.
    base_dir = plan.variants[("losses", "real")]["loss=approx_ndcg"].runs["1"]
    assert plan.variants[("multitask", "real")]["multi-task"].runs["1"] == base_dir
    assert (
        plan.variants[("seq_md", "real")]["tower=shared_bottom,region_mask=none"].runs["1"]
        == base_dir
    )
    assert plan.variants[("pretraining", "real")]["generic"].runs["1"] == base_dir
    # The adapted MiniLM replaces the dataset's encoder group, keeps its encoder.* settings, and
    # the dataset's pretraining budget wins over the study's.
    adapted_real = plan.jobs["real train adapted_minilm_l6 seed=0"].argv()
    assert "encoder=minilm_l6" not in adapted_real and "encoder=local" in adapted_real
    assert "encoder.pooling=mean" in adapted_real
    assert not any(a.startswith("encoder.pooling=cls") for a in adapted_real)
    pretrain = plan.jobs["real pretrain minilm_l6"].argv()
    steps = [a for a in pretrain if a.startswith("pretrain.max_steps=")]
    assert steps[-1] == "pretrain.max_steps=150"
    argv = plan.jobs["synthetic train loss-listnet seed=0"].argv()
    assert argv[:3] == [sys.executable, "-m", "experiments.train"]
    assert {"data=synthetic", "loss=listnet", "tower=shared_bottom", "seed=0"} <= set(argv)
    assert argv[-1].startswith("hydra.run.dir=") and argv[-1].endswith("loss-listnet/seed_0")


def test_config_typos_and_unknown_names_are_clear_errors(cfg) -> None:
    with pytest.raises(ConfigError, match="seedz") as typo:
        load_config(CONFIG, ["seedz=[1]"])
    # One line, with the key it was probably meant to be.
    assert "\n" not in str(typo.value) and str(typo.value).endswith("close: seeds")
    with pytest.raises(ConfigError, match="close: overrides, train_overrides"):
        load_config(CONFIG, ["datasets.real.overridez=[]"])
    with pytest.raises(ConfigError, match="not a valid value") as unbalanced:
        load_config(CONFIG, ["seeds=[0"])
    assert "\n" not in str(unbalanced.value)
    assert main(["--studies", "lossez", "--dry-run"]) == 2
    assert main(["--seeds", "a,b", "--dry-run"]) == 2
    with pytest.raises(ConfigError, match="jobs must be a positive integer"):
        load_config(CONFIG, ["jobs=abc"])
    with pytest.raises(ConfigError, match="seeds must be integers"):
        load_config(CONFIG, ["seeds=[x]"])
    assert main(["--quick", "--dry-run", "--datasets", "synthetic"]) == 0


def _job(tmp: Path, name: str, code: str, after=(), exclusive=False) -> Job:
    run_dir = tmp / name
    script = (
        "import pathlib, sys, time; d = pathlib.Path(sys.argv[1]); "
        f"(d / 'start').write_text(str(time.time())); {code}; "
        "(d / 'end').write_text(str(time.time())); (d / 'done').write_text('ok')"
    )
    return Job(
        name,
        run_dir,
        "done",
        lambda: [sys.executable, "-c", script, str(run_dir)],
        after,
        exclusive,
    )


def _times(job: Job) -> tuple[float, float]:
    return float((job.run_dir / "start").read_text()), float((job.run_dir / "end").read_text())


def test_scheduler_runs_in_parallel_skips_dependents_of_failures_and_reuses(tmp_path) -> None:
    jobs = {
        "a": _job(tmp_path, "a", "time.sleep(0.4)"),
        "b": _job(tmp_path, "b", "time.sleep(0.4)"),
        "solo": _job(tmp_path, "solo", "time.sleep(0.2)", after=("a",), exclusive=True),
        "bad": _job(tmp_path, "bad", "sys.exit(3)"),
        "after_bad": _job(tmp_path, "after_bad", "pass", after=("bad",)),
        "c": _job(tmp_path, "c", "time.sleep(0.4)"),
    }
    lines: list[str] = []
    assert run_jobs(jobs, parallel=2, threads=1, log=lines.append) is False
    states = {n: j.state for n, j in jobs.items()}
    assert states == {
        "a": "done",
        "b": "done",
        "solo": "done",
        "bad": "failed",
        "after_bad": "skipped",
        "c": "done",
    }
    assert any("FAILED  bad" in line for line in lines)
    # a and b ran side by side; nothing ran while the exclusive job did.
    (a0, a1), (b0, b1) = _times(jobs["a"]), _times(jobs["b"])
    assert max(a0, b0) < min(a1, b1)
    s0, s1 = _times(jobs["solo"])
    for other in ("a", "b", "c"):
        o0, o1 = _times(jobs[other])
        assert o1 <= s0 or o0 >= s1
    # A second pass reuses every finished job whose command is unchanged, reruns the failed one.
    for job in jobs.values():
        job.state = "pending"
    started = time.time()
    run_jobs(jobs, parallel=2, threads=1, log=lines.append)
    assert jobs["a"].state == "reused" and float((tmp_path / "a" / "start").read_text()) < started
    assert jobs["bad"].state == "failed"
    stamp = json.loads((tmp_path / "c" / "reproduce.json").read_text())
    assert stamp["argv"][0] == "-c"


def _fake_run(run_dir: Path, seed: str, offset: float, scorers=("model", "random", "bm25")):
    rows = []
    for q in range(6):
        for task in TASKS:
            for scorer in scorers:
                value = 0.2 if scorer == "random" else min(1.0, 0.4 + 0.05 * q + offset)
                rows.append((scorer, f"q{q}", "eu" if q % 2 else "na", task, "ndcg@10", value))
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        rows, schema=["scorer", "query_id", "region", "task", "metric", "value"], orient="row"
    ).write_parquet(run_dir / "per_query.parquet")


def test_reports_check_claims_and_write_tables_and_plots(tmp_path, cfg) -> None:
    cfg = load_config(CONFIG, [f"work_dir={tmp_path / 'runs'}", f"results_dir={tmp_path / 'out'}"])
    plan = Plan(cfg, ["losses", "distillation"], ["synthetic"], [0])
    for name, variant in plan.variants[("losses", "synthetic")].items():
        offset = 0.1 if name == "loss=approx_ndcg" else 0.0
        for seed, run_dir in variant.runs.items():
            _fake_run(run_dir, seed, offset)
    distill_dir = plan.variants[("distillation", "synthetic")]["student"].runs["0"]
    _fake_run(distill_dir, "0", 0.0, scorers=("model", "teacher", "random"))
    written = write_reports(plan, [0], quick=True)
    assert [p.name for p in written] == ["losses.md", "distillation.md"]
    losses = written[0].read_text()
    assert "make reproduce-quick" in losses and "seeds [0]" in losses
    assert "| loss=approx_ndcg vs loss=listnet | purchase |" in losses
    assert "+13.9%" in losses and "+20.6%" in losses
    # approx is 0.1 above every other loss on all 6 queries: a significant gain.
    assert "agrees" in losses and "baseline:bm25" in losses
    assert "| loss=listnet | 0.525 |" in losses  # per seed: mean over tasks of 0.4 + 0.05 q
    out = tmp_path / "out"
    for name in (
        "losses_synthetic.png",
        "losses_synthetic_delta.png",
        "losses_synthetic_claims.png",
        "losses_synthetic.csv",
    ):
        assert (out / name).is_file(), name
    distill = written[1].read_text()
    assert "| student vs teacher | click |" in distill
    assert "No latency measurement finished." in distill


def test_distill_jobs_get_the_data_and_student_overrides_but_not_the_teachers_model(
    tmp_path,
) -> None:
    plan = Plan(load_config(CONFIG, [f"work_dir={tmp_path}"]), ["distillation"], ["real"], [0])
    job = plan.jobs["real distill seed=0"]
    teacher_dir = Path(plan.jobs[job.after[0]].run_dir)
    teacher_dir.mkdir(parents=True)
    (teacher_dir / "metrics.json").write_text(json.dumps({"best_checkpoint": "t.ckpt"}))
    argv = job.argv()
    assert argv[1:4] == ["-m", "experiments.distill", "teacher_ckpt=t.ckpt"]
    assert "encoder=minilm_l6" in argv and "data=mix" in argv
    assert not [a for a in argv if a.lstrip("+~").startswith("model")]
    # The training runs of the same dataset keep the score prior.
    base = plan.jobs["real train base seed=0"].argv()
    assert any(a.startswith("model.prior=") for a in base)


def test_a_dependent_is_not_reused_once_its_dependency_ran_again(tmp_path) -> None:
    # The distill student's command names the teacher's checkpoint path, which stays the same
    # when the teacher is trained again; the student must still be made again.
    jobs = {
        "teacher": _job(tmp_path, "teacher", "pass"),
        "student": _job(tmp_path, "student", "pass", after=("teacher",)),
    }
    assert run_jobs(jobs, parallel=1, threads=1, log=lambda _: None)
    for job in jobs.values():
        job.state = "pending"
    assert run_jobs(jobs, parallel=1, threads=1, log=lambda _: None)
    assert [j.state for j in jobs.values()] == ["reused", "reused"]
    # The teacher is made again (a changed command: here its stamp no longer matches) ...
    stamp = tmp_path / "teacher" / "reproduce.json"
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "argv": ["changed"]}))
    for job in jobs.values():
        job.state = "pending"
    assert run_jobs(jobs, parallel=1, threads=1, log=lambda _: None)
    assert [j.state for j in jobs.values()] == ["done", "done"]
    # ... and a stamp from before dependencies were recorded is not trusted either.
    student = tmp_path / "student" / "reproduce.json"
    student.write_text(json.dumps({"argv": json.loads(student.read_text())["argv"]}))
    for job in jobs.values():
        job.state = "pending"
    assert run_jobs(jobs, parallel=1, threads=1, log=lambda _: None)
    assert [j.state for j in jobs.values()] == ["reused", "done"]


def test_a_report_of_one_dataset_keeps_the_other_datasets_sections(tmp_path) -> None:
    cfg = load_config(CONFIG, [f"work_dir={tmp_path / 'runs'}", f"results_dir={tmp_path / 'out'}"])

    def write(dataset: str, offset: float) -> str:
        plan = Plan(cfg, ["losses"], [dataset], [0])
        for variant in plan.variants[("losses", dataset)].values():
            for seed, run_dir in variant.runs.items():
                _fake_run(run_dir, seed, offset)
        return write_reports(plan, [0], quick=True)[0].read_text()

    write("synthetic", 0.0)
    both = write("real", 0.0)
    # The config's order (real first), each with its own provenance line; synthetic kept.
    assert both.index("<!-- dataset: real -->") < both.index("<!-- dataset: synthetic -->")
    assert both.count("Runs: `make reproduce-quick`") == 2
    assert "| loss=listnet | 0.525 |" in both  # synthetic's per-seed row survived
    # Rewriting real replaces its section only: its numbers change, synthetic's stay.
    again = write("real", 0.1)
    real, synthetic = again.split("<!-- dataset: synthetic -->")
    assert "| loss=listnet | 0.625 |" in real and "| loss=listnet | 0.525 |" in synthetic
    assert again.count("<!-- dataset: real -->") == 1 and again.startswith("# Listwise losses")


def test_a_report_without_any_run_of_a_dataset_keeps_its_section(tmp_path) -> None:
    cfg = load_config(CONFIG, [f"work_dir={tmp_path / 'runs'}", f"results_dir={tmp_path / 'out'}"])
    plan = Plan(cfg, ["losses"], ["synthetic"], [0])
    for variant in plan.variants[("losses", "synthetic")].values():
        for seed, run_dir in variant.runs.items():
            _fake_run(run_dir, seed, 0.0)
    before = write_reports(plan, [0])[0].read_text()
    shutil.rmtree(tmp_path / "runs")  # e.g. --report-only on a machine without these runs
    after = write_reports(plan, [0])[0].read_text()
    assert after == before and "| loss=listnet | 0.525 |" in after
