"""Benchmark: cost of one one-pixel candidate by incremental evaluation ÷ a full forward pass.

Usage::

    python benchmarks/bench_incremental.py                       # ResNet-20 (32x32) and EfficientNet-Lite0 (224x224)
    python benchmarks/bench_incremental.py --models cifar10-resnet20 --candidates 2048
    python benchmarks/bench_incremental.py --device cuda

Models: the zoo's ``cifar10-resnet20`` (pretrained weights where
``ADVSPATIAL_DATA`` has them, else random weights with random BatchNorm
statistics: the cost does not depend on the weights) and
``imagenet-efficientnet-lite0`` (random weights unless ``--pretrained``).
Clean images are random. For each model the script times, interleaved over
``--repeats`` rounds on the same candidates (random image, position, colour):

* ``full``: the model on the patched images (building them included), in
  batches of ``--full-batch`` (256, what the attack uses without incremental
  evaluation on a CPU; larger batches are slower per image there);
* ``graph``: :class:`advspatial.models.patch.graph.GraphPatchForward`, the
  cone followed through the whole graph (residual additions, strided and
  depthwise convolutions, padding modules);
* ``chain``: :class:`advspatial.models.patch.forward.PatchForward`, the cone
  through the leading chain of layers only (what the project had before).

and checks the incremental logits against the full ones. It also prints the
bound the cone allows: multiply-adds of the convolutions per candidate,
incremental over full. Records the run in ``benchmarks/results/incremental.json``.
Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from advspatial.models.patch.forward import PatchForward, UnsupportedModel
from advspatial.models.patch.graph import GraphPatchForward

RESULTS = Path(__file__).resolve().parent / "results" / "incremental.json"
SIZES = {"cifar10-resnet20": 32, "imagenet-efficientnet-lite0": 224}


def load(name: str, pretrained: bool) -> tuple[nn.Module, str]:
    from advspatial.models.zoo import load_zoo_model, zoo_entry

    if pretrained:
        try:
            return load_zoo_model(name, download=False).eval(), "pretrained"
        except Exception as exc:  # weights absent here: the cost does not depend on them
            print(f"{name}: no pretrained weights ({exc}); random weights")
    model = zoo_entry(name).builder()
    g = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=g) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=g) + 0.5)
    return model.eval(), "random"


def candidates(clean: torch.Tensor, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    _, channels, height, width = clean.shape
    image = torch.randint(0, len(clean), (n,), generator=g)
    top, left = torch.randint(0, height, (n,), generator=g), torch.randint(0, width, (n,), generator=g)
    colour = torch.rand(n, channels, 1, 1, generator=g)
    return [t.to(clean.device) for t in (image, top, left, colour)]


def full_forward(model: nn.Module, clean: torch.Tensor, image: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                 colour: torch.Tensor, batch: int) -> torch.Tensor:
    """The model on the patched images, in chunks of ``batch``, as OnePixel(incremental=False) runs."""
    n = len(image)
    x = clean[image].clone()
    x[torch.arange(n, device=x.device), :, top, left] = colour[:, :, 0, 0]
    return torch.cat([model(x[i:i + batch]) for i in range(0, n, batch)])


def timed(fn, repeats: int = 1) -> tuple[float, torch.Tensor]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--images", type=int, default=4, help="clean images cached")
    parser.add_argument("--candidates", type=int, default=None, help="per call (default 1024 at 32x32, 64 at 224)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-batch", type=int, default=256,
                        help="images per full forward pass (OnePixel's default on a CPU)")
    parser.add_argument("--pretrained", action="store_true", help="load the zoo's weights where available")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = json.loads(RESULTS.read_text()).get("runs", {}) if RESULTS.is_file() else {}
    for name in args.models:
        model, weights = load(name, args.pretrained)
        model = model.to(args.device)
        size = SIZES[name]
        clean = torch.rand(args.images, 3, size, size, device=args.device)
        n = args.candidates or (1024 if size <= 64 else 64)
        image, top, left, colour = candidates(clean, n)

        # each callable is bound to this model's tensors now (partial) and called only in this iteration
        full = partial(full_forward, model, clean, image, top, left, colour, args.full_batch)
        with torch.no_grad():
            build_s, graph = timed(partial(GraphPatchForward, model, clean))
            try:
                chain = PatchForward(model, clean)
            except UnsupportedModel:
                chain = None
            fns = {"full": full, "graph": partial(graph, image, top, left, colour)}
            if chain is not None:
                fns["chain"] = partial(chain, image, top, left, colour)
            for fn in fns.values():
                fn()  # warm-up
            times: dict[str, list[float]] = {k: [] for k in fns}
            outs = {}
            for _ in range(args.repeats):
                for key, fn in fns.items():
                    seconds, outs[key] = timed(fn)
                    times[key].append(seconds / n)
        error = {k: float((v - outs["full"]).abs().max()) for k, v in outs.items() if k != "full"}
        per = {k: float(np.median(v)) for k, v in times.items()}
        ratios = [f / g for f, g in zip(times["full"], times["graph"], strict=True)]
        inc_macs, full_macs = graph.conv_cost()
        print(f"{name} ({weights} weights, {size}x{size}, {n} candidates per call, {args.images} images, "
              f"threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}, device {args.device}):")
        for key, value in per.items():
            print(f"  {key:<6} {value * 1e6:10.1f} us/candidate" + (f"  max |logit diff| {error[key]:.1e}"
                                                                     if key in error else ""))
        print(f"  full / graph per candidate: {np.median(ratios):.2f}x (rounds {', '.join(f'{r:.2f}' for r in ratios)})"
              + (f"; full / chain: {per['full'] / per['chain']:.2f}x" if "chain" in per else ""))
        print(f"  conv multiply-adds per candidate, incremental / full: {inc_macs / 1e6:.1f}M / {full_macs / 1e6:.1f}M "
              f"= 1/{full_macs / inc_macs:.2f} (the bound the cone allows); set-up {build_s:.2f} s")
        runs[f"{name}-{args.device}-t{torch.get_num_threads()}"] = {
            "weights": weights, "image_size": size, "candidates_per_call": n, "clean_images": args.images,
            "us_per_candidate": {k: v * 1e6 for k, v in per.items()}, "full_over_graph_per_round": ratios,
            "full_over_graph": float(np.median(ratios)), "max_abs_logit_difference": error,
            "conv_macs_per_candidate": {"incremental": inc_macs, "full": full_macs}, "setup_s": build_s,
            "host": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "load_average_1min": os.getloadavg()[0], "device": args.device,
                     "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
                     else platform.processor()},
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
