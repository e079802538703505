"""Shared fixtures: tiny models (untrained and briefly trained) and real-data guards.

Unit tests use tiny models and few images so that the suite stays fast on 2 cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

#: runs in tests keep and reuse no model-only stages (advspatial.model_work), so that no test's counts depend on
#: which tests ran before it; the tests of that reuse give a folder of their own
os.environ["ADVSPATIAL_MODEL_WORK"] = "off"

FASHION_DIR_CANDIDATES = [
    os.environ.get("ADVSPATIAL_DATA", "") + "/fashion-mnist",
    str(Path(os.environ.get("ADVSPATIAL_CACHE", Path.home() / ".cache/advspatial")) / "data/fashion-mnist"),
    "/usr/share/datasets/fashion-mnist",
]


def fashion_mnist_available() -> bool:
    return any(Path(d, "t10k-images-idx3-ubyte.gz").is_file() for d in FASHION_DIR_CANDIDATES)


needs_fashion_mnist = pytest.mark.skipif(
    not fashion_mnist_available() and not os.environ.get("CI"),
    reason="Fashion-MNIST not installed (make data)",
)


class TinyCNN(nn.Module):
    """conv8-ReLU-pool-conv16-ReLU-pool-fc: small enough for unit tests, real enough for attacks."""

    # The raw conv output, not the ReLU after it: on this BN-free toy net Grad-CAM after the
    # ReLU is all-zero on ~44% of images. (The shipped models follow METHODS §1: smallcnn's
    # block3 is after BN+ReLU, and its Grad-CAM is never all-zero on the first 200 test images.)
    cam_layer = "features.3"

    def __init__(self, in_channels: int = 1, num_classes: int = 10, size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(16 * (size // 4) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


@pytest.fixture
def tiny_cnn():
    """Factory: ``tiny_cnn(in_channels=1, num_classes=10, size=28, seed=0)`` -> eval-mode TinyCNN."""

    def make(in_channels: int = 1, num_classes: int = 10, size: int = 28, seed: int = 0) -> TinyCNN:
        torch.manual_seed(seed)
        return TinyCNN(in_channels, num_classes, size).eval()

    return make


@pytest.fixture(scope="session")
def fmnist_test_subset():
    """The first 200 Fashion-MNIST test images and labels (skips when the data is missing)."""
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST not installed (make data)")
    from advspatial.data import load_dataset

    ds = load_dataset("fashion-mnist", "test").head(200)
    return ds.images(), ds.labels


@pytest.fixture(scope="session")
def trained_tiny_cnn():
    """A TinyCNN trained for ~2 s on 4000 Fashion-MNIST training images (about 75-80% test accuracy)."""
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST not installed (make data)")
    from advspatial.data import load_dataset

    train = load_dataset("fashion-mnist", "train").head(4000)
    x, y = train.images(), train.labels
    from helpers import train_briefly

    torch.manual_seed(0)
    return train_briefly(TinyCNN(), x, y, epochs=3, batch=100, lr=3e-3, shuffle_seed=1)


def pytest_configure(config) -> None:  # type: ignore[no-untyped-def]
    """One intra-op torch thread for the whole test run: the tests use tiny models and small ops,
    and with pytest-xdist (2 workers on 2 cores) more threads only oversubscribe the machine;
    OpenMP waits then made small tests up to 25x slower."""
    torch.set_num_threads(1)


#: the architecture of :func:`cnn_weights`: the product's default CNN (BatchNorm folded, channels-last, each ReLU
#: after its pooling), so that the end-to-end tests run the paths a default run takes; on one CPU thread it takes
#: 0.32-0.42 of the time per image of LeNet-5 (conv32-conv64 at 5x5)
CNN_ARCH = "smallcnn"


@pytest.fixture(scope="session")
def cnn_weights(tmp_path_factory):
    """State-dict path of the default CNN (:data:`CNN_ARCH`) trained for ~150 batches on 3000 Fashion-MNIST images
    (~78% accuracy): the model of the end-to-end tests, passed as ``--model PATH --arch smallcnn``."""
    from helpers import saved_trained_model

    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST not installed (make data)")
    return saved_trained_model(tmp_path_factory.mktemp("model"), CNN_ARCH, 3000, epochs=2, batch=40, lr=2e-3)
