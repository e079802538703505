"""The random-sign control of the promotion-suppression typing: energy shares, sign draws, control shares."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advspatial.analysis.pse import (OPPOSING, PROMOTION, SUPPRESSION, UNPERTURBED, UNTYPED,
                                     promotion_suppression)
from advspatial.analysis.pse_control import (SHARE_NAMES, control_shares, energy_shares, random_signs,
                                             untyped_count_share)
from advspatial.errors import AdvspatialError


def linear_model(weight: torch.Tensor) -> nn.Module:
    """z = W·flatten(x) in float64."""
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(weight)
    return nn.Sequential(nn.Flatten(), lin).eval()


def suppression_case(n: int = 8, seed: int = 0, size: int = 8, block: int = 2, eps: float = 0.05):
    """A linear 3-class model and, per image, a δ that lowers the true logit (class 0) and leaves the target's
    (class 1) unchanged in every block: in each block δ is −W_0 with its part along W_1 removed."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(3, size * size, generator=g, dtype=torch.float64)
    w0, w1 = weight[0].view(size, size), weight[1].view(size, size)
    delta = torch.zeros(size, size, dtype=torch.float64)
    for r in range(0, size, block):
        for c in range(0, size, block):
            a, b = w0[r:r + block, c:c + block], w1[r:r + block, c:c + block]
            ortho = a - (a * b).sum() / (b * b).sum() * b
            delta[r:r + block, c:c + block] = -eps * ortho / ortho.abs().max()
    x = torch.rand(n, 1, size, size, generator=g, dtype=torch.float64)
    y, t = torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)
    return linear_model(weight), x, x + delta, y, t


def test_energy_shares_known_answer_and_untyped_count() -> None:
    types = torch.tensor([[SUPPRESSION, PROMOTION, UNTYPED, UNPERTURBED], [OPPOSING, UNPERTURBED, UNPERTURBED,
                                                                           UNPERTURBED],
                          [UNPERTURBED] * 4])
    energy = torch.tensor([[1.0, 2.0, 3.0, 0.0], [5.0, 0.0, 0.0, 0.0], [0.0] * 4])
    shares = energy_shares(types, energy)
    assert SHARE_NAMES == ("suppression", "promotion", "balanced", "opposing", "untyped")
    assert torch.allclose(shares[0], torch.tensor([1 / 6, 2 / 6, 0.0, 0.0, 3 / 6]))
    assert torch.allclose(shares[1], torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0]))
    assert torch.equal(shares[2], torch.zeros(5))
    counts = untyped_count_share(types)
    assert counts[0].item() == pytest.approx(1 / 3) and counts[1].item() == 0.0 and math.isnan(counts[2].item())


def test_random_signs_keep_every_magnitude_and_follow_the_sample_id() -> None:
    delta = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([10, 11, 12, 13])
    flipped = random_signs(delta, ids, seed=7)
    assert torch.equal(flipped.abs(), delta.abs())
    assert 0.3 < (flipped != delta).double().mean().item() < 0.7
    assert torch.equal(random_signs(delta[2:], ids[2:], seed=7), flipped[2:])  # an image's signs: its id only
    assert not torch.equal(random_signs(delta, ids, seed=7, draw=1), flipped)
    with pytest.raises(AdvspatialError):
        random_signs(delta, ids, seed=7, draw=-1)


def test_control_of_a_suppression_only_perturbation_has_less_suppression_energy() -> None:
    model, x, x_adv, y, t = suppression_case()
    observed = promotion_suppression(model, x, x_adv, y, t, block=2, noise_floor=0.01)
    shares = energy_shares(observed.types, observed.energy)
    assert torch.allclose(shares[:, 0], torch.ones(len(x), dtype=shares.dtype))  # constructed: all suppression
    ids = torch.arange(100, 100 + len(x))
    control = control_shares(model, x, x_adv, observed, ids, seed=3, draws=2)
    assert control.shape == (len(x), len(SHARE_NAMES))
    assert torch.allclose(control.sum(1), torch.ones(len(x), dtype=control.dtype))
    assert control[:, 0].mean() < 0.7  # random signs lower the true logit in only part of the blocks
    half = promotion_suppression(model, x[:3], x_adv[:3], y[:3], t[:3], block=2, noise_floor=0.01)
    assert torch.allclose(control_shares(model, x[:3], x_adv[:3], half, ids[:3], seed=3, draws=2), control[:3])


def test_control_shares_check_their_inputs() -> None:
    model, x, x_adv, y, t = suppression_case(n=2)
    observed = promotion_suppression(model, x, x_adv, y, t, block=2)
    with pytest.raises(AdvspatialError):
        control_shares(model, x[:1], x_adv[:1], observed, None, seed=0)
    with pytest.raises(AdvspatialError):
        control_shares(model, x, x_adv, observed, None, seed=0, draws=0)
