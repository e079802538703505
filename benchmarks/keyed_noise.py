"""Per-sample noise and stacked-run memory: the two costs a device run pays per step that a CPU hides.

(a) ``runtime.per_sample_noise`` (counter-based keyed streams, made on the images' device) against the per-image CPU
generator loop it replaced (one ``torch.Generator`` per image seeded by ``runtime.sample_seed``, the rows stacked and
copied to the device), as a time ratio on this machine: uniform and normal noise for 200 CIFAR-sized images and 16
ImageNet-sized ones, median of ``--repeats``. On a GPU the loop is host work the device waits on; the keyed draw is a
handful of elementwise kernels (``--device cuda``).

(b) The memory a stacked run's gradient keeps: ``stacked_runs.kept_bytes_per_row`` (the autograd graph's saved
tensors per row) and the rows ``stacked_runs.run_rows`` gives a run at the preset's batch, with and without the
memory bound, for the CIFAR-10 ResNets (and EfficientNet-Lite0 when its package is installed).

    .venv/bin/python benchmarks/keyed_noise.py --out results/keyed_noise.json

Not a test.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from pathlib import Path

import torch

from advspatial.runtime import per_sample_noise, sample_generator
from advspatial.stacked_runs import device_memory, kept_bytes_per_row, run_rows

SHAPES = {"cifar 200 x 3x32x32": (200, 3, 32, 32), "imagenet 16 x 3x224x224": (16, 3, 224, 224)}


def generator_loop(shape: tuple[int, ...], seed: int, ids: list[int], kind: str, device: str) -> torch.Tensor:
    """The replaced method: one CPU generator per image, the rows stacked and copied to the device."""
    draw = torch.rand if kind == "uniform" else torch.randn
    rows = [draw(shape[1:], generator=sample_generator(seed, sid)) for sid in ids]
    return torch.stack(rows).to(device)


def timed(fn, repeats: int, device: str) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # the first call warms up


def noise_table(repeats: int, device: str) -> dict[str, dict[str, float]]:
    out = {}
    for name, shape in SHAPES.items():
        ids = list(range(1000, 1000 + shape[0]))
        for kind in ("uniform", "normal"):
            keyed = timed(functools.partial(per_sample_noise, shape, 7, ids, kind, device), repeats, device)
            loop = timed(functools.partial(generator_loop, shape, 7, ids, kind, device), repeats, device)
            out[f"{name} {kind}"] = {"keyed_ms": round(keyed * 1e3, 2), "generator_loop_ms": round(loop * 1e3, 2),
                                     "keyed_over_loop": round(keyed / loop, 2)}
    return out


def memory_table(batch: int) -> dict[str, dict[str, float]]:
    from advspatial.models.cifar_resnet import cifar_resnet

    models = {f"cifar10-resnet{d}": (cifar_resnet(d).eval(), torch.zeros(1, 3, 32, 32)) for d in (20, 56)}
    try:
        from advspatial.models.spec import load_model

        models["efficientnet-lite0"] = (load_model("imagenet-efficientnet-lite0", in_channels=3, num_classes=1000,
                                                   input_size=224).eval(), torch.zeros(1, 3, 224, 224))
    except Exception as exc:  # the optional model's package is absent: the CIFAR rows only
        print(f"EfficientNet-Lite0 left out: {exc}")
    out = {}
    for name, (model, sample) in models.items():
        kept = kept_bytes_per_row(model, sample)
        out[name] = {"kept_mb_per_row": round(kept / 1e6, 3), "run_rows_input_bound": run_rows(batch, sample),
                     "run_rows": run_rows(batch, sample, model),
                     "run_gb_input_bound": round(run_rows(batch, sample) * kept / 1e9, 2),
                     "run_gb": round(run_rows(batch, sample, model) * kept / 1e9, 2)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=200, help="the preset's batch: a run is whole calls of it")
    p.add_argument("--out", default="results/keyed_noise.json")
    a = p.parse_args()
    result = {"torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(), "device": a.device,
              "device_memory_gb": round(device_memory(torch.device(a.device)) / 1e9, 1),
              "noise": noise_table(a.repeats, a.device), "memory": memory_table(a.batch)}
    path = Path(__file__).parent / a.out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
