"""Fixtures for experiment tests: a small registered-architecture model trained in seconds."""

from __future__ import annotations

import pytest
import torch

from conftest import fashion_mnist_available
from helpers import train_briefly


@pytest.fixture(scope="session")
def lenet_weights(tmp_path_factory):
    """State-dict path of a LeNet-5 trained for ~150 batches on 3000 Fashion-MNIST images (~80% accuracy)."""
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST not installed (make data)")
    from advspatial.data import load_dataset
    from advspatial.models import build_model

    train = load_dataset("fashion-mnist", "train").head(3000)
    x, y = train.images(), train.labels
    torch.manual_seed(0)
    model = train_briefly(build_model("lenet5"), x, y, epochs=2, batch=40, lr=2e-3)
    path = tmp_path_factory.mktemp("model") / "lenet5.pt"
    torch.save(model.eval().state_dict(), path)
    return path
