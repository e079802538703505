"""The attacker's two gradients through a pre-processing defence, and the trivial baseline transforms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial.defence.neutralize import NeutralizedModel
from advspatial.defence.transforms import TransformDefence, jpeg_quantize, through, through_rows
from advspatial.errors import ConfigError
from advspatial.passes import PassLedger
from advspatial.regions.fills import gaussian_blur
from helpers import intensity_map


class _Linear(nn.Module):
    """z = [0, w.x]: the gradient of z1 w.r.t. its input is w everywhere."""

    def __init__(self, size: int = 8) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, size * size).view(1, 1, size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1 = (x * self.w).flatten(1).sum(1)
        return torch.stack([torch.zeros_like(z1), z1], 1)


def _grad(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    module(x)[:, 1].sum().backward()
    return x.grad


def test_identity_backward_is_the_models_gradient_and_local_is_autograd():
    x = torch.rand(2, 1, 8, 8)
    transformed = x * 0.5
    assert torch.equal(through(x, transformed, "local"), transformed)
    same = through(x, transformed, "identity")
    assert torch.allclose(same, transformed)
    model = _Linear()
    ident = _grad(lambda z: model(through(z, z * 0.5, "identity")), x)  # type: ignore[arg-type]
    local = _grad(lambda z: model(through(z, z * 0.5, "local")), x)  # type: ignore[arg-type]
    assert torch.allclose(ident, model.w.expand_as(x)) and torch.allclose(local, 0.5 * model.w.expand_as(x))
    with pytest.raises(ConfigError):
        through(x, x, "straight")


def test_neutralized_zero_fill_local_gradient_vanishes_on_the_region_identity_does_not():
    model = _Linear()
    x = torch.rand(1, 1, 8, 8) + 0.1
    defence = NeutralizedModel(model, lambda z: torch.zeros(z.shape[0], 8, 8), intensity_map, fraction=0.25)
    region = defence.select(x).neutralized
    local = _grad(defence, x)[0, 0]
    identity = _grad(defence.with_backward("identity"), x)[0, 0]
    assert bool(region.any()) and float(local[region[0]].abs().max()) == 0.0  # the local gradient masks N
    assert torch.allclose(identity, model.w[0, 0])  # identity-BPDA: the model's gradient at fill(x)


def test_dct_is_scipys_orthonormal_dct_and_jpeg_quantization_behaves():
    from scipy.fft import dctn

    from advspatial.defence.transforms import _dct_matrix

    block = torch.rand(8, 8, dtype=torch.float64)
    d = _dct_matrix(8, torch.float64)
    assert torch.allclose(d @ block @ d.T, torch.from_numpy(dctn(block.numpy(), norm="ortho")), atol=1e-12)
    x = torch.rand(3, 3, 12, 20, generator=torch.Generator().manual_seed(0))
    flat = torch.full((1, 1, 8, 8), 0.5)
    assert torch.equal(jpeg_quantize(flat, 10), flat)
    errors = [float((jpeg_quantize(x, q) - x).abs().mean()) for q in (95, 50, 10)]
    assert errors[0] < errors[1] < errors[2] and errors[0] < 0.02
    out = jpeg_quantize(x, 30)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    # rounding masks the gradient: the local gradient through it is exactly 0
    defence = TransformDefence(nn.Sequential(nn.Flatten(), nn.Linear(720, 2)), "jpeg", 30)
    assert float(_grad(defence, x).abs().max()) == 0.0
    assert float(_grad(defence.with_backward("identity"), x).abs().max()) > 0.0


def test_noise_baseline_is_randomized_and_its_scored_draws_are_keyed_by_id():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    noise = TransformDefence(model, "noise", 0.3, seed=2)
    x = torch.rand(5, 1, 8, 8)
    assert noise.randomized and not TransformDefence(model, "blur", 1.0).randomized
    first, second = noise(x), noise(x)
    assert not torch.equal(first, second) and noise.calls == 2
    ids = torch.arange(100, 105)
    whole = noise.predict_draws(x, 6, ids)
    alone = torch.cat([noise.predict_draws(x[i:i + 1], 6, ids[i:i + 1]) for i in range(5)])
    assert whole.shape == (5, 6) and torch.equal(whole, alone)
    ledger = PassLedger()
    ledger.watch(model)
    noise.predict_draws(x, 6, ids)
    assert (ledger.outside.calls, ledger.outside.rounds) == (6, 1)   # independent draws: one round
    with pytest.raises(ConfigError):
        TransformDefence(model, "jpeg", 0)
    with pytest.raises(ConfigError):
        TransformDefence(model, "sharpen", 1.0)


@pytest.mark.parametrize("training", [False, True])
def test_defence_wrappers_start_in_the_wrapped_models_mode(training: bool) -> None:
    """A wrapper in training mode around an eval model would switch it to training when its mode is restored."""
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, 2)).train(training)
    for wrapper in (TransformDefence(model, "blur", 1.0),
                    NeutralizedModel(model, intensity_map, intensity_map, fraction=0.2)):
        assert wrapper.training == training
        wrapper.train(wrapper.training)
        assert all(m.training == training for m in model.modules())


def test_module_apply_reaches_the_wrapped_model_not_the_transform() -> None:
    """nn.Module.apply(fn) on a model holding a TransformDefence calls fn on every submodule (the transform has a
    name of its own, ``transformed``, so it no longer shadows ``apply``)."""
    defence = TransformDefence(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), "blur", 1.0)
    seen: list[str] = []
    nn.Sequential(defence).apply(lambda m: seen.append(type(m).__name__))
    assert {"Conv2d", "TransformDefence", "Sequential"} <= set(seen)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(defence.transformed(x), defence.transformed(x))


def test_through_rows_gives_each_row_the_values_and_gradient_of_its_own_backward() -> None:
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    identity = torch.tensor([True, False, False, True, True, False])
    weights = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))

    def value_and_grad(backward_of_row):  # type: ignore[no-untyped-def]
        z = x.clone().requires_grad_(True)
        out = backward_of_row(z)
        (grad,) = torch.autograd.grad((out * weights).sum(), z)
        return out.detach(), grad

    mixed = value_and_grad(lambda z: through_rows(z, gaussian_blur(z, 1.0), identity))
    for backward in ("identity", "local"):
        rows = identity if backward == "identity" else ~identity
        own = value_and_grad(lambda z, b=backward: through(z, gaussian_blur(z, 1.0), b))
        assert torch.equal(mixed[0][rows], own[0][rows]) and torch.equal(mixed[1][rows], own[1][rows])
