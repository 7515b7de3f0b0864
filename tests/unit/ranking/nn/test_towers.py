"""Unit tests of the tower registry, output contract, MMoE gates and option checking."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from omegaconf import OmegaConf

from ranking.nn.towers import TOWERS, TowerOutput, build_tower, tower_options

H, K, R, F, N = 16, 3, 4, 2, 6
MASKS = {"none": None, "feature": {"name": "feature", "gate_hidden": 8, "region_embedding_dim": 4}}
SMALL = {
    "shared_bottom": {"hidden_dims": [8]},
    "mmoe": {"num_experts": 3, "expert_dims": [8], "hidden_dims": [4]},
    "seq": {"state_dim": 8, "hidden_dims": [4]},
}


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(N, H, generator=gen)
    region = torch.tensor([0, 1, 3, 3, 1, 0])
    features = torch.randn(N, F, generator=gen)
    return h, region, features


def _tower(name: str, mask: str = "none", with_features: bool = False, **options):
    torch.manual_seed(0)
    spec = copy.deepcopy(MASKS[mask])
    if spec is not None and with_features:
        spec["region_feature_dim"] = F
    return build_tower(name, H, K, R, region_mask=spec, **{**SMALL[name], **options}).eval()


def test_registry_names() -> None:
    assert set(TOWERS) == {"shared_bottom", "mmoe", "seq"}


@pytest.mark.parametrize("with_features", [False, True])
@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("name", sorted(TOWERS))
def test_output_contract(name: str, mask: str, with_features: bool) -> None:
    tower = _tower(name, mask, with_features)
    h, region, features = _inputs()
    out = tower(h, region, features if with_features else None)
    assert isinstance(out, TowerOutput)
    assert out.scores.shape == (N, K)
    assert out.scores.dtype == torch.float32
    assert torch.isfinite(out.scores).all()
    assert out.aux_loss.ndim == 0 and torch.isfinite(out.aux_loss)
    assert ("region_mask" in out.extras) == (mask == "feature")
    if mask == "feature":
        assert out.extras["region_mask"].shape == (N, H - H // 2)
    # Items are scored independently: a sub-batch gives the same rows.
    sub = tower(h[:2], region[:2], features[:2] if with_features else None)
    torch.testing.assert_close(sub.scores, out.scores[:2])


@pytest.mark.parametrize("name", sorted(TOWERS))
def test_mask_none_spec_equals_no_mask(name: str) -> None:
    h, region, _ = _inputs()
    torch.manual_seed(0)
    a = build_tower(name, H, K, R, region_mask={"name": "none"}, **SMALL[name]).eval()
    torch.manual_seed(0)
    b = build_tower(name, H, K, R, region_mask=None, **SMALL[name]).eval()
    assert a.region_mask is None
    assert torch.equal(a(h, region).scores, b(h, region).scores)


@pytest.mark.parametrize("name", sorted(TOWERS))
def test_feature_mask_changes_scores_by_region(name: str) -> None:
    tower = _tower(name, "feature")
    h, _, _ = _inputs()
    row = h[:1].expand(R, H)  # one item seen from each region
    scores = tower(row, torch.arange(R)).scores
    assert not torch.allclose(scores[0], scores[1])
    plain = _tower(name, "none")(row, torch.arange(R)).scores
    torch.testing.assert_close(plain, plain[:1].expand(R, K))  # no mask: region plays no part


@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("name", sorted(TOWERS))
@pytest.mark.parametrize("bad_id", [4, 7, -1])
def test_region_id_out_of_range(name: str, mask: str, bad_id: int) -> None:
    tower = _tower(name, mask)
    h, region, _ = _inputs()
    region[2] = bad_id
    with pytest.raises(ValueError, match=rf"region id\(s\) {bad_id} .*num_regions={R}"):
        tower(h, region)


def test_shape_errors() -> None:
    tower = _tower("seq")
    h, region, _ = _inputs()
    with pytest.raises(ValueError, match=r"h must be \[N, 16\]"):
        tower(h[:, :8], region)
    with pytest.raises(ValueError, match="region must be"):
        tower(h, region[:3])
    with pytest.raises(ValueError, match="integer ids"):
        tower(h, region.float())


def test_unknown_tower() -> None:
    with pytest.raises(ValueError, match=r"unknown tower 'ple'.*mmoe"):
        build_tower("ple", H, K, R)


@pytest.mark.parametrize(
    ("name", "option"),
    [("mmoe", "num_expert"), ("seq", "num_experts"), ("shared_bottom", "state_dim")],
)
def test_unknown_option(name: str, option: str) -> None:
    with pytest.raises(ValueError, match=f"unknown option '{option}' for tower '{name}'"):
        build_tower(name, H, K, R, **{option: 2})


def test_unknown_region_mask_name_and_option() -> None:
    with pytest.raises(ValueError, match="unknown region mask 'film'"):
        build_tower("mmoe", H, K, R, region_mask={"name": "film"})
    with pytest.raises(ValueError, match="unknown option 'scal' for region mask 'feature'"):
        build_tower("mmoe", H, K, R, region_mask={"name": "feature", "scal": 2.0})
    with pytest.raises(ValueError, match="needs a 'name'"):
        build_tower("mmoe", H, K, R, region_mask={"scale": 2.0})


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("seq", {"cell": "lstm"}, "unknown cell 'lstm'"),
        ("seq", {"descending_weight": -1.0}, "descending_weight"),
        ("mmoe", {"num_experts": 0}, "num_experts"),
        ("mmoe", {"expert_dims": []}, "expert_dims"),
        ("shared_bottom", {"hidden_dims": [8, 0]}, r"hidden_dims\[1\]"),
        ("shared_bottom", {"hidden_dims": 8}, "list of layer widths"),
    ],
)
def test_invalid_option_values(name: str, options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_tower(name, H, K, R, **options)


def test_tower_options_lists_constructor_defaults() -> None:
    assert tower_options("mmoe") == {
        "num_experts": 4,
        "expert_dims": (64,),
        "hidden_dims": (),
        "dropout": 0.1,
    }
    assert set(tower_options("seq")) == {
        "state_dim",
        "hidden_dims",
        "dropout",
        "cell",
        "descending_weight",
    }


def test_accepts_omegaconf_containers() -> None:
    cfg = OmegaConf.create(
        {"region_mask": {"name": "feature", "scale": 2.0}, "expert_dims": [8], "num_experts": 2}
    )
    tower = build_tower(
        "mmoe",
        H,
        K,
        R,
        region_mask=cfg.region_mask,
        expert_dims=cfg.expert_dims,
        num_experts=cfg.num_experts,
    )
    h, region, _ = _inputs()
    assert tower(h, region).scores.shape == (N, K)


def test_mmoe_gates_sum_to_one() -> None:
    tower = _tower("mmoe", "feature")
    h, region, _ = _inputs()
    gates = tower(h, region).extras["gates"]
    assert gates.shape == (N, K, 3)
    assert (gates > 0).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(N, K))
    assert not torch.allclose(gates[:, 0], gates[:, 1])  # one gate per task, not a shared one


def test_mmoe_score_is_head_of_gated_mixture() -> None:
    tower = _tower("mmoe")
    h, region, _ = _inputs()
    out = tower(h, region)
    experts = torch.stack([e(h) for e in tower.experts], dim=1)  # [N, E, D]
    for k, head in enumerate(tower.heads):
        mixed = (out.extras["gates"][:, k, :, None] * experts).sum(1)
        torch.testing.assert_close(out.scores[:, k], head(mixed)[:, 0])


def test_shared_bottom_linear_heads() -> None:
    tower = _tower("shared_bottom", hidden_dims=())
    h, region, _ = _inputs()
    weight = torch.cat([head[-1].weight for head in tower.heads])  # [K, H]
    bias = torch.cat([head[-1].bias for head in tower.heads])
    torch.testing.assert_close(tower(h, region).scores, h @ weight.T + bias)


def test_shared_bottom_heads_are_independent() -> None:
    tower = _tower("shared_bottom")
    h, region, _ = _inputs()
    permuted = copy.deepcopy(tower)
    perm = [2, 0, 1]
    permuted.heads = torch.nn.ModuleList(tower.heads[i] for i in perm)
    assert torch.equal(permuted(h, region).scores, tower(h, region).scores[:, perm])


@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("name", sorted(TOWERS))
def test_every_parameter_gets_a_gradient(name: str, mask: str) -> None:
    tower = _tower(name, mask).train()
    h, region, _ = _inputs()
    out = tower(h, region)
    (out.scores.sum() + out.aux_loss).backward()
    for pname, param in tower.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname


def test_pickle_round_trip() -> None:
    tower = _tower("seq", "feature")
    h, region, _ = _inputs()
    clone = pickle.loads(pickle.dumps(tower))
    assert torch.equal(clone(h, region).scores, tower(h, region).scores)


def test_empty_batch() -> None:
    h, region, _ = _inputs()
    for name in TOWERS:
        out = _tower(name, "feature")(h[:0], region[:0])
        assert out.scores.shape == (0, K)
        assert out.aux_loss.item() == 0.0
