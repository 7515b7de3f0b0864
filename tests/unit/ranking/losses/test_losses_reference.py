"""Every loss against allRank 1.4.3's values and gradients (``allrank_losses.json``).

The reference folder is ``tests/data/reference`` in the repository, or
``$SHOPRANK_REFERENCE_DIR``. Without the file every test here fails with the reason.

Errors: value ``|v - ref| / |ref|``; gradient ``max|g - ref| / max|ref|`` (relative to the
gradient's scale, since single entries may be 0). Bounds: 1e-6 in float64, 1e-4 for NeuralNDCG
(float32 in the reference).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ranking.losses import allrank_options, build_loss
from tests.conftest import load_reference, reference_dir

REFERENCE_FILE = "allrank_losses.json"


DATA = load_reference(REFERENCE_FILE)
SKIP_REASON = (
    f"allRank reference {reference_dir() / REFERENCE_FILE} not found "
    "(set SHOPRANK_REFERENCE_DIR to the folder holding it)"
)

#: Reference key prefix -> our loss name.
KEY_TO_LOSS = {
    "approx_ndcg": "approx_ndcg",
    "listnet": "listnet",
    "listmle": "listmle",
    "ranknet": "ranknet",
    "lambdaloss": "lambdaloss",
    "neural_ndcg": "neural_ndcg",
}


def _loss_name(key: str) -> str:
    for prefix, name in KEY_TO_LOSS.items():
        if key.startswith(prefix):
            return name
    raise KeyError(key)


def _params() -> list[Any]:
    if DATA is None:
        return [pytest.param(None, None, id="reference-missing")]
    return [
        pytest.param(index, key, id=f"seed{case['params']['seed']}-{key}")
        for index, case in enumerate(DATA["cases"])
        for key in case["losses"]
    ]


def test_reference_file_has_every_loss() -> None:
    if DATA is None:
        pytest.fail(SKIP_REASON)
    keys = {key for case in DATA["cases"] for key in case["losses"]}
    assert {_loss_name(key) for key in keys} == set(KEY_TO_LOSS.values())


@pytest.mark.parametrize(("case_index", "key"), _params())
def test_matches_allrank(case_index: int | None, key: str | None) -> None:
    if DATA is None or case_index is None or key is None:
        pytest.fail(SKIP_REASON)
    case = DATA["cases"][case_index]
    ref = case["losses"][key]
    dtype = torch.float64 if ref["dtype"] == "float64" else torch.float32
    y_pred = torch.tensor(case["y_pred"], dtype=dtype, requires_grad=True)
    y_true = torch.tensor(case["y_true"], dtype=dtype)
    mask = y_true >= 0  # allRank marks padding with y_true == -1
    name = _loss_name(key)
    loss = build_loss(name, **allrank_options(name, **ref["kwargs"]))

    value = loss(y_pred, y_true, mask)
    value.backward()

    bound = 1e-6 if dtype == torch.float64 else 1e-4
    expected = ref["value"]
    assert abs(value.item() - expected) <= bound * abs(expected), (value.item(), expected)
    grad_ref = torch.tensor(ref["grad"], dtype=dtype)
    scale = grad_ref.abs().max().clamp(min=torch.finfo(dtype).tiny)
    grad_err = ((y_pred.grad - grad_ref).abs().max() / scale).item()
    assert grad_err <= bound, f"gradient relative error {grad_err:.3g} > {bound}"
    assert torch.all(y_pred.grad[~mask] == 0)
