"""The contract every *registered* map keeps, driven by the registries: (N,H,W) at input resolution, finite and
>= 0, a batch equal to each image alone, the same result twice, the model restored; on a CNN and on a vision
transformer."""

from __future__ import annotations

import pytest
import torch
from helpers import GapNet
from vit_helpers import tiny_vit

from advspatial.errors import ModelError
from advspatial.maps import attack_map, importance_map, list_attack_maps, list_importance_methods


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 3, 14, 14, generator=g)
    x_adv = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x, x_adv, torch.tensor([0, 1, 2])


#: the methods that explain only a vision transformer, and those that read a CNN's last feature map: each refuses
#: the other kind of model in one line; every other method explains both
TRANSFORMER_ONLY = {"token-gradcam", "token-hirescam", "rollout", "chefer"}
CNN_ONLY = {"gradcam++", "cam"}


def vit_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1, 2])


@pytest.mark.parametrize("kind", ["cnn", "vit"])
@pytest.mark.parametrize("name", list_importance_methods())
def test_importance_maps(name, kind):
    """Every method, noisy ones included: an image's map is keyed by its global sample id, never by its batch; on
    a CNN and on a vision transformer, or a one-line refusal of the kind it does not explain."""
    model = (GapNet() if kind == "cnn" else tiny_vit(classes=4)).train()
    x, y = inputs()[::2] if kind == "cnn" else vit_inputs()
    ids = torch.tensor([7, 3, 12])
    if name in (TRANSFORMER_ONLY if kind == "cnn" else CNN_ONLY):
        with pytest.raises(ModelError) as refused:
            importance_map(name, model, x, target="true", y=y, sample_ids=ids)
        assert "\n" not in str(refused.value) and "transformer" in str(refused.value)
        return
    side = x.shape[-1]
    maps = importance_map(name, model, x, target="true", y=y, sample_ids=ids)
    assert maps.shape == (3, side, side) and bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0
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
