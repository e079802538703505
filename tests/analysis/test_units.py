"""Unit sensitivity and unit masking: hooks released, known answers on a hand-built net."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial.analysis.units import (
    capture,
    mask_units,
    masking_curve,
    rank_sensitive_units,
    unit_activation_change,
)
from advspatial.errors import ConfigError


class ChannelNet(nn.Module):
    """4 input channels -> identity 1x1 conv ('units') -> ReLU -> GAP -> fixed head.

    z_0 = mean(ch0), z_1 = mean(ch1) + 3·mean(ch2); channel 3 is ignored.
    Clean images have ch2 = 0, so only an attack that writes into ch2 can fool it,
    and unit 2 alone carries that perturbation.
    """

    def __init__(self) -> None:
        super().__init__()
        self.units = nn.Conv2d(4, 4, 1, bias=False)
        self.head = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.units.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
            self.head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 3.0, 0.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.units(x)).mean((2, 3)))


def channel_data(n: int = 8):
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.zeros(n, 4, 5, 5)
    x[y == 0, 0] = 1.0
    x[y == 1, 1] = 1.0
    x[:, 3] = torch.rand(n, 5, 5, generator=gen)  # ignored noise channel
    x_adv = x.clone()
    x_adv[y == 0, 2] = 0.5  # z_1 = 1.5 > z_0 = 1: class-0 images flip
    x_adv[y == 1, 0] = 0.3  # class-1 images: a small, harmless change in unit 0
    return x, y, x_adv


def test_activation_change_known_values():
    model = ChannelNet().eval()
    x, y, x_adv = channel_data()
    change = unit_activation_change(model, "units", x, x_adv, batch_size=3)
    # unit 2: 0.5 on every pixel of the 4 class-0 images, 0 elsewhere -> mean 0.25
    torch.testing.assert_close(change.mean_abs, torch.tensor([0.15, 0.0, 0.25, 0.0]))
    torch.testing.assert_close(change.signed_mean, torch.tensor([0.15, 0.0, 0.25, 0.0]))
    torch.testing.assert_close(change.clean_mean_abs[:3], torch.tensor([0.5, 0.5, 0.0]))
    assert rank_sensitive_units(change).tolist() == [2, 0, 1, 3]  # ties by index
    assert rank_sensitive_units(change, by="relative").tolist()[0] == 0  # unit 2 silent on clean
    with pytest.raises(ConfigError):
        rank_sensitive_units(change, by="loudest")


def test_sensitive_channel_ranks_first_and_masking_restores_robustness():
    model = ChannelNet().eval()
    x, y, x_adv = channel_data()
    ranked = rank_sensitive_units(unit_activation_change(model, "units", x, x_adv))
    assert ranked[0] == 2
    curve = masking_curve(model, "units", ranked, x, y, x_adv, ks=(0, 1), n_random=4, seed=1)
    assert curve.clean_acc.tolist() == [1.0, 1.0]
    assert curve.robust_acc.tolist() == [0.5, 1.0]  # masking unit 2 undoes the attack
    assert curve.random_robust_acc[0] == 0.5
    assert curve.random_robust_acc[1] < 1.0 or curve.random_clean_acc[1] < 1.0  # random units do worse
    assert curve.random_clean_all.shape == (4, 2)
    again = masking_curve(model, "units", ranked, x, y, x_adv, ks=(0, 1), n_random=4, seed=1)
    assert torch.equal(again.random_robust_all, curve.random_robust_all)  # seeded
    assert [r["k"] for r in curve.rows()] == [0, 1]


def test_default_ks_and_bad_ks():
    model = ChannelNet().eval()
    x, y, x_adv = channel_data()
    curve = masking_curve(model, "units", [2, 0, 1, 3], x, y, x_adv, n_random=1)
    assert curve.ks.tolist() == [0, 1, 2, 4]
    assert curve.clean_acc[-1] == 0.5  # all units masked: logits tie at 0, argmax picks class 0
    with pytest.raises(ConfigError):
        masking_curve(model, "units", [2, 0], x, y, x_adv, ks=(3,))
    with pytest.raises(ConfigError):
        masking_curve(model, "units", [7], x, y, x_adv)


def test_masking_zero_units_changes_nothing_and_hooks_are_released(tiny_cnn):
    model = tiny_cnn(size=8)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    layer = model.features[3]
    before = model(x)
    with mask_units(model, "features.3", []):
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    with mask_units(model, "features.3", [0, 5]):
        with capture(model, "features.3") as outs:
            masked = model(x)
        assert (outs[0][:, [0, 5]] == 0).all()
        assert (outs[0][:, 1] != 0).any()
    assert not torch.equal(masked, before)
    assert len(layer._forward_hooks) == 0
    with pytest.raises(RuntimeError), mask_units(model, "features.3", [1]):
        raise RuntimeError("boom")
    assert len(layer._forward_hooks) == 0
    with pytest.raises(ConfigError), mask_units(model, "features.3", [99]):
        model(x)
    assert len(layer._forward_hooks) == 0
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    unit_activation_change(model, layer, x, x)
    assert len(layer._forward_hooks) == 0


def test_identical_inputs_have_zero_change_and_training_mode_is_restored(tiny_cnn):
    model = tiny_cnn(size=8).train()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    change = unit_activation_change(model, "features.3", x, x)
    assert change.mean_abs.shape == (16,) and (change.mean_abs == 0).all()
    assert model.training
    with pytest.raises(ConfigError):
        unit_activation_change(model, "features.99", x, x)
