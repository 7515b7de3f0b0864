"""The random states a checkpoint carries: saved, reloaded safely, and the streams continue."""

from __future__ import annotations

import io
import random

import numpy as np
import torch

from callbacks.resume import ResumeRandomState


def _draws() -> tuple[list[float], list[float], list[float]]:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_random_states_survive_a_weights_only_checkpoint_and_continue_the_streams() -> None:
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    callback = ResumeRandomState()
    buffer = io.BytesIO()
    torch.save({"callbacks": {"ResumeRandomState": callback.state_dict()}}, buffer)
    expected = _draws()
    # Anything in between (another run, other seeds) ...
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)["callbacks"]["ResumeRandomState"]
    ResumeRandomState().load_state_dict(saved)
    # ... and the restored streams give exactly the numbers the original ones would have.
    assert _draws() == expected
