"""Square on images no window fools, one iteration a call against several (the device's speculation), timed.

Why: images the gradient attacks leave standing make Square run all its queries, one dependent round each, and on a
device a round costs a call's fixed price whatever its size. On a device Square proposes up to
``square.SPECULATION_DEPTH`` iterations a call while at most ``square.SPECULATED_ROWS`` images search
(:meth:`advspatial.attacks.square.Square._speculate`); setting ``SPECULATED_ROWS`` to 0 turns that off. This
script runs the same search both ways on a CIFAR-10 ResNet-20 (random weights: only its cost matters) whose class 0
wins by 1,000, so that no image is ever fooled and every image takes all its queries, and reports per setting the
wall seconds, rounds, host reads and whether the examples and query counts agree. On a CPU the device's path is
forced (``host_syncs.DEVICE_PATH_ON_CPU``): the counts are a device's, the times this CPU's. Not a test. Example::

    python benchmarks/square_speculation.py --device cuda --queries 5000 --output results/square_speculation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from advspatial import host_syncs
from advspatial.attacks import square
from advspatial.attacks.square import Square
from advspatial.models.cifar_resnet import cifar_resnet
from advspatial.passes import PassLedger

#: images searching at once: one, a few, and as many as speculation takes
ROWS = (1, 4, 16)


class Unfoolable(nn.Module):
    """``model`` with 1,000 added to class 0's logit: no image of label 0 is ever misclassified."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return logits + 1000.0 * (torch.arange(logits.shape[1], device=logits.device) == 0)


def timed_search(model: nn.Module, x: torch.Tensor, queries: int, speculated_rows: int) -> dict:
    """One Square L-inf search on ``x`` (label 0) with ``SPECULATED_ROWS = speculated_rows``: wall seconds, the
    ledger's rounds and host reads, and the result."""
    with mock.patch.object(square, "SPECULATED_ROWS", speculated_rows):
        ledger = PassLedger()
        ledger.watch(model)
        y = torch.zeros(len(x), dtype=torch.long, device=x.device)
        _synchronize(x.device)
        start = time.perf_counter()
        with ledger.stage("square"):
            result = Square(model, eps=8 / 255, n_queries=queries).run(x, y, sample_ids=torch.arange(len(x)))
        _synchronize(x.device)
        seconds = time.perf_counter() - start
    count = ledger.by_stage["square"]
    return {"seconds": round(seconds, 3), "rounds": count.rounds, "calls": count.calls, "reads": count.syncs,
            "image_passes": count.forward, "result": result}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(device: torch.device, queries: int, rows: tuple[int, ...] = ROWS) -> list[dict]:
    """Per number of images: the search one iteration a call and with speculation, and whether they agree."""
    model = Unfoolable(cifar_resnet(20)).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    timed_search(model, torch.rand(1, 3, 32, 32, generator=gen).to(device), 20, 0)  # warm-up: kernels, allocator
    records = []
    for n in rows:
        x = torch.rand(n, 3, 32, 32, generator=gen).to(device)
        one, several = (timed_search(model, x, queries, speculated) for speculated in (0, square.SPECULATED_ROWS))
        a, b = one.pop("result"), several.pop("result")
        records.append({
            "images": n, "queries": queries, "one_a_call": one, "speculated": several,
            "same_examples": bool(torch.allclose(a.x_adv, b.x_adv, atol=1e-6)),
            "same_queries": bool(torch.equal(a.queries, b.queries)),
            "speed_up": round(one["seconds"] / max(several["seconds"], 1e-9), 2),
        })
        print(json.dumps(records[-1]), flush=True)
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS))
    parser.add_argument("--output", type=Path, default=None, help="write the records as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        host_syncs.DEVICE_PATH_ON_CPU = True  # a device's path, priced on this CPU
    records = compare(device, args.queries, tuple(args.rows))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        machine = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        args.output.write_text(json.dumps({"device": machine, "torch": torch.__version__, "records": records},
                                          indent=1) + "\n")


if __name__ == "__main__":
    main()
