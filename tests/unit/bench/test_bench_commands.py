"""The benchmarks' command construction and CPU-testable parts (no timing assertions).

``make bench`` and ``make bench ARGS=--quick`` build the teacher and student commands below;
``make bench-gpu`` must skip cleanly without CUDA, count FLOPs exactly and build its DDP command
for any device count.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from bench import bench_gpu, run_all
from tests.conftest import REPO, compose_config

TINY_BERT = {
    "source": "random",
    "pooling": "cls",
    "architecture": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 48,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    },
}


def _overrides(command: list[str]) -> list[str]:
    return command[command.index("-m") + 2 :]


# ---------------------------------------------------------------- make bench [ARGS=--quick]
def test_smoke_recipe_becomes_plain_overrides() -> None:
    overrides = run_all.smoke_overrides(REPO / "conf" / "experiment" / "smoke.yaml")
    assert "trainer.max_epochs=1" in overrides
    assert "data.generator.num_queries=60" in overrides
    assert not any(o.startswith("experiment") for o in overrides)


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
def test_teacher_and_student_commands_compose(quick: bool, tmp_path: Path, monkeypatch) -> None:
    """Both forms compose: the quick student gets the smoke data key by key (distill.yaml has no
    ``experiment`` group, which is what broke ``make bench ARGS=--quick``)."""
    monkeypatch.chdir(REPO)
    teacher = run_all.teacher_overrides(quick)
    assert teacher == (["experiment=smoke"] if quick else [])
    train_cfg = compose_config("train", teacher, tmp_path / "train")
    command = run_all.distill_command(tmp_path / "teacher.ckpt", tmp_path, quick)
    assert command[1:3] == ["-m", "experiments.distill"]
    overrides = _overrides(command)
    assert not any(o.startswith("experiment=") for o in overrides)
    distill_cfg = compose_config("distill", overrides, tmp_path / "distill")
    assert distill_cfg.teacher_ckpt == str(tmp_path / "teacher.ckpt")
    # the student reads the data its teacher was trained on
    assert distill_cfg.data.generator == train_cfg.data.generator
    assert distill_cfg.trainer.max_epochs == (1 if quick else train_cfg.trainer.max_epochs)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(("args", "expected"), [("", ""), ("--quick", " --quick")])
def test_make_bench_passes_args_to_run_all(args: str, expected: str) -> None:
    out = subprocess.run(
        ["make", "-n", "bench", f"ARGS={args}"], cwd=REPO, capture_output=True, text=True
    ).stdout
    lines = [line for line in out.splitlines() if "bench.run_all" in line]
    assert lines and lines[-1].rstrip().endswith(f"-m bench.run_all{expected}"), out


# ---------------------------------------------------------------- make bench-gpu
def test_gpu_bench_without_cuda_says_so_in_one_line(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main(["--out", str(tmp_path / "gpu.json")]) == 0
    out = capsys.readouterr().out
    assert out == bench_gpu.NO_CUDA + "\n"
    assert not (tmp_path / "gpu.json").exists()


@pytest.mark.parametrize("pooler", [False, True])
@pytest.mark.parametrize("seq", [7, 16])
def test_flop_count_is_exact_on_a_tiny_config(pooler: bool, seq: int) -> None:
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, BertModel

    from ranking.nn.cross_encoder import CrossEncoder
    from ranking.nn.towers import build_tower

    # eager attention: its two products are plain matmuls that the counter sees (it has no
    # formula for the CPU kernel of scaled_dot_product_attention); the arithmetic is the same
    config = BertConfig(vocab_size=100, attn_implementation="eager", **TINY_BERT["architecture"])
    encoder = BertModel(config, add_pooling_layer=pooler).eval()
    model = CrossEncoder(encoder, build_tower("shared_bottom", 32, 3, 1, hidden_dims=[])).eval()
    batch = 5
    ids = torch.randint(0, 100, (batch, seq))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(
            ids, torch.ones_like(ids), torch.zeros_like(ids), torch.zeros(batch, dtype=torch.long)
        )
    expected = batch * bench_gpu.encoder_flops(config, seq, num_tasks=3, pooler=pooler)
    assert counter.get_total_flops() == expected
    with FlopCounterMode(display=False) as counter:  # a training step
        out = model(ids, torch.ones_like(ids), torch.zeros_like(ids), torch.zeros(5).long())
        out.scores.sum().backward()
    expected = batch * bench_gpu.training_flops(config, seq, num_tasks=3, pooler=pooler)
    assert counter.get_total_flops() == expected


@pytest.mark.parametrize("count", [0, 1, 8])
def test_ddp_command_for_a_faked_device_count(count: int, tmp_path: Path, monkeypatch) -> None:
    command = bench_gpu.ddp_command(count, steps=5, root=tmp_path)
    if count == 0:
        assert command is None
        return
    overrides = _overrides(command)
    assert {"trainer=gpu", "trainer.strategy=ddp", "trainer.devices=1"} <= set(overrides)
    monkeypatch.chdir(REPO)
    cfg = compose_config("train", overrides, tmp_path)  # the overrides exist and compose
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.devices == 1
    assert cfg.encoder.name == "minilm_l6" and cfg.trainer.max_steps == 5


def test_peak_table_matches_device_names() -> None:
    assert bench_gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench_gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench_gpu.peak_tflops("NVIDIA H200") == 989.0
    assert bench_gpu.peak_tflops("NVIDIA A10G") == 70.0
    assert bench_gpu.peak_tflops("Some Future GPU") is None


def test_gpu_measurements_run_on_cpu_with_a_tiny_model() -> None:
    """The measurement code itself (autocast, optimiser, FLOPs) on CPU: no numbers asserted."""
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = bench_gpu._cross_encoder(TINY_BERT, cpu)
    train = bench_gpu.training_throughput(model, cpu, batch=4, seq=8, steps=2, peak=100.0)
    assert train["train_flops_per_step"] == 4 * bench_gpu.training_flops(
        model.encoder.config, 8, pooler=False
    )
    assert train["mfu"] is not None and train["pairs_per_s"] > 0
    evaluation = bench_gpu.evaluation_throughput(model, cpu, batch=4, seq=8, reps=2)
    assert evaluation["fp32_pairs_per_s"] > 0 and evaluation["bf16_pairs_per_s"] > 0
    latency = bench_gpu.student_teacher_latency(
        model, cpu, candidates=12, seq=8, query_len=4, reps=2
    )
    assert latency["teacher_ms"] > 0 and latency["student_ms"] > 0
