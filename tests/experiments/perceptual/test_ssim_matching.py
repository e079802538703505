"""The perceptual experiment's controls: the geometry null, and the per-image minimal distortion."""

from __future__ import annotations

import math

import torch
from torch import nn

from advspatial.analysis.ssim import ssim
from advspatial.attacks import PGD, SSIMBallAttack
from advspatial.experiments.perceptual.ssim_matching import (
    full_slack_direction, geometry_null, matched_scale, minimal_distortion,
)


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 16, 16, generator=gen)
    x[:, :, :8, :8] = 0.0  # black windows
    return x


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()


def test_matched_scale_solves_a_known_monotone_function():
    x = torch.zeros(3, 1, 4, 4)
    direction = torch.ones_like(x)
    target = torch.tensor([0.9, 0.5, 0.2])
    score = lambda a, b: 1 - (b - a).abs().mean((1, 2, 3))  # noqa: E731  (1 - t for the scale t)
    t = matched_scale(x, direction, target, score)
    assert torch.allclose(t, 1 - target.double(), atol=1e-8)
    unreachable = matched_scale(x, 0.1 * direction, torch.tensor([0.5, 0.5, 0.5]), score)
    assert torch.allclose(unreachable, torch.ones(3, dtype=torch.float64))  # the whole direction is not enough


def test_ssim_ball_geometry_null_is_feasible_and_has_the_attacks_ssim():
    x, model = _images(), _model()
    attack = SSIMBallAttack(model, alpha=0.8, window=4, steps=10)
    x_adv = attack(x, torch.zeros(len(x), dtype=torch.long))
    target = ssim(x, x_adv)
    ids = torch.arange(len(x))
    x_null = geometry_null("ssim-ball", attack, x, target, ids, seed=0)
    ball = attack.constraint(x.double())
    assert float(ball.violation((x_null - x).double()).max()) <= 1e-6  # inside the same feasible set
    reached = ssim(x, x_null)
    assert torch.allclose(reached, target, atol=1e-4)
    direction = full_slack_direction("ssim-ball", attack, x, ids, seed=0)
    assert float(ball.violation(direction.double()).max()) <= 1e-6
    # seeded per sample id: an image alone gets the same null as in the batch; another seed another one
    alone = geometry_null("ssim-ball", attack, x[2:3], target[2:3], ids[2:3], seed=0)
    assert torch.allclose(alone, x_null[2:3], atol=1e-6)
    assert not torch.allclose(geometry_null("ssim-ball", attack, x, target, ids, seed=1), x_null)


def test_linf_geometry_null_moves_every_pixel_by_eps_at_full_slack():
    x, model = _images(), _model()
    attack = PGD(model, eps=0.05, steps=5)
    direction = full_slack_direction("pgd", attack, x, torch.arange(len(x)), seed=0)
    assert torch.allclose(direction.abs(), torch.full_like(x, 0.05), atol=1e-6)  # no sign clipped by the box
    assert float((x + direction).min()) >= 0 and float((x + direction).max()) <= 1


def test_minimal_distortion_known_answers():
    fooled = torch.tensor([[True, False, False], [True, True, False]])
    ssims = torch.tensor([[0.9, 0.95, 0.99], [0.8, 0.85, 0.9]])
    best = minimal_distortion(fooled, ssims)
    assert abs(float(best[0]) - 0.9) < 1e-7 and abs(float(best[1]) - 0.85) < 1e-7
    assert math.isnan(float(best[2]))
