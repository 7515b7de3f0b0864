"""The score prior: s_k = tower_k(h) + sum_f w_kf x_f (ranking.nn.prior), end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from data_modules.errors import ConfigError, DataValidationError
from ranking.nn.cross_encoder import CrossEncoder
from ranking.nn.encoders import load_encoder_model, load_tokenizer
from ranking.nn.prior import ScorePrior, check_prior_spec
from ranking.nn.towers import build_tower
from ranking.scorers import prior_features as prior_module
from ranking.scorers.prior_features import compute_prior_features
from tests.conftest import TINY_ENCODER


def test_score_prior_is_a_linear_map_initialised_constant() -> None:
    prior = ScorePrior(num_features=2, num_tasks=3, init_weight=20.0)
    x = torch.tensor([[0.5, -0.1], [0.0, 1.0]])
    torch.testing.assert_close(prior(x), torch.tensor([[8.0] * 3, [20.0] * 3]))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"features": "minilm_cosine"}, "must be a non-empty list"),
        ({"features": []}, "must be a non-empty list"),
        ({"features": ["bm42"]}, r"unknown \['bm42'\]"),
        ({"features": ["minilm_cosine"], "init_weigth": 2}, "model.prior.init_weigth"),
        ({"features": ["minilm_cosine"], "init_weight": "high"}, "must be a number"),
    ],
)
def test_prior_spec_errors_name_the_key(spec, message) -> None:
    with pytest.raises(ConfigError, match=message):
        check_prior_spec(spec)


def test_prior_spec_defaults() -> None:
    assert check_prior_spec(None) is None
    assert check_prior_spec({"features": ["minilm_cosine"]}) == {
        "features": ["minilm_cosine"],
        "init_weight": 20.0,
    }


def _scorer(prior: ScorePrior | None) -> CrossEncoder:
    torch.manual_seed(0)
    encoder = load_encoder_model(TINY_ENCODER, len(load_tokenizer(TINY_ENCODER)))
    tower = build_tower("shared_bottom", hidden_size=16, num_tasks=2, num_regions=1)
    return CrossEncoder(encoder, tower, prior=prior).eval()


def test_cross_encoder_adds_the_prior_term_to_the_tower_scores() -> None:
    pairs = {
        "input_ids": torch.randint(1000, 2000, (3, 6)),
        "attention_mask": torch.ones(3, 6, dtype=torch.long),
        "token_type_ids": torch.zeros(3, 6, dtype=torch.long),
        "region": torch.zeros(3, dtype=torch.long),
    }
    x = torch.tensor([[0.9], [0.1], [-0.5]])
    with torch.no_grad():
        plain = _scorer(None)(**pairs).scores
        with_prior = _scorer(ScorePrior(1, 2, 10.0))(**pairs, pair_features=x).scores
    torch.testing.assert_close(with_prior, plain + 10.0 * x)
    with pytest.raises(ConfigError, match="pair_features"):
        _scorer(ScorePrior(1, 2))(**pairs)


def test_features_are_cached_by_pair_texts_and_bad_caches_recomputed(tmp_path, monkeypatch) -> None:
    calls: list[int] = []

    def fake(pair_texts: pl.DataFrame) -> np.ndarray:
        calls.append(pair_texts.height)
        return pair_texts.get_column("product").str.len_chars().cast(pl.Float32).to_numpy()

    monkeypatch.setitem(prior_module.PRIOR_FEATURES, "fake", fake)
    pairs = pl.DataFrame({"query": ["a", "a", "b"], "product": ["x", "yy", "zzz"]})
    first = compute_prior_features(["fake"], pairs, tmp_path)
    np.testing.assert_array_equal(first, [[1.0], [2.0], [3.0]])
    again = compute_prior_features(["fake"], pairs, tmp_path)
    np.testing.assert_array_equal(again, first)
    assert calls == [3]  # the second call read the cache
    other = pairs.with_columns(pl.Series("product", ["x", "yy", "zz"]))
    compute_prior_features(["fake"], other, tmp_path)
    assert calls == [3, 3]  # other texts: another cache entry
    for path in Path(tmp_path, "prior").glob("fake-*.npy"):
        path.write_bytes(b"not a numpy file")
    np.testing.assert_array_equal(compute_prior_features(["fake"], pairs, tmp_path), first)
    assert calls == [3, 3, 3]  # unreadable cache: recomputed


def test_datamodule_carries_pair_features_into_batches(tokenizer) -> None:
    from data_modules.datamodule import SyntheticDataModule

    dm = SyntheticDataModule(
        generator={"num_products": 60, "num_queries": 12, "list_size": 5, "seed": 0},
        tokenizer=tokenizer,
        label_columns=["relevance"],
        max_length=24,
        cache_dir=None,
    )
    dm.setup()
    values = np.arange(len(dm.tokens), dtype=np.float32)[:, None] / 100
    dm.set_pair_features(["fake"], values)
    batch = next(iter(dm.eval_dataloader("test")))
    mask = batch["mask"]
    torch.testing.assert_close(
        batch["pair_features"][mask][:, 0], torch.from_numpy(values[batch["rows"][mask], 0])
    )
    assert (batch["pair_features"][~mask] == 0).all()
    with pytest.raises(DataValidationError, match="expected shape"):
        dm.set_pair_features(["fake"], values[:-1])
    with pytest.raises(DataValidationError, match="non-finite"):
        dm.set_pair_features(["fake"], np.full_like(values, np.nan))


def test_a_run_with_a_prior_trains_evaluates_and_serves(make_cfg, tmp_path) -> None:
    from experiments.workflows.train import evaluate, train
    from ranking.serving.api import Ranker
    from tests.conftest import compose_config

    cfg = make_cfg("logger=none", "model.prior={features: [minilm_cosine], init_weight: 20}")
    metrics, objects = train(cfg)
    module, datamodule = objects["module"], objects["datamodule"]
    assert module.prior_feature_names == ["minilm_cosine"]
    assert datamodule.pair_feature_names == ["minilm_cosine"]
    # The prior term is exactly w * zero-shot cosine: with the tower silenced, scores equal it.
    batch = next(iter(datamodule.eval_dataloader("test")))
    with torch.no_grad():
        for p in module.model.tower.parameters():
            p.zero_()
        scores = module.eval()(batch)
    weight = module.model.prior.weight.detach()[0]
    expected = batch["pair_features"][..., :1] * weight
    torch.testing.assert_close(scores[batch["mask"]], expected[batch["mask"]])

    # evaluate attaches the prior features to its own data and reproduces the test metrics.
    ckpt = metrics["best_checkpoint"]
    eval_cfg = compose_config(
        "eval",
        [
            f"ckpt_path={ckpt}",
            "baselines=[]",
            *[o for o in cfg.hydra.overrides.task if o.startswith("data.")],
        ],
        tmp_path / "ev",
    )
    result, _ = evaluate(eval_cfg)
    assert result["test"]["test/relevance/ndcg@10"] == pytest.approx(
        metrics["test"]["test/relevance/ndcg@10"], abs=1e-6
    )
    # The Python API computes the cosine of (query, product) itself.
    ranker = Ranker.from_checkpoint(ckpt)
    out = ranker.score("red running shoes", ["red running shoe", "blue kettle"], region="na")
    assert set(out) == set(module.task_names) and out["relevance"].shape == (2,)
