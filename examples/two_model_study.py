"""Two models on the same images: does the attack act where each model looks, and do the models differ?

``advspatial.study`` runs the RoI/RoA measurement (the ``maps`` experiment) on every model over the same images
with the same seeds, each in its own resumable run, then pools the models whose RoI passed its faithfulness gate
(random effects), contrasts them pairwise and asks whether their attacks act in the same place.

    python examples/two_model_study.py                                  # smallcnn vs lenet5 on Fashion-MNIST
    python examples/two_model_study.py --models net_a.py:build,net_b.py:build --dataset imagefolder:path/to/images
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import advspatial
from advspatial.errors import AdvspatialError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smallcnn,lenet5", help="two or more model specs, comma-separated")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--n", type=int, default=200, help="test images, the same for every model")
    parser.add_argument("--out", default="runs/study-two-models")
    parser.add_argument("--quick", action="store_true", help="a smoke test: checks the pipeline, decides nothing")
    args = parser.parse_args()

    result = advspatial.study(args.models.split(","), dataset=args.dataset, n=args.n, attacks=["pgd"],
                              out=args.out, quick=args.quick)
    print(result.summary)                          # per endpoint: the pooled effect, or why the models were not pooled
    for claim in result.findings.claims:           # the pooled claims and contrasts, each with its verdict
        print(f"{claim.subject}: {claim.verdict}")
    print(f"report: {result.report}")


if __name__ == "__main__":
    try:
        main()
    except AdvspatialError as exc:  # bad input (a missing folder, an unknown model): one line, exit 2
        print(f"{Path(__file__).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
