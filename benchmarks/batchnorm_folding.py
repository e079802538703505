"""The built-in networks with each eval-mode BatchNorm folded into its convolution, against the two modules.

Why: in eval mode a BatchNorm is a per-channel affine map; folded into the convolution before it
(:mod:`advspatial.models.folding`) it costs no pass of its own, forward or backward. This script times a forward
pass and a forward and input-gradient pass (what an attack's step makes) of the default Fashion-MNIST
``smallcnn``, the CIFAR-10 ResNet-20 and EfficientNet-Lite0 (where its package is installed) at their run's batch
size, folded and with the fold turned off, in turn (so that the machine's drift falls on both), and reports the
median ratio folded / unfolded and the largest difference of the logits. Parameters frozen and in the memory layout
a run gives them. Random weights and running statistics: the cost does not depend on their values. Ratios in one
run; not a test. Example::

    python benchmarks/batchnorm_folding.py --threads 1 --rounds 15 --output batchnorm_folding.json
    python benchmarks/batchnorm_folding.py --device cuda --rounds 9 --calls 4   # on a GPU (clocks synchronised)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

from advspatial.errors import ModelError
from advspatial.models import build_model, folding
from advspatial.models.cifar_resnet import cifar_resnet



def lite0() -> nn.Module:
    """EfficientNet-Lite0 (random weights) as the zoo builds it; needs the ``efficientnet_lite_pytorch`` package."""
    from advspatial.models.zoo import _LiteBuilder

    return _LiteBuilder(0)()


#: (name, network, input shape of one batch as a run makes it, passes a timed round makes)
NETWORKS = (("smallcnn", lambda: build_model("smallcnn"), (150, 1, 28, 28), 5),
            ("cifar10-resnet20", lambda: cifar_resnet(20), (100, 3, 32, 32), 5),
            ("imagenet-efficientnet-lite0", lite0, (16, 3, 224, 224), 1))


def prepared(network: nn.Module, seed: int = 0) -> nn.Module:
    """``network`` in eval mode, channels-last, frozen, with running statistics away from (0, 1)."""
    torch.manual_seed(seed)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    network = network.eval().to(memory_format=getattr(network, "memory_format", torch.contiguous_format))
    for p in network.parameters():
        p.requires_grad_(False)
    return network


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a clock read before it would miss it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(network: nn.Module, x: torch.Tensor, gradient: bool, calls: int) -> float:
    """Seconds of ``calls`` forward passes (with the input's gradient when ``gradient``), the device synchronised."""
    synchronize(x.device)
    start = time.perf_counter()
    for _ in range(calls):
        xi = x.clone().requires_grad_(gradient)
        out = network(xi)
        if gradient:
            torch.autograd.grad(out.sum(), xi)
    synchronize(x.device)
    return time.perf_counter() - start


def unfolded() -> AbstractContextManager[Any]:
    """Inside the block every BatchNorm runs as a module of its own."""
    return mock.patch.object(folding, "foldable", lambda *_a: False)


def compare(name: str, network: nn.Module, shape: tuple[int, ...], rounds: int, calls: int,
            device: torch.device | None = None,
            switched_off: Callable[[], AbstractContextManager[Any]] = unfolded) -> dict[str, Any]:
    """Median ratios of a forward and of a forward with the input gradient on ``device``, as it runs against as it
    runs inside ``switched_off()`` (default: folded / unfolded), and the logits' largest difference."""
    device = device or torch.device("cpu")
    layout = getattr(network, "memory_format", torch.contiguous_format)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1)).to(device).contiguous(memory_format=layout)
    network = network.to(device)
    with torch.no_grad():
        folded_logits = network(x)
        with switched_off():
            unfolded_logits = network(x)
    result: dict[str, Any] = {"network": name, "batch": shape[0], "device": str(device),
                              "largest_logit_difference": float((folded_logits - unfolded_logits).abs().max()),
                              "logit_scale": float(unfolded_logits.abs().max())}
    for gradient in (False, True):
        ratios = []
        seconds(network, x, gradient, 1)  # warm
        for _ in range(rounds):
            folded = seconds(network, x, gradient, calls)
            with switched_off():
                unfolded = seconds(network, x, gradient, calls)
            ratios.append(folded / unfolded)
        result["forward_and_gradient" if gradient else "forward"] = {
            "median_ratio": round(statistics.median(ratios), 3), "min": round(min(ratios), 3),
            "max": round(max(ratios), 3)}
    return result


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="e.g. cuda")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds, each folded then unfolded")
    parser.add_argument("--calls", type=float, default=1.0, help="a multiple of the passes a timed round makes")
    parser.add_argument("--networks", nargs="*", default=[n[0] for n in NETWORKS], help="which networks to time")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for name, build, shape, calls in NETWORKS:
        if name not in args.networks:
            continue
        try:
            network = build()
        except (ImportError, ModelError) as exc:  # the Lite package absent
            print(f"{name}: skipped ({exc})")
            continue
        results.append(compare(name, prepared(network), shape, args.rounds, max(1, round(calls * args.calls)),
                               torch.device(args.device)))
    for r in results:
        print(f"{r['network']} (batch {r['batch']}, {r['device']}): folded / unfolded forward "
              f"{r['forward']['median_ratio']} [{r['forward']['min']}, {r['forward']['max']}], forward + input "
              f"gradient "
              f"{r['forward_and_gradient']['median_ratio']} [{r['forward_and_gradient']['min']}, "
              f"{r['forward_and_gradient']['max']}]; logits differ by at most {r['largest_logit_difference']:.1e} "
              f"(scale {r['logit_scale']:.1f})")
    if args.output:
        args.output.write_text(json.dumps({"device": args.device, "threads": args.threads, "rounds": args.rounds,
                                           "calls": args.calls,
                                           "torch": torch.__version__, "load_average": os.getloadavg(),
                                           "results": results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
