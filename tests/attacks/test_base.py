"""Tests of the attack base: masks, constraints, norms, per-sample noise, frozen eval, margin, registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial.attacks.base import (
    Attack, AttackResult, enforce_constraints, list_attacks, make_attack, margin, perturbation_norms, prepare_mask,
)
from advspatial.attacks.fgsm import FGSM
from advspatial.errors import ConfigError, ShapeError
from advspatial.host_syncs import counting
from advspatial.models.hooks import frozen_eval
from advspatial.runtime import per_sample_noise


class _AddConstant(Attack):
    """Adds a fixed value everywhere (and records the mode the model was in)."""

    def __init__(self, model: nn.Module, value: float = 0.3, seed: int = 0) -> None:
        super().__init__(model, seed)
        self.value = value
        self.seen_training: bool | None = None

    def perturb(self, x, y, mask, target, sample_ids):
        self.seen_training = self.model.training
        self.seen_grad = any(p.requires_grad for p in self.model.parameters())
        return x + self.value, torch.full((x.shape[0],), 2, dtype=torch.long)


@pytest.mark.parametrize(
    "shape", [(6, 6), (3, 6, 6), (3, 1, 6, 6), (1, 2, 1, 1), (3, 2, 6, 6), (6,)],
)
def test_prepare_mask_broadcasts_accepted_shapes(shape):
    x = torch.rand(3, 2, 6, 6)
    mask = torch.rand(shape)
    full = prepare_mask(mask, x)
    assert full.shape == x.shape
    if shape == (3, 6, 6):  # (N,H,W) is expanded over channels
        assert torch.equal(full[:, 0], mask) and torch.equal(full[:, 1], mask)
    else:
        assert torch.equal(full, torch.broadcast_to(mask, x.shape))


def test_prepare_mask_rejects_bad_shapes_and_values():
    x = torch.rand(3, 2, 6, 6)
    with pytest.raises(ShapeError, match="does not broadcast"):
        prepare_mask(torch.ones(5, 5), x)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        prepare_mask(torch.full((6, 6), 1.5), x)
    assert prepare_mask(None, x) is None
    assert prepare_mask(torch.ones(6, 6, dtype=torch.bool), x).dtype == x.dtype


def test_enforce_constraints_box_and_exact_zero_outside_mask():
    x = torch.rand(2, 1, 4, 4)
    x_adv = x + torch.randn_like(x)
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 0.5
    out = enforce_constraints(x, x_adv, mask)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out[:, :, 2:], x[:, :, 2:])
    assert torch.equal(out[:, :, :2], x_adv[:, :, :2].clamp(0, 1))


def test_perturbation_norms_known_values():
    delta = torch.zeros(2, 3, 2, 2)
    delta[0, :, 0, 0] = torch.tensor([3.0, 0.0, -4.0])  # one pixel position, two channels
    delta[1, 1, 1, 1] = -0.5
    l0, l2, linf = perturbation_norms(delta)
    assert l0.tolist() == [1, 1]
    assert torch.allclose(l2, torch.tensor([5.0, 0.5]))
    assert torch.allclose(linf, torch.tensor([4.0, 0.5]))


def test_per_sample_noise_depends_only_on_seed_and_id():
    ids = torch.tensor([7, 3, 11])
    batch = per_sample_noise((3, 2, 4, 4), seed=5, sample_ids=ids)
    alone = per_sample_noise((1, 2, 4, 4), seed=5, sample_ids=ids[1:2])
    assert torch.equal(batch[1], alone[0])
    assert not torch.equal(batch, per_sample_noise((3, 2, 4, 4), seed=6, sample_ids=ids))
    assert batch.min() >= -1 and batch.max() < 1
    assert per_sample_noise((3, 10), 0, ids, "normal").shape == (3, 10)
    with pytest.raises(ConfigError, match="uniform, normal"):
        per_sample_noise((1, 3), 0, ids[:1], "laplace")


def _bn_dropout_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                         nn.Linear(64, 3))


def test_frozen_eval_restores_modes_and_flags():
    model = _bn_dropout_model().train()
    model[0].weight.requires_grad_(False)
    with frozen_eval(model):
        assert not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad


def test_run_uses_eval_mode_restores_train_mode_and_fills_result():
    model = _bn_dropout_model().train()
    stats = model[1].running_mean.clone()
    atk = _AddConstant(model, value=0.3)
    x, y = torch.rand(4, 1, 6, 6) * 0.5, torch.tensor([0, 1, 2, 0])
    res = atk.run(x, y)
    assert atk.seen_training is False and atk.seen_grad is False
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert torch.equal(model[1].running_mean, stats)  # eval mode: batch norm statistics untouched
    assert torch.allclose(res.x_adv, x + 0.3)
    model.eval()
    with torch.no_grad():
        assert torch.equal(res.adv_pred, model(res.x_adv).argmax(1))
        assert torch.equal(res.clean_pred, model(x).argmax(1))
    assert torch.equal(res.success, res.adv_pred != y)
    assert res.queries.tolist() == [3, 3, 3, 3]  # perturb's 2 + the final evaluation
    assert torch.allclose(res.l2, torch.full((4,), 0.3 * 6)) and torch.allclose(res.linf, torch.full((4,), 0.3))


def test_run_validates_inputs():
    atk = _AddConstant(_bn_dropout_model())
    with pytest.raises(ShapeError):
        atk.run(torch.rand(2, 6, 6), torch.zeros(2))
    with pytest.raises(ConfigError, match=r"images must lie in \[0, 1\]"):
        atk.run(torch.rand(2, 1, 6, 6) + 1, torch.zeros(2))
    with pytest.raises(ConfigError, match=r"images must lie in \[0, 1\]"):  # the images' error first
        atk.run(torch.rand(2, 1, 6, 6) - 1, torch.zeros(2), mask=torch.full((6, 6), 2.0))
    with pytest.raises(ConfigError, match=r"mask values must lie in \[0, 1\]"):
        atk.run(torch.rand(2, 1, 6, 6), torch.zeros(2), mask=torch.full((6, 6), -0.5))
    reads: list[int] = []
    with counting(lambda: reads.append(1)):
        _prepared = atk._prepare(torch.rand(2, 1, 6, 6), torch.zeros(2), torch.ones(2, 6, 6), None, None)
    assert len(reads) == 1  # the images' and the mask's ranges in one host read
    reads.clear()
    with counting(lambda: reads.append(1)):
        atk.run(torch.rand(2, 1, 6, 6), torch.zeros(2), mask=torch.ones(2, 6, 6))
    assert len(reads) == 2  # the ranges, then the clean and adversarial logits' finiteness together


def test_non_finite_clean_or_adversarial_logits_are_one_line_errors_the_clean_ones_first():
    from advspatial.errors import ModelError

    atk = _AddConstant(_bn_dropout_model())
    nan = lambda x: torch.full((len(x), 3), torch.nan)  # noqa: E731
    atk._clean_logits = nan  # type: ignore[method-assign]
    atk._adversarial_logits = nan  # type: ignore[method-assign]
    with pytest.raises(ModelError, match=r"for 2 of 2 images of a batch \(rows 0, 1\)"):
        atk.run(torch.rand(2, 1, 6, 6), torch.zeros(2))
    atk = _AddConstant(_bn_dropout_model())
    atk._adversarial_logits = lambda x: torch.where(torch.arange(len(x))[:, None] == 1, torch.nan,  # type: ignore
                                                    torch.zeros(len(x), 3))
    with pytest.raises(ModelError, match=r"for 1 of 2 images of a batch \(rows 1\)"):
        atk.run(torch.rand(2, 1, 6, 6), torch.zeros(2))
    with pytest.raises(ShapeError, match="labels"):
        atk.run(torch.rand(2, 1, 6, 6), torch.zeros(3))
    with pytest.raises(ShapeError, match="sample_ids"):
        atk.run(torch.rand(2, 1, 6, 6), torch.zeros(2), sample_ids=torch.arange(3))


def test_margin_known_values():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 5.5]])
    assert margin(logits, torch.tensor([0, 1])).tolist() == [1.0, -0.5]


def test_attack_result_cat_and_rate():
    def one(n, ok):
        t = torch.zeros(n, dtype=torch.long)
        return AttackResult(torch.zeros(n, 1, 2, 2), torch.tensor(ok), t, t, t, None, t, t.float(), t.float(), t + 1)

    merged = AttackResult.cat([one(2, [True, False]), one(2, [True, True])])
    assert len(merged) == 4 and merged.success_rate == 0.75 and merged.target is None
    with pytest.raises(ValueError):
        AttackResult.cat([])


def test_registry_names_and_parameter_errors(tiny_cnn):
    # imported to register the attacks
    import advspatial.attacks.cw
    import advspatial.attacks.deepfool
    import advspatial.attacks.pgd  # noqa: F401

    names = set(list_attacks())
    assert {"fgsm", "pgd", "pgd-linf", "pgd-l2", "bim", "cw-l2", "deepfool"} <= names
    model = tiny_cnn(size=8)
    assert isinstance(make_attack("fgsm", model, eps=0.1), FGSM)
    bim = make_attack("bim", model, eps=0.1)
    assert bim.random_start is False and bim.norm == "linf"
    assert make_attack("pgd-l2", model).norm == "l2"
    with pytest.raises(ConfigError, match="random_start"):
        make_attack("bim", model, random_start=True)  # fixed by the registration
    with pytest.raises(ConfigError, match="valid"):
        make_attack("pgd", model, epsilon=0.1)
    with pytest.raises(ConfigError, match="unknown attack"):
        make_attack("nope", model)


def test_call_returns_run_images_without_the_extra_evaluations():
    model = _bn_dropout_model().eval()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    atk = _AddConstant(model, value=0.2)
    x, y = torch.rand(3, 1, 6, 6), torch.tensor([0, 1, 2])
    mask = torch.ones(6, 6)
    mask[:3] = 0
    direct = atk(x, y, mask=mask)
    assert len(calls) == 0  # __call__ runs only perturb (which does not evaluate this model)
    via_run = atk.run(x, y, mask=mask).x_adv
    assert len(calls) == 2  # run adds the clean and the adversarial predictions
    assert torch.equal(direct, via_run) and torch.equal(direct[..., :3, :], x[..., :3, :])
    with pytest.raises(ShapeError, match="sample_ids"):
        atk(x, y, sample_ids=torch.arange(2))


@pytest.mark.parametrize("method", ["run", "__call__"])
def test_an_attack_that_defines_run_or_call_is_refused(method):
    with pytest.raises(TypeError, match="final"):
        type("_Overrides", (Attack,), {method: lambda self, *a, **k: None})


def test_release_runs_after_run_and_call_even_on_an_error():
    class _Counted(_AddConstant):
        released = 0

        def _release(self):
            type(self).released += 1

    model, x, y = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
    attack = _Counted(model)
    attack.run(x, y)
    attack(x, y)
    assert _Counted.released == 2
    with pytest.raises(ShapeError):
        attack.run(x, torch.tensor([0, 1, 2]))  # refused before the attack starts: nothing kept, nothing released
    broken = _Counted(model)
    broken.perturb = lambda *a: (_ for _ in ()).throw(RuntimeError("step failed"))
    with pytest.raises(RuntimeError, match="step failed"):
        broken.run(x, y)
    assert _Counted.released == 3
