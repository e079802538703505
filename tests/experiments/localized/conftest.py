"""Fixtures of the ``localized`` experiment's tests."""

from __future__ import annotations

import pytest
import torch

from advspatial.data import ImageDataset
from advspatial.masks import BACKGROUND_TAU


@pytest.fixture
def grey_dataset():
    """Factory: ``grey_dataset(n=10, seed=0)`` -> MNIST-like images (bright blob on black) with their x > tau
    foreground masks."""

    def make(n: int = 10, seed: int = 0) -> ImageDataset:
        g = torch.Generator().manual_seed(seed)
        pixels = torch.zeros(n, 1, 28, 28)
        for i in range(n):
            r, c = torch.randint(3, 12, (2,), generator=g).tolist()
            pixels[i, 0, r : r + 12, c : c + 10] = 0.3 + 0.7 * torch.rand(12, 10, generator=g)
        return ImageDataset("grey", pixels, torch.arange(n) % 10, tuple(str(k) for k in range(10)),
                            masks=pixels[:, 0] > BACKGROUND_TAU)

    return make
