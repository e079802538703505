"""Your own model on your own image folder, end to end.

The folder holds ``train/`` and ``test/``, each with one sub-folder of images per class (``train/cat/001.png``,
...). The script trains a small network on ``train/`` (a stand-in: put your own trained model in
``load_your_model``), then runs the RoI/RoA measurement on ``test/``: the faithfulness gate of the model's Region of
Importance, the attacks, their maps and regions, every statistic against its null, the verdicts and report.html.

    python examples/own_model_and_folder.py path/to/images
    python examples/own_model_and_folder.py path/to/images --experiment spatial   # with the defence (longer)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

import advspatial
from advspatial.data import load_dataset
from advspatial.errors import AdvspatialError
from advspatial.models import Normalized


class SmallNet(nn.Module):
    """A small convolutional network for 3x32x32 images; replace it with yours."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_your_model(folder: str, epochs: int) -> nn.Module:
    """Your trained model, taking images in [0,1]. Here: SmallNet trained for a few epochs on ``folder/train``.

    advspatial feeds images in [0,1]: a network trained on normalized inputs goes in a ``Normalized`` wrapper.
    """
    train = load_dataset(f"imagefolder:{folder}", "train")  # images resized to 32x32
    torch.manual_seed(0)
    model = Normalized(SmallNet(train.num_classes), mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for images, labels, _ in train.batches(64):
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="image folder with train/ and test/, one sub-folder per class")
    parser.add_argument("--experiment", default="maps", help="maps (RoI vs RoA) or spatial (and the defence)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n", type=int, default=200, help="test images")
    parser.add_argument("--out", default="runs/own-model")
    parser.add_argument("--quick", action="store_true", help="a smoke test: checks the pipeline, decides nothing")
    args = parser.parse_args()

    model = load_your_model(args.folder, args.epochs)
    result = advspatial.run(args.experiment, model=model, data=f"imagefolder:{args.folder}", n=args.n,
                            out=args.out, quick=args.quick)
    print(result.summary)
    print(f"report: {result.report}")


if __name__ == "__main__":
    try:
        main()
    except AdvspatialError as exc:  # bad input (a missing folder, an unknown model): one line, exit 2
        print(f"{Path(__file__).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
