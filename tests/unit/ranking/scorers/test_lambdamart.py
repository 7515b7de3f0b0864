"""The LambdaMART baseline: integer grades for LambdaRank, features, fitting, scoring."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from data_modules.errors import ConfigError, DataValidationError
from ranking.scorers.lambdamart import FEATURES, fit_lambdamart, label_grades, pair_features


def test_grades_of_graded_gains_and_binary_labels() -> None:
    # Home Depot gains (r - 1) / 2 of averaged ratings printed with two decimals (2.33 -> 0.665).
    thirds = np.array([0.0, 0.165, 0.335, 0.5, 0.665, 0.835, 1.0])
    grades, gains = label_grades(thirds, "relevance")
    assert grades.tolist() == [0, 1, 2, 3, 4, 5, 6] and len(gains) == 7
    assert gains[3] == pytest.approx(2**0.5 - 1) and gains[6] == pytest.approx(1.0)
    # Averages of four ratings as well (quarters of a rating step): a 24-step grid.
    grades, gains = label_grades(np.append(thirds, 0.625), "relevance")
    assert len(gains) == 25 and grades[-1] == 15 and grades[4] == 16
    grades, gains = label_grades(np.array([0.0, 1.0, 1.0]), "click")
    assert grades.tolist() == [0, 1, 1] and gains == [0.0, 1.0]


def test_integer_grades_keep_their_exponential_gain() -> None:
    grades, gains = label_grades(np.array([0.0, 3.0, 1.0, 2.0]), "relevance")
    assert grades.tolist() == [0, 3, 1, 2] and gains == [0.0, 1.0, 3.0, 7.0]


@pytest.mark.parametrize("bad", [[-0.1, 0.5], [0.0, math.nan], [0.0, math.inf]])
def test_grades_refuse_negative_or_non_finite_labels(bad) -> None:
    with pytest.raises(DataValidationError, match="task 'relevance'"):
        label_grades(np.array(bad), "relevance")


def test_pair_features_values() -> None:
    rows = pl.DataFrame(
        {
            "query_id": ["q1", "q1", "q2"],
            "query": ["red drill 18v", "red drill 18v", "oak table"],
            "product_title": ["Red cordless drill 18v", "Blue hammer", "Oak dining table"],
            "product_description": ["", "steel", "solid oak"],
        }
    )
    product = ["Red cordless drill 18v", "Blue hammer ; steel", "Oak dining table ; solid oak"]
    features = pair_features(rows, product, cosine=np.array([0.9, 0.2, 0.5]))
    f = {name: features[:, i] for i, name in enumerate(FEATURES)}
    assert features.shape == (3, len(FEATURES)) and features.dtype == np.float32
    np.testing.assert_allclose(f["query_words"], [3, 3, 2])
    np.testing.assert_allclose(f["title_words"], [4, 2, 3])
    np.testing.assert_allclose(f["title_coverage"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(f["title_jaccard"], [3 / 4, 0.0, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(f["phrase_in_title"], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(f["number_match"], [1.0, 0.0, 1.0])  # q2 has no number: 1
    np.testing.assert_allclose(f["description_chars"], np.log1p([0, 5, 9]), rtol=1e-6)
    np.testing.assert_allclose(f["cosine_rank"], [1, 2, 1])
    np.testing.assert_allclose(f["cosine_gap"], [0.0, 0.7, 0.0], atol=1e-6)
    np.testing.assert_allclose(f["list_size"], [2, 2, 1])
    assert f["bm25_title"][0] > 0 and f["bm25_title"][1] == 0
    assert f["bm25_rank"][0] == 1 and f["bm25_rank"][1] == 2
    assert (f["bm25_brand"] == 0).all()  # no brand column: 0, not an error


def test_fit_learns_a_ranking_a_feature_determines() -> None:
    rng = np.random.default_rng(0)
    lists, size = 60, 8
    signal = rng.random(lists * size)
    labels = np.round(signal * 3) / 3  # grades 0..3 from the signal
    features = np.stack([signal + rng.normal(0, 0.01, signal.shape), rng.random(signal.shape)], 1)
    query_ids = [f"q{i // size:02d}" for i in range(lists * size)]
    rows = np.arange(lists * size)
    splits = {"train": rows[: 40 * size], "val": rows[40 * size :]}
    boosters = fit_lambdamart(
        features, labels[:, None], query_ids, splits, ["relevance"], threads=1, n_estimators=200
    )
    predicted = boosters[0].predict(features[splits["val"]])
    # Within each validation list the booster orders items as the labels do.
    for q in range(40, lists):
        part = slice((q - 40) * size, (q - 39) * size)
        truth = labels[splits["val"]][part]
        order = np.argsort(-predicted[part], kind="stable")
        assert (np.diff(truth[order]) <= 1e-9).all()


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError, match="num_leafs"):
        fit_lambdamart(
            np.zeros((4, 1)),
            np.zeros((4, 1)),
            ["a", "a", "b", "b"],
            {"train": np.arange(2), "val": np.arange(2, 4)},
            ["relevance"],
            num_leafs=3,
        )


def test_lambdamart_baseline_in_a_training_run(make_cfg) -> None:
    from experiments.workflows.train import train

    cfg = make_cfg("logger=none", "baselines=[random,minilm_zero_shot,lambdamart]")
    metrics, objects = train(cfg)
    baselines = metrics["baselines"]
    assert set(baselines) == {"random", "minilm_zero_shot", "lambdamart"}
    for task in objects["module"].task_names:
        assert 0.0 <= baselines["lambdamart"][f"test/{task}/ndcg@10"] <= 1.0
    # minilm_zero_shot reused the cosine LambdaMART computed: same as computing it alone.
    from experiments.workflows.train import _baseline_scorers

    alone = _baseline_scorers(["minilm_zero_shot"], objects["datamodule"], "test", 4, 0)
    batch = next(iter(objects["datamodule"].eval_dataloader("test")))
    shared = _baseline_scorers(["minilm_zero_shot"], objects["datamodule"], "test", 4, 0)
    torch.testing.assert_close(
        alone["minilm_zero_shot"][0](batch), shared["minilm_zero_shot"][0](batch)
    )


def test_lambdamart_needs_train_and_val_splits(make_cfg) -> None:
    from ranking.scorers.lambdamart import lambdamart_scorer

    class NoVal:
        def __init__(self) -> None:
            self.lists = {"train": [np.arange(3)], "test": [np.arange(3)]}

    with pytest.raises(ConfigError, match=r"\['val'\]"):
        lambdamart_scorer(NoVal(), 1)
