"""Benchmark: the exact promotion-suppression pairs by incremental evaluation ÷ by full forward passes.

Usage::

    python benchmarks/bench_pse_incremental.py            # ResNet-20 (32x32) and EfficientNet-Lite0 (224x224)
    python benchmarks/bench_pse_incremental.py --models cifar10-resnet20 --blocks 2

For each model (pretrained weights where ``ADVSPATIAL_DATA`` or its package has them, else random: a random
network's logits may not move at all, so the differences printed then say nothing) and block side,
``promotion_suppression(method="exact")`` on the same clean and perturbed images (random) with
``incremental=False`` (a forward pass per (image, group) pair, the experiment's pairs per pass) and
``incremental=True``
(:mod:`advspatial.analysis.pse_incremental`), interleaved over ``--repeats`` rounds, CPU seconds each, and the
largest difference of s and p between them. The perturbation covers a ``--region`` square (all groups there are
pairs), so a 2x2 grid at 224 px times a few hundred pairs, not 12,544. Records the run in
``benchmarks/results/pse_incremental.json``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from advspatial.analysis.pse import promotion_suppression
from advspatial.runtime import scaled_batch

RESULTS = Path(__file__).resolve().parent / "results" / "pse_incremental.json"
SIZES = {"cifar10-resnet20": 32, "imagenet-efficientnet-lite0": 224}
#: the pse experiment's (image, group) pairs per forward pass at 28x28 (``pair_batch``)
PAIR_BATCH = 2048


def load(name: str) -> tuple[torch.nn.Module, str]:
    """The zoo model with its pretrained weights where they are here, else with random ones."""
    from advspatial.models.zoo import load_zoo_model, zoo_entry

    try:
        return load_zoo_model(name, download=False).eval(), "pretrained"
    except Exception as exc:  # weights absent here: the cost does not depend on them
        print(f"{name}: no pretrained weights ({exc}); random weights")
        return zoo_entry(name).builder().eval(), "random"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SIZES))
    parser.add_argument("--blocks", nargs="+", type=int, default=[2, 16])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--region", type=int, default=32, help="side of the perturbed square (pixels)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": {}}
    for name in args.models:
        size = SIZES[name]
        model, weights = load(name)
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(args.images, 3, size, size, generator=gen)
        side = min(args.region, size)
        x_adv = x.clone()
        x_adv[:, :, :side, :side] += 0.05 * torch.randn(args.images, 3, side, side, generator=gen)
        x_adv = x_adv.clamp(0, 1)
        y, t = torch.zeros(args.images, dtype=torch.long), torch.ones(args.images, dtype=torch.long)
        for block in args.blocks:
            if block > side:
                continue
            times: dict[str, list[float]] = {"full": [], "incremental": []}
            results = {}
            for _ in range(args.repeats):
                for label, incremental in (("full", False), ("incremental", True)):
                    start = time.process_time()
                    results[label] = promotion_suppression(model, x, x_adv, y, t, block=block, incremental=incremental,
                                                           batch_size=scaled_batch(PAIR_BATCH, size, size))
                    times[label].append(time.process_time() - start)
            pairs = int((results["full"].energy > 0).sum())
            best = {k: min(v) for k, v in times.items()}
            row = {"weights": weights, "image_size": size, "block": block, "pairs": pairs, "cpu_s": best,
                   "full_over_incremental": round(best["full"] / best["incremental"], 2),
                   "max_abs_difference": {"s": float((results["full"].s - results["incremental"].s).abs().max()),
                                          "p": float((results["full"].p - results["incremental"].p).abs().max())},
                   "types_differing": int((results["full"].types != results["incremental"].types).sum()),
                   "host": {"torch": torch.__version__, "threads": args.threads, "platform": platform.platform(),
                            "load_average_1min": os.getloadavg()[0]},
                   "time": time.strftime("%Y-%m-%d %H:%M")}
            print(name, json.dumps(row))
            record["runs"][f"{name}-block{block}-cpu-t{args.threads}"] = row
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
