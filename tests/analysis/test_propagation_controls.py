"""The propagation control: a random, non-adversarial pixel change of the same |Δ|."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial.experiments.propagation.pixel_changes import apply_pixels, perturbed_pixels
from advspatial.analysis.propagation import (
    CONTROL_MODES,
    per_image_layer_stats,
    propagation_maps,
    random_pixel_change,
)
from advspatial.experiments.paired import paired_claim
from advspatial.statistics.claims import judge


def _cnn(channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 10 * 10, 3)).eval()


def _attack(n: int, channels: int, k: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, 10, 10, generator=gen) * 0.6 + 0.2  # room for any direction of a small |Δ|
    flat = torch.stack([torch.randperm(100, generator=gen)[:k] for _ in range(n)])
    pixels = torch.stack((flat // 10, flat % 10), dim=-1)
    colours = torch.rand(n, k, channels, generator=gen)
    return x, pixels, colours


@pytest.mark.parametrize("mode,channels", [("position", 1), ("position", 3), ("colour", 3)])
def test_control_of_a_random_change_is_the_change_itself(mode, channels):
    """A 'successful' pixel that is itself the random control (same seed, same ids) gets itself back: the paired
    difference is 0 in every layer and the claim is equivalent to the null."""
    n = 40
    model = _cnn(channels)
    x, pixels, colours = _attack(n, channels, 1, seed=channels)
    ids = torch.arange(100, 100 + n)
    fake = random_pixel_change(x, pixels, colours, mode, seed=3, sample_ids=ids)
    assert fake.available.all()
    p2, c2, count = perturbed_pixels(x, fake.x, 1)
    assert (count == 1).all()
    control = random_pixel_change(x, p2, c2, mode, seed=3, sample_ids=ids)
    assert torch.equal(control.pixels, fake.pixels)
    assert torch.allclose(control.x, fake.x, atol=1e-6)
    attack_stats = per_image_layer_stats(propagation_maps(model, x, fake.x), 0.1)
    control_stats = per_image_layer_stats(propagation_maps(model, x, control.x), 0.1)
    for name in attack_stats:
        assert torch.allclose(attack_stats[name], control_stats[name], atol=1e-5)
    claim = paired_claim("c", "s", "peak", "control", attack_stats["peak"][:, -1], control_stats["peak"][:, -1],
                         seed=0, primary=True)
    judge([claim], sesoi=0.01)
    assert claim.effect.n == n and abs(claim.effect.mean) < 1e-5 and claim.verdict == "equivalent to null"
    # another seed draws another change: the test above can fail
    other = random_pixel_change(x, p2, c2, mode, seed=4, sample_ids=ids)
    assert not torch.allclose(other.x, fake.x)


@pytest.mark.parametrize("channels,k", [(1, 1), (3, 1), (1, 3), (3, 4)])
def test_control_keeps_each_pixels_magnitude_the_box_and_the_mode(channels, k):
    x, pixels, colours = _attack(12, channels, k, seed=10 + k)
    magnitude = (colours - x[torch.arange(12)[:, None], :, pixels[..., 0], pixels[..., 1]]).norm(dim=-1)
    for mode in CONTROL_MODES:
        c = random_pixel_change(x, pixels, colours, mode, seed=1)
        ok = c.available
        assert ok.any()
        assert (c.x >= 0).all() and (c.x <= 1).all()
        changed = (c.x != x).any(dim=1).flatten(1).sum(dim=1)
        assert (changed[ok] <= k).all() and (changed[~ok] == 0).all()
        for i in ok.nonzero().flatten().tolist():
            got = sorted(round(float((c.colours[i, j] - x[i, :, r, q]).norm()), 5)
                         for j, (r, q) in enumerate(c.pixels[i].tolist()[:k]))
            assert got == sorted(round(float(m), 5) for m in magnitude[i])
            positions = {tuple(p) for p in c.pixels[i].tolist()}
            assert len(positions) == k  # distinct pixels, as many as the attack changed
            if mode == "colour":
                assert positions == {tuple(p) for p in pixels[i].tolist()}
            # the control is a real change: applying it reproduces the control image
            assert torch.equal(apply_pixels(x[i:i + 1], c.pixels[i:i + 1], c.colours[i:i + 1]), c.x[i:i + 1])


def test_grey_same_position_control_is_the_mirrored_change():
    x, pixels, colours = _attack(30, 1, 1, seed=4)
    before = x[torch.arange(30), 0, pixels[:, 0, 0], pixels[:, 0, 1]]
    colours = (before + 0.15 * torch.sign(torch.randn(30, generator=torch.Generator().manual_seed(0))))[:, None, None]
    c = random_pixel_change(x, pixels, colours, "colour", seed=0)
    assert c.available.all()
    assert torch.allclose(c.colours[:, 0, 0] - before, -(colours[:, 0, 0] - before), atol=1e-6)
    # the mirror of the mirror is the attack: the "control" of a control gets the attack back
    back = random_pixel_change(x, c.pixels, c.colours, "colour", seed=9)
    assert torch.allclose(back.colours, colours, atol=1e-6)


def test_grey_pixel_moved_from_black_to_white_has_no_same_position_control():
    x = torch.zeros(2, 1, 6, 6)
    x[1] = 0.5
    pixels = torch.tensor([[[2, 3]], [[2, 3]]])
    colours = torch.tensor([[[1.0]], [[0.9]]])  # |Δ| = 1 (no other value at distance 1 from 0) and 0.4 (0.1 fits)
    colour = random_pixel_change(x, pixels, colours, "colour", seed=0)
    assert colour.available.tolist() == [False, True]
    assert torch.equal(colour.x[0], x[0])
    assert colour.x[1, 0, 2, 3] == pytest.approx(0.1)
    position = random_pixel_change(x, pixels, colours, "position", seed=0)
    assert position.available.tolist() == [True, True]  # another black pixel can go to white


def test_controls_are_keyed_by_sample_id_not_by_batch():
    x, pixels, colours = _attack(6, 3, 2, seed=5)
    ids = torch.tensor([7, 3, 9, 1, 4, 8])
    for mode in CONTROL_MODES:
        together = random_pixel_change(x, pixels, colours, mode, seed=2, sample_ids=ids)
        order = torch.tensor([5, 2, 0])
        part = random_pixel_change(x[order], pixels[order], colours[order], mode, seed=2, sample_ids=ids[order])
        assert torch.equal(part.x, together.x[order])


def test_per_image_layer_stats_by_hand():
    from advspatial.analysis.propagation import PropagationMap

    pm = torch.tensor([[[0.0, 0.2], [0.05, 0.5]], [[0.0, 0.0], [0.0, 0.0]]])
    stats = per_image_layer_stats({"a": PropagationMap(pm, pm, torch.ones(2)),
                                   "b": PropagationMap(pm[:, :1, :1], pm[:, :1, :1], torch.ones(2))}, 0.1)
    assert stats["peak"].tolist() == [[0.5, 0.0], [0.0, 0.0]]
    assert stats["spread"].tolist() == [[0.5, 0.0], [0.0, 0.0]]
    assert stats["mean"][0, 0] == pytest.approx(0.1875)
