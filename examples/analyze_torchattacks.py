"""Where do adversarial examples made with torchattacks act? ``advspatial.analyze`` measures examples made elsewhere.

Any library (torchattacks, the Adversarial Robustness Toolbox, AutoAttack, your own code) gives a tensor of
adversarial images; ``analyze`` runs on them the RoI/RoA measurement of the spatial experiment without running an
attack of its own: the faithfulness gate, the maps, regions, nulls, verdicts and report.html.

The test images are drawn class by class (the same number from each class, as ``advspatial run --subset
stratified`` does): the first images of a class-folder dataset are all of one class, and the same-class null and
the class layout need several classes. A warning is printed when one class still holds most of the images.

    pip install torchattacks                      # not a dependency of advspatial
    python examples/analyze_torchattacks.py       # smallcnn on Fashion-MNIST (trained on first use, cached)
    python examples/analyze_torchattacks.py --model path/to/net.py:build
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import advspatial
from advspatial.data import load_dataset
from advspatial.data.subset import select
from advspatial.errors import AdvspatialError
from advspatial.model_cache import resolve_model


def warn_if_one_class_dominates(labels: torch.Tensor, share: float = 0.5) -> None:
    """A line on stderr when one class holds more than ``share`` of the images (the dataset has few classes, or
    few images of the others): the same-class null then compares images of that class only."""
    counts = torch.bincount(labels)
    if len(labels) and counts.max().item() > share * len(labels):
        print(f"warning: class {counts.argmax().item()} holds {counts.max().item()} of the {len(labels)} images; "
              "the same-class null and the class layout say little about the other classes", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smallcnn", help="model spec (advspatial list models, or FILE.py:factory)")
    parser.add_argument("--dataset", default="fashion-mnist", help="dataset spec, e.g. imagefolder:path/to/images")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf budget (0.1: a Fashion-MNIST budget)")
    parser.add_argument("--n", type=int, default=200, help="test images, drawn class by class")
    parser.add_argument("--out", default="runs/torchattacks-pgd")
    parser.add_argument("--quick", action="store_true", help="a smoke test: checks the pipeline, decides nothing")
    args = parser.parse_args()
    try:
        import torchattacks
    except ImportError:
        raise AdvspatialError("this example needs torchattacks: pip install torchattacks") from None

    data = select(load_dataset(args.dataset, "test"), args.n, "stratified", seed=0)   # the same count per class
    images, labels = data.images(), data.labels
    warn_if_one_class_dominates(labels)
    model = resolve_model(args.dataset, args.model)              # images in [0,1], eval mode

    # torchattacks' PGD: its own code, its own defaults (alpha = 2/255 per step here, 20 steps)
    attack = torchattacks.PGD(model, eps=args.eps, alpha=2 / 255, steps=20, random_start=True)
    adversarial = attack(images, labels)

    result = advspatial.analyze(model, clean=images, adv=adversarial, labels=labels, source="torchattacks PGD",
                                eps_linf=args.eps, out=args.out, quick=args.quick)
    print(result.summary)
    print(f"report: {result.report}")


if __name__ == "__main__":
    try:
        main()
    except AdvspatialError as exc:  # bad input (a missing folder, an unknown model): one line, exit 2
        print(f"{Path(__file__).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
