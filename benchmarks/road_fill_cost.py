"""ROAD's fill on a device: one conjugate-gradient solve per region, against one solve for every region stacked.

Why: on a device the gate's deletion check fills each region of a batch in a call of its own, and ROAD's fill is a
conjugate-gradient loop of a few dozen small operations a step (:mod:`advspatial.regions.imputation_iterative`),
so R regions cost R loops of launches. Every system (image, channel) of such a loop stops on its own residual, so
the regions' images stacked in one solve give each image the fill it gets alone. This script times both on
blob-shaped regions (the top ``--fraction`` of smoothed random maps, drawn per region) and reports the seconds, the
solver's steps (``_Solving.step`` calls) and the largest difference between the two fills. On a CPU the
device's path is forced (``host_syncs.DEVICE_PATH_ON_CPU``): its step counts are a device's, its times this CPU's.
Not a test. Example::

    python benchmarks/road_fill_cost.py --device cuda --images 200 --regions 9 --output road_fill_cost.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F

from advspatial import host_syncs
from advspatial.regions import imputation_iterative
from advspatial.regions.binarization import top_fraction_mask
from advspatial.regions.imputation import noisy_linear_imputation


def blob_regions(count: int, n: int, size: int, fraction: float, seed: int = 0) -> list[torch.Tensor]:
    """``count`` (n, size, size) regions: each image's top ``fraction`` of a smoothed random map (a few blobs)."""
    gen = torch.Generator().manual_seed(seed)
    kernel = torch.ones(1, 1, 7, 7) / 49
    out = []
    for _ in range(count):
        maps = F.conv2d(torch.rand(n, 1, size, size, generator=gen), kernel, padding=3)[:, 0]
        out.append(top_fraction_mask(maps, fraction).mask)
    return out


def timed(device: torch.device, work: Any) -> tuple[Any, float, int]:
    """``work()``'s value, its seconds (the device synchronised) and the solver's steps in it."""
    steps = 0
    step = imputation_iterative._Solving.step

    def counted(self: imputation_iterative._Solving) -> None:
        nonlocal steps
        steps += 1
        step(self)

    with mock.patch.object(imputation_iterative._Solving, "step", counted):
        _synchronize(device)
        start = time.perf_counter()
        value = work()
        _synchronize(device)
        return value, time.perf_counter() - start, steps


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(device: torch.device, images: int, size: int, count: int, fraction: float) -> dict[str, Any]:
    """The fills of ``count`` regions of ``images`` images one solve each and in one stacked solve."""
    x = torch.rand(images, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    ids = torch.arange(images)
    regions = [r.to(device) for r in blob_regions(count, images, size, fraction)]
    noisy_linear_imputation(x[:2], regions[0][:2], seed=0, sample_ids=ids[:2])  # warm-up: kernels, allocator
    alone, alone_s, alone_steps = timed(device, lambda: [
        noisy_linear_imputation(x, r, seed=0, sample_ids=ids) for r in regions])
    stacked, stacked_s, stacked_steps = timed(device, lambda: noisy_linear_imputation(
        x.repeat(count, 1, 1, 1), torch.cat(regions), seed=0, sample_ids=ids.repeat(count)))
    difference = (torch.cat(alone) - stacked).abs().max().item()
    record = {"images": images, "size": size, "regions": count, "fraction": fraction,
              "one_solve_a_region": {"seconds": round(alone_s, 4), "steps": alone_steps},
              "one_stacked_solve": {"seconds": round(stacked_s, 4), "steps": stacked_steps},
              "largest_difference": difference, "speed_up": round(alone_s / max(stacked_s, 1e-9), 2)}
    print(json.dumps(record), flush=True)
    return record


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--regions", type=int, default=9)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--output", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    # on a CPU the device's solver, priced there
    with mock.patch.object(host_syncs, "DEVICE_PATH_ON_CPU", device.type == "cpu" or host_syncs.DEVICE_PATH_ON_CPU):
        record = compare(device, args.images, args.size, args.regions, args.fraction)
    record["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if args.output is not None:
        args.output.write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
