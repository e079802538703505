"""The contract every *registered* map keeps, driven by the registries (issue 20, item 6): (N,H,W) at input
resolution, finite and >= 0, a batch equal to each image alone, the same result twice, the model restored."""

from __future__ import annotations

import pytest
import torch
from helpers import GapNet

from advspatial.maps import attack_map, importance_map, list_attack_maps, list_importance_methods


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 3, 14, 14, generator=g)
    x_adv = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x, x_adv, torch.tensor([0, 1, 2])


@pytest.mark.parametrize("name", list_importance_methods())
def test_importance_maps(name):
    """Every method, noisy ones included: an image's map is keyed by its global sample id, never by its batch."""
    model = GapNet().train()
    x, _, y = inputs()
    ids = torch.tensor([7, 3, 12])
    maps = importance_map(name, model, x, target="true", y=y, sample_ids=ids)
    assert maps.shape == (3, 14, 14) and bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0
    alone = torch.cat([importance_map(name, model, x[i:i + 1], target="true", y=y[i:i + 1], sample_ids=ids[i:i + 1])
                       for i in range(3)])
    assert torch.allclose(maps, alone, atol=1e-5, rtol=1e-4), "a batch equals its images alone"
    assert torch.allclose(importance_map(name, model, x, target="true", y=y, sample_ids=ids), maps, atol=1e-6)
    assert model.training and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", list_attack_maps())
def test_attack_maps(name):
    model = GapNet().eval()
    x, x_adv, y = inputs()
    result = attack_map(name, model, x, x_adv, y)
    maps = result.map
    assert maps.shape == (3, 14, 14) and bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0
    alone = torch.cat([attack_map(name, model, x[i:i + 1], x_adv[i:i + 1], y[i:i + 1]).map for i in range(3)])
    assert torch.allclose(maps, alone, atol=1e-5, rtol=1e-4), "a batch equals its images alone"
    assert not model.training and all(p.requires_grad for p in model.parameters())
