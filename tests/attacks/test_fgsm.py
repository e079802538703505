"""FGSM: known answer on a linear model, torchattacks cross-check, masks, parameter errors."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from advspatial.attacks.fgsm import FGSM
from advspatial.attacks.gradients import attack_loss
from advspatial.errors import ConfigError


def linear_model(dim: int = 16, classes: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, classes)).eval()


def test_known_answer_on_linear_two_class_model():
    """For 2 linear classes, grad CE(x, y) = (1 - p_y)(w_other - w_y): its sign is known."""
    model = linear_model()
    w = model[1].weight.detach()
    x = torch.full((2, 1, 4, 4), 0.5)
    y = torch.tensor([0, 1])
    x_adv = FGSM(model, eps=0.1)(x, y)
    expected = x + 0.1 * torch.stack([(w[1] - w[0]).sign(), (w[0] - w[1]).sign()]).view_as(x)
    assert torch.allclose(x_adv, expected, atol=1e-7)
    # targeted at the other class: descend CE to the target, the same direction here
    assert torch.allclose(FGSM(model, eps=0.1)(x, y, target=1 - y), expected, atol=1e-7)


def test_loss_variants_sign_conventions():
    logits = torch.tensor([[2.0, 0.0, 1.0]])
    y, t = torch.tensor([0]), torch.tensor([2])
    assert attack_loss(logits, y, None, "margin").item() == pytest.approx(-1.0)  # max other - true
    assert attack_loss(logits, y, t, "margin").item() == pytest.approx(-1.0)  # target - max other
    ce = nn.functional.cross_entropy(logits, y).item()
    assert attack_loss(logits, y, None, "ce").item() == pytest.approx(ce)
    assert attack_loss(logits, y, t, "ce").item() == pytest.approx(-nn.functional.cross_entropy(logits, t).item())


@pytest.mark.parametrize("targeted", [False, True])
def test_matches_torchattacks(tiny_cnn, targeted):
    model = tiny_cnn(in_channels=3, size=12)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 3, 12, 12, generator=g), torch.randint(0, 10, (8,), generator=g)
    ref = torchattacks.FGSM(model, eps=0.05)
    if targeted:
        t = (y + 3) % 10
        ref.set_mode_targeted_by_label(quiet=True)
        ours, theirs = FGSM(model, eps=0.05)(x, y, target=t), ref(x, t)
    else:
        ours, theirs = FGSM(model, eps=0.05)(x, y), ref(x, y)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
    assert (ours != x).any()


def test_fractional_mask_scales_the_step(tiny_cnn):
    model = tiny_cnn(size=8)
    x, y = torch.full((2, 1, 8, 8), 0.5), torch.tensor([1, 2])
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 0.5
    delta = FGSM(model, eps=0.2)(x, y, mask=mask) - x
    full = FGSM(model, eps=0.2)(x, y) - x
    assert torch.equal(delta[..., mask == 0], torch.zeros_like(delta[..., mask == 0]))
    inside = mask > 0
    assert torch.allclose(delta[..., inside], 0.5 * full[..., inside], atol=1e-7)


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": -0.1}, r"eps=-0.1 is out of range; valid: \[0, 1\]"),
    ({"eps": 1.5}, r"valid: \[0, 1\]"),
    ({"loss": "hinge"}, "ce, margin"),
])
def test_bad_parameters_name_the_valid_range(tiny_cnn, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        FGSM(tiny_cnn(size=8), **kwargs)
