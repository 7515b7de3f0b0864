"""Times allRank's losses inside allRank's own environment, on tensors the benchmark sends.

Started by ``bench.bench_losses`` with the Python of a side environment made by
``../shared/tools/setup_allrank_venv.sh DIR`` (allRank 1.4.3 cannot be installed beside this
project: its pins need torch <= 1.8). It imports nothing from this project: only the standard
library, torch and allRank.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.

* ``{"cmd": "load", "path": P}``: ``torch.load(P, weights_only=True)``, a dict of named tensors
  (``y_pred``, ``y_true`` with ``-1`` at padded positions); reply ``{"ok": true}``.
* ``{"cmd": "time", "loss": name, "kwargs": {...}, "reps": n, "warmup": w}``: one untimed pass
  (its value is replied), ``w`` more untimed, then ``n`` timed forward+backward passes of
  ``allrank.models.losses.<name>`` on the loaded tensors; reply ``{"seconds": [...], "value": v}``.
* ``{"cmd": "quit"}``.

Errors are replied as ``{"error": "..."}`` (one line), so the benchmark can report them.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import types


def _stub_torchvision() -> None:
    """allRank imports torchvision only for ``transforms.Compose``; a stub is enough."""
    vision = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    transforms.Compose = object  # type: ignore[attr-defined]
    vision.transforms = transforms  # type: ignore[attr-defined]
    sys.modules.setdefault("torchvision", vision)
    sys.modules.setdefault("torchvision.transforms", transforms)


def main() -> int:
    import torch

    torch.set_num_threads(1)
    _stub_torchvision()
    from allrank.models import losses

    tensors: dict[str, torch.Tensor] = {}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["cmd"] == "quit":
                break
            if request["cmd"] == "load":
                tensors = torch.load(request["path"], weights_only=True)
                reply: dict = {"ok": True, "torch": torch.__version__}
            else:
                fn = getattr(losses, request["loss"])
                kwargs = request.get("kwargs", {})
                y_pred, y_true = tensors["y_pred"], tensors["y_true"]

                def step(fn=fn, kwargs=kwargs, y_pred=y_pred, y_true=y_true) -> torch.Tensor:
                    leaf = y_pred.detach().requires_grad_(True)
                    value = fn(leaf, y_true, **kwargs)
                    value.backward()
                    return value

                value = float(step())  # also a warm-up pass
                for _ in range(int(request.get("warmup", 0))):
                    step()
                seconds = []
                gc.disable()  # as the benchmark times ours (and as ``timeit`` does)
                try:
                    for _ in range(int(request["reps"])):
                        start = time.perf_counter()
                        step()
                        seconds.append(time.perf_counter() - start)
                finally:
                    gc.enable()
                reply = {"seconds": seconds, "value": value}
        except Exception as err:  # reported to the parent as one line
            reply = {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
