"""The random-sign control of the promotion-suppression typing: energy shares, sign draws, control shares."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import counted_block_pairs, suppression_case

from advspatial.analysis.pse import promotion_suppression
from advspatial.analysis.pse_types import OPPOSING, PROMOTION, SUPPRESSION, UNPERTURBED, UNTYPED
from advspatial.experiments.pse.control import (
    SHARE_NAMES, control_shares, energy_shares, random_signs, untyped_count_share,
)
from advspatial.errors import AdvspatialError


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


def test_control_of_square_groups_goes_incrementally_and_equals_its_full_passes(monkeypatch) -> None:
    """With the observed result's block the control's pairs take the incremental evaluator (one call per draw)
    and give the shares of full forward passes over the same groups; a block that does not give the observed
    groups is refused."""
    from advspatial.models.cifar_resnet import cifar_resnet

    model = cifar_resnet(8).eval()
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(3, 3, 8, 8, generator=gen)
    x_adv = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    y, t = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    observed = promotion_suppression(model, x, x_adv, y, t, block=2, noise_floor=0.01)
    ids = torch.tensor([5, 6, 7])
    calls = counted_block_pairs(monkeypatch)
    full = control_shares(model, x, x_adv, observed, ids, seed=1, draws=2)
    assert calls == []
    fast = control_shares(model, x, x_adv, observed, ids, seed=1, draws=2, block=2)
    assert len(calls) == 2 and 0 < calls[0] <= 3 * 16  # one call per draw, of the perturbed squares of 3 images
    torch.testing.assert_close(fast, full, atol=1e-6, rtol=0)
    assert float(full[:, :4].sum()) > 0  # some groups are typed: a comparison with content
    with pytest.raises(AdvspatialError, match="block=4 does not give"):
        control_shares(model, x, x_adv, observed, ids, seed=1, block=4)
