"""Unit tests of the MD feature-generated region mask."""

from __future__ import annotations

import pytest
import torch

from ranking.nn.towers import FeatureRegionMask, build_region_mask

H, R, N = 10, 4, 6


def _mask(**options) -> FeatureRegionMask:
    torch.manual_seed(0)
    options = {"region_embedding_dim": 4, "gate_hidden": 8, **options}
    return FeatureRegionMask(H, R, **options)


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(N, H, generator=gen), torch.tensor([0, 2, 2, 0, 2, 0])


@pytest.mark.parametrize(("fraction", "inv"), [(0.5, 5), (0.3, 3), (0.0, 0), (0.94, 9)])
def test_invariant_part_unchanged_and_driven_part_multiplied(fraction: float, inv: int) -> None:
    mask = _mask(invariant_fraction=fraction)
    h, region = _inputs()
    out, m = mask(h, region)
    assert (mask.invariant_dim, mask.driven_dim) == (inv, H - inv)
    assert out.shape == h.shape and m.shape == (N, H - inv)
    assert torch.equal(out[:, :inv], h[:, :inv])
    assert torch.equal(out[:, inv:], h[:, inv:] * m)
    assert not torch.equal(out[:, inv:], h[:, inv:])


@pytest.mark.parametrize("scale", [1.0, 2.0, 3.5])
def test_mask_within_zero_and_scale(scale: float) -> None:
    mask = _mask(scale=scale)
    with torch.no_grad():  # large weights saturate the sigmoid at both ends
        for param in mask.parameters():
            param.mul_(200.0)
    h, _ = _inputs()
    _, m = mask(h, torch.arange(R).repeat(2)[:N])
    assert m.min() >= 0.0 and m.max() <= scale
    assert m.min() < 1e-3 * scale and m.max() > (1 - 1e-3) * scale  # both ends are reached
    _, m_default = _mask(scale=scale)(h, torch.arange(R).repeat(2)[:N])
    assert ((m_default > 0) & (m_default < scale)).all()


def test_mask_depends_on_region_only_through_the_gate() -> None:
    mask = _mask()
    h, _ = _inputs()
    _, m = mask(h[:1].expand(R, H), torch.arange(R))
    assert not torch.allclose(m[0], m[1])
    _, same = mask(h[:3], torch.tensor([1, 1, 1]))
    torch.testing.assert_close(same, same[:1].expand(3, -1))  # mask does not read h


def test_gradients_reach_gate_and_present_region_embeddings_only() -> None:
    mask = _mask()
    h, region = _inputs()  # regions 0 and 2 present, 1 and 3 absent
    out, _ = mask(h, region)
    (out**2).sum().backward()
    for name, param in mask.gate.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    grad = mask.embedding.weight.grad
    assert (grad[[0, 2]].abs().sum(-1) > 0).all()
    assert torch.equal(grad[[1, 3]], torch.zeros(2, 4))


def test_region_features_drive_the_gate() -> None:
    mask = _mask(region_feature_dim=3)
    h, region = _inputs()
    feats = torch.randn(N, 3, generator=torch.Generator().manual_seed(5))
    _, m1 = mask(h, region, feats)
    _, m2 = mask(h, region, feats + 1.0)
    assert not torch.allclose(m1, m2)
    only_features = _mask(region_feature_dim=3, region_embedding_dim=0)
    assert only_features.embedding is None
    _, m3 = only_features(h, torch.tensor([0, 1, 2, 3, 0, 1]), feats[:1].expand(N, 3))
    torch.testing.assert_close(m3, m3[:1].expand(N, -1))  # no embedding: region id unused


def test_region_feature_errors() -> None:
    h, region = _inputs()
    with pytest.raises(ValueError, match="needs region_features"):
        _mask(region_feature_dim=3)(h, region)
    with pytest.raises(ValueError, match=r"region_features must be \[6, 3\]"):
        _mask(region_feature_dim=3)(h, region, torch.randn(N, 2))
    with pytest.raises(ValueError, match="region_feature_dim=0"):
        _mask()(h, region, torch.randn(N, 2))


@pytest.mark.parametrize("bad_id", [4, 99, -2])
def test_region_id_out_of_range(bad_id: int) -> None:
    h, region = _inputs()
    region[-1] = bad_id
    with pytest.raises(ValueError, match=rf"region id\(s\) {bad_id} outside \[0, 4\)"):
        _mask()(h, region)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"invariant_fraction": 1.0}, "invariant_fraction"),
        ({"invariant_fraction": 0.97}, "no region-driven dimension"),
        ({"scale": 0.0}, "scale"),
        ({"region_embedding_dim": 0}, "needs an input"),
        ({"gate_hidden": -1}, "gate_hidden"),
    ],
)
def test_invalid_settings(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FeatureRegionMask(H, R, **options)


def test_linear_gate() -> None:
    mask = _mask(gate_hidden=0)
    assert isinstance(mask.gate, torch.nn.Linear)
    h, region = _inputs()
    assert mask(h, region)[1].shape == (N, 5)


def test_build_region_mask() -> None:
    assert build_region_mask(None, H, R) is None
    assert build_region_mask({"name": "none"}, H, R) is None
    built = build_region_mask({"name": "feature", "scale": 3.0}, H, R)
    assert isinstance(built, FeatureRegionMask) and built.scale == 3.0
    with pytest.raises(ValueError, match="unknown region mask 'gate'"):
        build_region_mask({"name": "gate"}, H, R)
    with pytest.raises(ValueError, match="unknown option 'hidden' for region mask 'feature'"):
        build_region_mask({"name": "feature", "hidden": 3}, H, R)
    with pytest.raises(ValueError, match="takes no options"):
        build_region_mask({"name": "none", "scale": 2.0}, H, R)
