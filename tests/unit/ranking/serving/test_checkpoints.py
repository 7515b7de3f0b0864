"""User-supplied checkpoints are read with weights_only=True: one line for every bad file."""

from __future__ import annotations

import pytest
import torch

from data_modules.errors import ConfigError
from ranking.serving.checkpoints import check_checkpoint, read_checkpoint

HPARAMS = {"tasks": [{"name": "click", "label": "click"}], "metrics": ["ndcg@10"]}


class Payload:
    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_a_pickle_payload_is_refused_and_never_runs(tmp_path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {**HPARAMS, "x": Payload(marker)}}, path)
    with pytest.raises(ConfigError, match=r"^teacher_ckpt: refused .*evil\.ckpt: it pickles the"):
        read_checkpoint(path, "teacher_ckpt")
    assert not marker.exists()
    torch.load(path, weights_only=False)  # what the unsafe load would have done
    assert marker.read_text() == "ran"


def test_a_pickled_module_is_refused_too(tmp_path) -> None:
    path = tmp_path / "module.ckpt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(ConfigError, match=r"torch\.nn\.modules\.linear\.Linear"):
        read_checkpoint(path)


def test_plain_containers_and_tensors_load(tmp_path) -> None:
    path = tmp_path / "ok.ckpt"
    content = {
        "state_dict": {"w": torch.ones(2)},
        "hyper_parameters": {**HPARAMS, "betas": (0.9, 0.999), "lr": 1e-3, "mask": None},
        "shoprank_split": {"key": "query", "query_ids": {"test": ["00001"]}, "sha256": "ab"},
    }
    torch.save(content, path)
    loaded = read_checkpoint(path)
    assert loaded["hyper_parameters"]["betas"] == (0.9, 0.999)
    assert check_checkpoint(path, expect="cross_encoder")["shoprank_split"]["key"] == "query"


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
        (lambda p: p.write_text("not a checkpoint\n"), r"is not a PyTorch checkpoint \("),
        (lambda p: torch.save([1, 2], p), r"holds a list, not a checkpoint dict"),
        (lambda p: torch.save({"state_dict": {}}, p), r"is not a shoprank model checkpoint"),
    ],
    ids=["empty", "text", "list", "no_hparams"],
)
def test_bad_files_are_one_config_error(tmp_path, write, message) -> None:
    path = tmp_path / "x.ckpt"
    write(path)
    with pytest.raises(ConfigError, match=message) as err:
        check_checkpoint(path, "ckpt_path")
    assert "\n" not in str(err.value)


def test_truncated_checkpoint(tmp_path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "hyper_parameters": HPARAMS}, path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ConfigError, match=r"last\.ckpt is not a PyTorch checkpoint \(truncated"):
        read_checkpoint(path)


def test_the_other_kind_is_refused(tmp_path) -> None:
    path = tmp_path / "student.ckpt"
    hparams = {**HPARAMS, "bi_encoder": {}, "distillation": {}}
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, path)
    assert check_checkpoint(path, expect="bi_encoder")
    with pytest.raises(ConfigError, match="holds a bi_encoder model; a cross_encoder is needed"):
        check_checkpoint(path, "teacher_ckpt", expect="cross_encoder")
