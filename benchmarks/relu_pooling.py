"""The built-in networks with each ReLU run after the 2x2 max pooling that follows it, against before it.

Why: a ReLU and a 2x2 max pooling commute exactly, values and input gradient
(:func:`advspatial.models.pooling.commutes`), so the networks whose ReLUs are followed by one
(``smallcnn``, the default run's; ``lenet5``; ``gapnet``) run the ReLU on a quarter of the values. This script times
a forward pass and a forward and input-gradient pass of each at the default run's batch size (150), pooling first
and with the order turned back, in turn (so that the machine's drift falls on both), and reports the median ratio
pooling first / ReLU first and the logits' largest difference (zero: the same numbers). The BatchNorms are folded
in both. Ratios in one run; not a test. Example::

    python benchmarks/relu_pooling.py --threads 1 --rounds 15 --output relu_pooling.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import torch

from advspatial.models import architectures, build_model



def _sibling(name: str) -> ModuleType:
    """A script beside this one, imported by its path (``benchmarks/`` is no package, and ``sys.path`` stays as it
    is whoever imports this script)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # where its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_folding = _sibling("batchnorm_folding")  # its clock and preparation
compare, prepared = _folding.compare, _folding.prepared

#: the networks with a ReLU before a 2x2 max pooling, at the default run's batch
NETWORKS = ("smallcnn", "lenet5", "gapnet")
SHAPE = (150, 1, 28, 28)


def relu_first() -> AbstractContextManager[Any]:
    """Inside the block every ReLU runs before its pooling, as the modules are listed."""
    return mock.patch.object(architectures, "commutes", lambda *_a: False)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds, each pooling first then ReLU first")
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS), help="which networks to time")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [compare(name, prepared(build_model(name)), SHAPE, args.rounds, 5, switched_off=relu_first)
               for name in args.networks]
    for r in results:
        print(f"{r['network']} (batch {r['batch']}): pooling first / ReLU first, forward "
              f"{r['forward']['median_ratio']} [{r['forward']['min']}, {r['forward']['max']}], forward + input "
              f"gradient {r['forward_and_gradient']['median_ratio']} [{r['forward_and_gradient']['min']}, "
              f"{r['forward_and_gradient']['max']}]; logits differ by at most {r['largest_logit_difference']:.1e}")
    if args.output:
        args.output.write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "torch": torch.__version__,
                                           "load_average": os.getloadavg(), "results": results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
