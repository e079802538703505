"""Batched EOT: the cost of one full-strength EOT attack step on a randomized defence, draws batched through
``forward_draws`` against the same draws one forward pass at a time (the same attack: tested equal in
``tests/defense/test_adaptive.py``), as a ratio measured in one run.

    .venv/bin/python benchmarks/bench_eot.py            # the default model (smallcnn, Fashion-MNIST), 50 images

Both legs run APGD-CE with EOT 20 and no early stop, ``--steps`` steps, on the first ``--n`` test images,
against the main defence's random control (HiResCAM RoI, gradient RoA, zero fill) and the Gaussian-noise
baseline (sd 0.2). Results go to benchmarks/results/eot.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"


class OnePassAtATime(nn.Module):
    """The defence with its batched ``forward_draws`` hidden: APGD then evaluates EOT one pass at a time."""

    def __init__(self, defence: nn.Module) -> None:
        super().__init__()
        self.defence = defence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.defence(x)


def seconds(fn, repeats: int = 3) -> float:
    """The fastest of ``repeats`` runs (the first pays for warm-up allocations)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    from advspatial.attacks import make_attack
    from advspatial.data import load_dataset
    from advspatial.defence import NeutralizedModel, TransformDefence
    from advspatial.maps import attack_map, importance_map
    from advspatial.model_cache import get_or_train
    from advspatial.training import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eot", type=int, default=20)
    args = parser.parse_args()
    model = get_or_train(TrainConfig(), progress=False).model.eval()
    data = load_dataset("fashion-mnist", "test").head(args.n)
    x, y = data.images(), data.labels
    ids = torch.arange(args.n)
    importance = lambda z: importance_map("hirescam", model, z, batch_size=len(z))  # noqa: E731
    vulnerability = lambda z: attack_map("gradient", model, z).map  # noqa: E731
    defences = {
        "random control": lambda: NeutralizedModel(model, importance, vulnerability, 0.2, "zero", mode="random"),
        "noise baseline": lambda: TransformDefence(model, "noise", 0.2),
    }
    kw = dict(eps=0.1, steps=args.steps, eot_iter=args.eot, early_stop=False, seed=0)
    out: dict[str, object] = {"n": args.n, "steps": args.steps, "eot": args.eot, "threads": torch.get_num_threads(),
                              "load_average_1min_start": os.getloadavg()[0]}
    for name, make in defences.items():
        batched = seconds(lambda make=make: make_attack("apgd-ce", make(), **kw)(x, y, sample_ids=ids))
        single = seconds(lambda make=make: make_attack("apgd-ce", OnePassAtATime(make()), **kw)(x, y, sample_ids=ids))
        out[name] = {"batched_seconds": round(batched, 2), "one_at_a_time_seconds": round(single, 2),
                     "speedup": round(single / batched, 2)}
        print(name, out[name], flush=True)
    out["load_average_1min_end"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "eot.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
