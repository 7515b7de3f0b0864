"""Distillation losses (exact values), the student's distillation step, the teacher-score cache."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from data_modules.errors import ConfigError
from experiments.workflows.config import build_datamodule, build_module, plain, task_list
from ranking.losses.distillation import build_distillation_loss, listnet_kl, margin_mse
from ranking.nn.encoders import load_tokenizer
from ranking.serving import teacher_scores
from ranking.serving.checkpoints import file_sha256
from ranking.serving.teacher_scores import cached_teacher_scores
from tests.conftest import TINY_ENCODER

# Two lists: 3 real items, and 2 real items + 1 padded slot holding junk.
STUDENT = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, float("nan")]])
TEACHER = torch.tensor([[1.0, 0.0, 3.0], [0.0, 2.0, float("inf")]])
MASK = torch.tensor([[True, True, True], [True, True, False]])


def _softmax(xs: list[float]) -> list[float]:
    top = max(xs)
    exps = [math.exp(x - top) for x in xs]
    return [e / sum(exps) for e in exps]


def _kl_by_hand(s: list[float], t: list[float], temp: float) -> float:
    p = _softmax([x / temp for x in t])
    q = _softmax([x / temp for x in s])
    return temp**2 * sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))


@pytest.mark.parametrize("temp", [1.0, 2.0, 0.5])
def test_listnet_kl_equals_hand_computation(temp: float) -> None:
    expected = [
        _kl_by_hand([0.5, -1.0, 2.0], [1.0, 0.0, 3.0], temp),
        _kl_by_hand([1.0, 0.0], [0.0, 2.0], temp),
    ]
    got = listnet_kl(STUDENT, TEACHER, MASK, temperature=temp)
    assert float(got) == pytest.approx(sum(expected) / 2, rel=1e-6)
    got_sum = listnet_kl(STUDENT, TEACHER, MASK, temperature=temp, reduction="sum")
    assert float(got_sum) == pytest.approx(sum(expected), rel=1e-6)


def test_listnet_kl_two_items_closed_form() -> None:
    # p = softmax(1, 0), q = (1/2, 1/2): KL = p1 log(2 p1) + p2 log(2 p2).
    p1 = 1 / (1 + math.exp(-1))
    expected = p1 * math.log(2 * p1) + (1 - p1) * math.log(2 * (1 - p1))
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    assert float(listnet_kl(s, t, torch.ones(1, 2, dtype=torch.bool))) == pytest.approx(expected)


def test_listnet_kl_is_zero_when_student_equals_teacher_up_to_a_shift() -> None:
    teacher = torch.where(MASK, TEACHER, 0.0)
    assert float(listnet_kl(teacher, teacher, MASK)) == 0.0
    shifted = teacher + torch.tensor([[3.0], [-7.0]])  # per-list shifts leave softmax unchanged
    assert float(listnet_kl(shifted, teacher, MASK)) == pytest.approx(0.0, abs=1e-6)
    assert float(listnet_kl(shifted, teacher, MASK, temperature=3.0)) == pytest.approx(0, abs=1e-6)


def test_margin_mse_equals_hand_computation_and_ignores_shifts() -> None:
    # List 1: d = s - t = (-0.5, -1, -1): ordered pairs (d_i - d_j)^2: 0.25 twice, 0.25 twice, 0
    # twice -> mean 1/6. List 2: d = (1, -2): 9 twice -> 9. Mean over lists: (1/6 + 9) / 2.
    expected = (1 / 6 + 9) / 2
    assert float(margin_mse(STUDENT, TEACHER, MASK)) == pytest.approx(expected, rel=1e-6)
    teacher = torch.where(MASK, TEACHER, 0.0)
    assert float(margin_mse(teacher + 5.0, teacher, MASK)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("loss", [listnet_kl, margin_mse])
def test_padding_is_ignored_and_singleton_lists_weigh_nothing(loss) -> None:
    base = loss(STUDENT[:1], TEACHER[:1], MASK[:1])
    # Appending padded slots (with junk) to the list changes nothing.
    s = torch.cat([STUDENT[:1], torch.tensor([[float("nan"), 99.0]])], dim=1)
    t = torch.cat([TEACHER[:1], torch.tensor([[-99.0, float("inf")]])], dim=1)
    m = torch.cat([MASK[:1], torch.zeros(1, 2, dtype=torch.bool)], dim=1)
    assert float(loss(s, t, m)) == pytest.approx(float(base), rel=1e-6)
    # A list with one real item carries no ranking information: it adds nothing to the mean.
    single = torch.tensor([[True, False, False, False, False]])
    both = loss(torch.cat([s, s]), torch.cat([t, t]), torch.cat([m, single]))
    assert float(both) == pytest.approx(float(base), rel=1e-6)
    assert float(loss(s, t, single)) == 0.0


def test_losses_reject_non_finite_real_scores_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        listnet_kl(STUDENT, TEACHER, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="share shape"):
        margin_mse(STUDENT, TEACHER[:, :2], MASK)


def test_build_distillation_loss_checks_names_and_temperatures() -> None:
    fn = build_distillation_loss("listnet_kl", temperature=2.0)
    assert float(fn(STUDENT, TEACHER, MASK)) == float(
        listnet_kl(STUDENT, TEACHER, MASK, temperature=2.0)
    )
    with pytest.raises(ConfigError, match="unknown loss 'kl'"):
        build_distillation_loss("kl")
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        build_distillation_loss("listnet_kl", temperature=0)
    with pytest.raises(ConfigError, match="no effect on margin_mse"):
        build_distillation_loss("margin_mse", temperature=2.0)


# ---------------------------------------------------------------------------------------- student
def _tiny_student(distill_loss: str = "listnet_kl", alpha: float = 1.0):
    from ranking.modules.bi_encoder import BiEncoderModule

    torch.manual_seed(0)
    return BiEncoderModule(
        encoder={k: v for k, v in TINY_ENCODER.items() if k != "max_length"},
        tasks=[{"name": "a", "label": "a"}, {"name": "b", "label": "b"}],
        loss={"name": "listnet"},
        bi_encoder={"dim": 8},
        distillation={"alpha": alpha, "loss": distill_loss, "temperature": 1.0},
    )


def _fixed_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    return {
        "query_input_ids": torch.randint(1000, 2000, (2, 5), generator=generator),
        "query_attention_mask": torch.ones(2, 5, dtype=torch.long),
        "product_input_ids": torch.randint(1000, 2000, (2, 4, 6), generator=generator),
        "product_attention_mask": torch.ones(2, 4, 6, dtype=torch.long),
        "mask": mask,
        "labels": torch.tensor([[[1.0, 0.0]] * 4, [[0.0, 1.0]] * 4]),
        "teacher_scores": torch.tensor(
            [
                [[3.0, -1.0], [0.0, 2.0], [-2.0, 0.5], [1.0, 1.0]],
                [[-1.0, 0.0], [2.0, 1.0], [0.5, -2.0], [0.0, 0.0]],
            ]
        ),
    }


@pytest.mark.parametrize("distill_loss", ["listnet_kl", "margin_mse"])
def test_sgd_steps_on_a_fixed_batch_reduce_the_distillation_loss(distill_loss: str) -> None:
    student = _tiny_student(distill_loss, alpha=1.0).train()
    batch = _fixed_batch()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    values = []
    for _ in range(4):
        losses = student.compute_loss(student(batch), batch)
        assert losses["loss"].item() == losses["distill_loss"].item()  # alpha = 1
        values.append(losses["loss"].item())
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    assert all(later < earlier for earlier, later in itertools.pairwise(values)), values


def test_student_loss_mixes_distillation_and_ground_truth_with_alpha() -> None:
    student = _tiny_student(alpha=0.25).eval()
    batch = _fixed_batch()
    with torch.no_grad():
        scores = student(batch)
        losses = student.compute_loss(scores, batch)
        no_teacher = student.compute_loss(
            scores, {k: v for k, v in batch.items() if k != "teacher_scores"}
        )
    mask = batch["mask"]
    distill = sum(listnet_kl(scores[..., k], batch["teacher_scores"][..., k], mask) for k in (0, 1))
    assert float(losses["distill_loss"]) == pytest.approx(float(distill), rel=1e-6)
    expected = 0.25 * float(losses["distill_loss"]) + 0.75 * float(losses["gt_loss"])
    assert float(losses["loss"]) == pytest.approx(expected, rel=1e-6)
    assert float(no_teacher["loss"]) == float(losses["gt_loss"])  # validation batches


def test_student_config_errors_name_the_key() -> None:
    from ranking.modules.bi_encoder import BiEncoderModule

    kwargs = {
        "encoder": {
            "source": "random",
            "architecture": {
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 32,
            },
        },
        "tasks": [{"name": "a", "label": "a"}],
        "loss": {"name": "listnet"},
    }
    with pytest.raises(ConfigError, match=r"student\.distillation\.alpha must be in \[0, 1\]"):
        BiEncoderModule(**kwargs, distillation={"alpha": 1.5})
    with pytest.raises(ConfigError, match=r"student\.distillation: unknown option"):
        BiEncoderModule(**kwargs, distillation={"alpah": 0.5})
    with pytest.raises(ConfigError, match=r"student\.distillation\.loss: unknown loss"):
        BiEncoderModule(**kwargs, distillation={"loss": "kl"})


# ---------------------------------------------------------------------------------------- cache
@pytest.fixture
def teacher_and_data(make_cfg, tmp_path):
    cfg = make_cfg()
    tokenizer = load_tokenizer(plain(cfg.encoder))
    datamodule = build_datamodule(cfg, tokenizer, [t["label"] for t in task_list(cfg)])
    datamodule.setup("fit")
    torch.manual_seed(0)
    teacher = build_module(cfg, datamodule.region_names, datamodule).eval()
    ckpt = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": teacher.state_dict()}, ckpt)
    return teacher, datamodule, ckpt, tmp_path / "cache"


def test_teacher_scores_are_cached_per_pair_row_and_hit_on_the_second_call(
    teacher_and_data, monkeypatch
) -> None:
    teacher, datamodule, ckpt, cache = teacher_and_data
    first = cached_teacher_scores(teacher, datamodule, ckpt, cache, progress=False)
    assert not first.from_cache and (first.path / "scores.npy").is_file()
    assert first.scores.shape == (len(datamodule.labels), len(teacher.task_names))

    # Each training row holds the teacher's score of that pair; rows of other splits are NaN.
    train_rows = np.concatenate(datamodule.lists["train"].rows)
    assert not np.isnan(first.scores[train_rows]).any()
    other = np.setdiff1d(np.arange(len(datamodule.labels)), train_rows)
    assert np.isnan(first.scores[other]).all()
    batch = next(iter(datamodule.eval_dataloader("train")))
    with torch.no_grad():
        direct = teacher(batch)[batch["mask"]].numpy()
    np.testing.assert_allclose(
        first.scores[batch["rows"][batch["mask"]].numpy()], direct, atol=1e-5
    )

    def no_compute(*args, **kwargs):
        raise AssertionError("the teacher ran again despite a cache entry")

    monkeypatch.setattr(teacher_scores, "compute_teacher_scores", no_compute)
    second = cached_teacher_scores(teacher, datamodule, ckpt, cache, progress=False)
    assert second.from_cache and second.key == first.key
    np.testing.assert_array_equal(second.scores, first.scores)


def test_teacher_score_key_follows_checkpoint_bytes_and_splits(teacher_and_data) -> None:
    teacher, datamodule, ckpt, _ = teacher_and_data
    key = teacher_scores.teacher_score_key(
        file_sha256(ckpt), datamodule, ["train"], teacher.task_names
    )
    assert key != teacher_scores.teacher_score_key(
        "0" * 64, datamodule, ["train"], teacher.task_names
    )
    assert key != teacher_scores.teacher_score_key(
        file_sha256(ckpt), datamodule, ["train", "val"], teacher.task_names
    )
    with pytest.raises(ConfigError, match="no 'dev' split"):
        teacher_scores.compute_teacher_scores(teacher, datamodule, ["dev"], progress=False)
