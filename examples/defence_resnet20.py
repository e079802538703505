"""The neutralization defence on a pretrained CIFAR-10 ResNet-20, attacked by an attack that knows it.

The defence blocks out what is vulnerable but unimportant: per input, the pixels a gradient map marks as
vulnerable (the Region of Attack, RoA) minus those the model looks at (the Region of Importance, RoI), filled with
zeros before the model sees the image. A defence number means something only beside the number of an adaptive
attack (through the defence's gradients), the undefended model's, and a control that blocks out as many random
pixels outside the RoI. This script computes those four accuracies on a few images: a first look, not a verdict.
The verdicts (paired statistics, convergence curves, trivial baselines at a matched clean cost) come from
``advspatial run spatial --model cifar10-resnet20 ...`` (docs/methods.md, "How a defence number earns a verdict").

    python examples/defence_resnet20.py --images path/to/cifar10-test-images   # class sub-folders of images
    python examples/defence_resnet20.py --images ../shared/data/cifar10-test-jpeg \
        --weights ../shared/data/cifar10-resnet/resnet20-12fca82f.th
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from advspatial.data import load_dataset
from advspatial.defence import AdaptiveBudget, NeutralizedModel, attack_defence, attack_undefended
from advspatial.errors import AdvspatialError
from advspatial.maps import gradcam, gradient
from advspatial.model_cache import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="CIFAR-10 test images: a folder with one sub-folder per class")
    parser.add_argument("--weights", default=None, help="the ResNet-20 weights file (default: found or downloaded)")
    parser.add_argument("--n", type=int, default=50, help="test images")
    parser.add_argument("--steps", type=int, default=100, help="APGD iterations per restart (100: full strength)")
    args = parser.parse_args()

    dataset = f"imagefolder:{args.images}"
    data = load_dataset(dataset, "test").head(args.n)
    images, labels, ids = data.images(), data.labels, data.ids
    model = resolve_model(dataset, "cifar10-resnet20", weights=args.weights)   # normalization inside, eval mode

    def defended(mode: str) -> NeutralizedModel:
        """The defence (``defend``) or its control (``random``: as many pixels outside the RoI, drawn anew)."""
        return NeutralizedModel(model, importance_fn=lambda x: gradcam(model, x),
                                vulnerability_fn=lambda x: gradient(model, x).map, fraction=0.2, fill="zero",
                                mode=mode, resample=mode == "random")

    eps = 8 / 255                                                           # the CIFAR-10 L-inf budget
    budget = AdaptiveBudget(steps=args.steps, restarts=1, queries=10 * args.steps, eot_iter=4, draws=4)
    with torch.no_grad():
        clean = (defended("defend")(images).argmax(1) == labels).float().mean().item()
    # per image: correct after the attack (the share of fresh draws that are correct, for the random control)
    robust = {
        "undefended, white-box": attack_undefended(model, images, labels, eps, budget, sample_ids=ids,
                                                   seed=0).correct["white-box"],
        "defence, adaptive": attack_defence(defended("defend"), images, labels, eps, budget, sample_ids=ids,
                                            seed=0).correct["worst"],
        "random control, adaptive (EOT)": attack_defence(defended("random"), images, labels, eps, budget,
                                                         sample_ids=ids, seed=0).correct["worst"],
    }
    print(f"{len(labels)} images, L-inf {eps:.4f}; clean accuracy with the defence {clean:.2f}")
    for name, correct in robust.items():
        print(f"  robust accuracy, {name}: {correct.float().mean().item():.2f}")


if __name__ == "__main__":
    try:
        main()
    except AdvspatialError as exc:  # bad input (a missing folder, an unknown model): one line, exit 2
        print(f"{Path(__file__).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
