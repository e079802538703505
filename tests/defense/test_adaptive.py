"""Adaptive attacks: BPDA/EOT PGD through the defence, and the RoI-restricted attack."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial.defense.adaptive import bpda_pgd, roi_restricted_attack
from advspatial.defense.neutralize import NeutralizedModel, top_fraction
from helpers import grad_map, intensity_map

from advspatial.errors import ConfigError, ShapeError




def test_matches_torchattacks_pgd_without_a_defence(tiny_cnn):
    torchattacks = pytest.importorskip("torchattacks")
    model = tiny_cnn(seed=1).double()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = model(x).argmax(1)
    ours, success = bpda_pgd(model, x, y, eps=0.1, alpha=0.02, steps=5, random_start=False)
    ref = torchattacks.PGD(model, eps=0.1, alpha=0.02, steps=5, random_start=False)(x, y)
    assert torch.allclose(ours, ref, atol=1e-12)
    assert torch.equal(success, model(ours).argmax(1) != y)


@pytest.mark.parametrize("eps", [0.0, 0.03, 0.3])
def test_respects_eps_box_and_mask(tiny_cnn, eps):
    model = tiny_cnn(size=12)
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    x[:, :, :2] = 0.0  # pixels at the box edge
    defended = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2, fill="blur")
    y = torch.tensor([0, 1, 2])
    x_adv, _ = bpda_pgd(defended, x, y, eps=eps, alpha=0.01, steps=3)
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    mask = torch.zeros(3, 12, 12)
    mask[:, 3:8, 4:9] = 1
    masked, _ = bpda_pgd(defended, x, y, eps=eps, alpha=0.01, steps=3, mask=mask)
    assert bool(((masked - x)[mask[:, None] == 0] == 0).all())


def test_without_a_region_it_is_plain_pgd(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    y = model(x).argmax(1)
    empty = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.0)
    a, sa = bpda_pgd(empty, x, y, eps=0.05, alpha=0.01, steps=4, seed=7)
    b, sb = bpda_pgd(model, x, y, eps=0.05, alpha=0.01, steps=4, seed=7)
    assert torch.equal(a, b) and torch.equal(sa, sb)


class _Linear2(nn.Module):
    """Two classes on 1x4x4 images: z0 = 0, z1 = w.x - 0.5, w = 1 on rows 0-1 and 0 elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, 1, 4, 4))
        with torch.no_grad():
            self.w[:, :, :2] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1 = (x * self.w).flatten(1).sum(1) - 0.5
        return torch.stack([torch.zeros_like(z1), z1], dim=1)


def _row0_importance(x: torch.Tensor) -> torch.Tensor:
    maps = torch.zeros(x.shape[0], 4, 4)
    maps[:, 0] = 1.0
    return maps


def test_toy_defence_stops_the_naive_attack_but_not_bpda():
    # RoI = row 0 (importance), RoA = rows 0-1 (where the gradient is), so N = row 1.
    model = _Linear2()
    defended = NeutralizedModel(model, _row0_importance, grad_map(model), fraction=0.5, roi_fraction=0.25)
    x = torch.zeros(4, 1, 4, 4)
    y = torch.zeros(4, dtype=torch.long)
    assert bool((defended(x).argmax(1) == 0).all())
    row1 = torch.zeros(4, 4, 4)
    row1[:, 1] = 1.0
    # non-adaptive: PGD on the undefended model confined to row 1 (exactly what the defence neutralizes)
    naive, naive_success = bpda_pgd(model, x, y, eps=0.25, alpha=0.1, steps=5, mask=row1)
    assert bool(naive_success.all())
    expected_n = torch.zeros(4, 4, 4, dtype=torch.bool)
    expected_n[:, 1] = True
    defended(naive)
    assert torch.equal(defended.last_region, expected_n)
    assert bool((defended(naive).argmax(1) == 0).all())  # the defence removes it completely
    # adaptive: through the defence, the gradient finds row 0 (the RoI), which is never neutralized
    adaptive, adaptive_success = bpda_pgd(defended, x, y, eps=0.25, alpha=0.1, steps=5)
    assert bool(adaptive_success.all())
    assert bool((defended(adaptive).argmax(1) == 1).all())
    assert torch.allclose(adaptive[:, 0, 0], torch.full((4, 4), 0.25))


class _Counting(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


def test_eot_averages_over_samples_and_is_deterministic(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(4))
    y = model(x).argmax(1)

    def run(seed: int, eot: int) -> tuple[torch.Tensor, NeutralizedModel]:
        rand = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.3, mode="random", seed=seed)
        counted = _Counting(rand)
        x_adv, _ = bpda_pgd(counted, x, y, eps=0.1, alpha=0.02, steps=2, eot_samples=eot, seed=1)
        assert counted.calls == 2 * eot + 1 and rand.calls == 2 * eot + 1
        return x_adv, rand

    a, _ = run(0, 3)
    b, _ = run(0, 3)
    assert torch.equal(a, b)
    c, _ = run(5, 3)
    assert not torch.equal(a, c)  # another defence seed draws other regions
    d, _ = run(0, 1)
    assert not torch.equal(a, d)


def test_restores_modes_and_flags(tiny_cnn):
    model = tiny_cnn().train()
    model.fc.weight.requires_grad_(False)
    defended = NeutralizedModel(model, grad_map(model), grad_map(model))
    x = torch.rand(2, 1, 28, 28)
    bpda_pgd(defended, x, torch.tensor([1, 2]), eps=0.05, alpha=0.01, steps=2)
    assert model.training and defended.training
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, True, False, True]
    assert all(p.grad is None for p in model.parameters())


def test_bpda_pgd_validates():
    model = _Linear2()
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ConfigError, match="eot_samples"):
        bpda_pgd(model, x, torch.tensor([0]), 0.1, 0.01, 2, eot_samples=0)
    with pytest.raises(ConfigError, match="alpha"):
        bpda_pgd(model, x, torch.tensor([0]), 0.1, 0.0, 2)
    with pytest.raises(ShapeError, match="labels"):
        bpda_pgd(model, x, torch.tensor([0, 1]), 0.1, 0.01, 2)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        bpda_pgd(model, x + 2, torch.tensor([0]), 0.1, 0.01, 2)


def test_roi_restricted_attack_stays_inside_the_clean_roi(tiny_cnn):
    model = tiny_cnn()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    y = model(x).argmax(1)
    seen = {}

    def attack(images, labels, mask):
        seen["mask"] = mask
        return (images + 0.1).clamp(0, 1)  # perturbs everything; the helper must confine it

    x_adv, roi = roi_restricted_attack(attack, x, y, intensity_map, 0.1, seed=3)
    assert torch.equal(roi, top_fraction(intensity_map(x), 0.1, seed=3))
    assert seen["mask"].shape == (3, 1, 28, 28) and torch.equal(seen["mask"][:, 0].bool(), roi)
    assert bool(((x_adv - x)[~roi[:, None]] == 0).all()) and bool(((x_adv - x)[roi[:, None]] != 0).any())
    # with bpda_pgd through the defence as the attack
    defended = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2)
    x_adv, roi = roi_restricted_attack(
        lambda a, b, mask: bpda_pgd(defended, a, b, 0.2, 0.05, 3, mask=mask)[0], x, y, intensity_map, 0.2)
    delta = x_adv - x
    assert bool((delta[~roi[:, None]] == 0).all()) and float(delta.abs().max()) <= 0.2 + 1e-6
    with pytest.raises(ShapeError, match="attack must return"):
        roi_restricted_attack(lambda a, b, mask: a[:1], x, y, intensity_map, 0.2)
