"""Where do adversarial examples made with torchattacks act? ``advspatial.analyze`` measures examples made elsewhere.

Any library (torchattacks, the Adversarial Robustness Toolbox, AutoAttack, your own code) gives a tensor of
adversarial images; ``analyze`` runs on them the RoI/RoA measurement of the spatial experiment without running an
attack of its own: the faithfulness gate, the maps, regions, nulls, verdicts and report.html.

    pip install torchattacks                      # not a dependency of advspatial
    python examples/analyze_torchattacks.py       # smallcnn on Fashion-MNIST (trained on first use, cached)
    python examples/analyze_torchattacks.py --model path/to/net.py:build
"""

from __future__ import annotations

import argparse

import torchattacks

import advspatial
from advspatial.data import load_dataset
from advspatial.model_cache import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smallcnn", help="model spec (advspatial list models, or FILE.py:factory)")
    parser.add_argument("--dataset", default="fashion-mnist", help="dataset spec, e.g. imagefolder:path/to/images")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf budget (0.1: a Fashion-MNIST budget)")
    parser.add_argument("--n", type=int, default=200, help="test images")
    parser.add_argument("--out", default="runs/torchattacks-pgd")
    parser.add_argument("--quick", action="store_true", help="a smoke test: checks the pipeline, decides nothing")
    args = parser.parse_args()

    data = load_dataset(args.dataset, "test").head(args.n)
    images, labels = data.images(), data.labels
    model = resolve_model(args.dataset, args.model)              # images in [0,1], eval mode

    # torchattacks' PGD: its own code, its own defaults (alpha = 2/255 per step here, 20 steps)
    attack = torchattacks.PGD(model, eps=args.eps, alpha=2 / 255, steps=20, random_start=True)
    adversarial = attack(images, labels)

    result = advspatial.analyze(model, clean=images, adv=adversarial, labels=labels, source="torchattacks PGD",
                                eps_linf=args.eps, out=args.out, quick=args.quick)
    print(result.summary)
    print(f"report: {result.report}")


if __name__ == "__main__":
    main()
