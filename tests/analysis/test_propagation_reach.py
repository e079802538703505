"""Propagation per se: random one-pixel changes (random position, random corner colour) and their
per-layer peak PMmax, checked by hand on a tiny network, for batch independence and for their draws."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial.analysis.propagation import random_corner_pixels, random_pixel_reach
from advspatial.errors import ConfigError, ShapeError


def _tiny() -> nn.Module:
    """conv 1x1 (weight 2), ReLU, a linear read-out of the 2x2 image: every layer's change is known by hand."""
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight.fill_(2.0)
        model[3].weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
        model[3].bias.fill_(0.25)
    return model.eval()


def test_per_layer_ratio_equals_a_hand_computation():
    x = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]], [[[0.5, 0.1], [0.3, 0.9]]], [[[0.7, 0.7], [0.2, 0.4]]]])
    ids = torch.tensor([11, 12, 13])
    draws = 5
    layers, peak = random_pixel_reach(_tiny(), x, ["0", "1", "3"], draws=draws, seed=7, sample_ids=ids)
    assert layers == ["0", "1", "3"] and peak.shape == (3, 3)
    pixels, colours = random_corner_pixels(x, draws, seed=7, sample_ids=ids)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    for i in range(3):
        flat = x[i, 0].flatten()
        conv, linear = [], []
        for d in range(draws):
            j = int(pixels[i, d, 0] * 2 + pixels[i, d, 1])
            delta = abs(float(colours[i, d, 0]) - float(flat[j]))
            conv.append(2 * delta / (2 * float(flat.max())))  # |Δ(2x)| / max(2x); the ReLU passes x >= 0 unchanged
            # the read-out sees the ReLU's 2x; its single output is its own (positive) maximum
            linear.append(2 * abs(float(w[j])) * delta / (2 * float(w @ flat) + 0.25))
        want = [sum(conv) / draws, sum(conv) / draws, sum(linear) / draws]
        assert peak[i].tolist() == pytest.approx(want, rel=1e-5)


def test_draws_are_corners_keyed_by_sample_id_and_seed():
    x = torch.rand(6, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(40, 46)
    pixels, colours = random_corner_pixels(x, 4, seed=1, sample_ids=ids)
    assert pixels.shape == (6, 4, 2) and colours.shape == (6, 4, 3)
    assert ((colours == 0) | (colours == 1)).all()
    assert (pixels[..., 0] < 5).all() and (pixels[..., 1] < 7).all() and (pixels >= 0).all()
    part_p, part_c = random_corner_pixels(x[3:], 4, seed=1, sample_ids=ids[3:])
    assert torch.equal(part_p, pixels[3:]) and torch.equal(part_c, colours[3:])
    other_p, other_c = random_corner_pixels(x, 4, seed=2, sample_ids=ids)
    assert not (torch.equal(other_p, pixels) and torch.equal(other_c, colours))


def test_reach_does_not_depend_on_the_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1)).eval()
    x = torch.rand(5, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    ids = torch.arange(100, 105)
    _, whole = random_pixel_reach(model, x, draws=3, seed=2, sample_ids=ids, batch_size=5)
    _, part = random_pixel_reach(model, x[2:], draws=3, seed=2, sample_ids=ids[2:], batch_size=2)
    assert torch.allclose(part, whole[2:], atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="draws"):
        random_corner_pixels(torch.rand(1, 1, 2, 2), 0)
    with pytest.raises(ShapeError):
        random_corner_pixels(torch.rand(1, 2, 2), 1)
