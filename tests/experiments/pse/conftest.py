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


@pytest.fixture
def variant_run():
    """Factory: ``variant_run(name, rows=(), cam_test=None)`` -> a VariantRun of 4 units, these rows and test."""
    from advspatial.experiments.pse.stability import TypingAgreement
    from advspatial.experiments.pse.findings import Adaptive, MaskedAccuracy, RankingSet, VariantRun

    def make(name: str, rows=(), cam_test=None) -> VariantRun:
        curve = {key: torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
                 for key in ("clean_acc", "robust_acc", "random_clean_acc", "random_robust_acc")}
        masked = MaskedAccuracy(1, 1.0, 0.5, 4)
        return VariantRun(name, list(rows), cam_test, torch.rand(4), torch.arange(4), {"ks": torch.tensor([0, 1, 4]),
                                                                                   **curve},
                          RankingSet("train", 8, 2, 0), Adaptive(masked, masked, 0.5, "pgd"),
                          {"leave-one-out": TypingAgreement(3, 1.0, 1.0)}, {"ids": torch.zeros(0)}, None)

    return make
