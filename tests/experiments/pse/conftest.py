"""Fixtures of the ``pse`` experiment's tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def image_pair():
    """Factory: ``image_pair(n=6, seed=0, size=28)`` -> (x, x_adv, y), random gray images and a noisy copy in [0,1]."""

    def make(n: int = 6, seed: int = 0, size: int = 28) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(n, 1, size, size, generator=g)
        x_adv = (x + 0.1 * torch.randn(n, 1, size, size, generator=g)).clamp(0, 1)
        y = torch.randint(0, 10, (n,), generator=g)
        return x, x_adv, y

    return make
