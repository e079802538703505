"""The AutoAttack-style ensemble: worst case per image (= the union of its components alone), the
breakdown, parameters reaching the components, EOT mode, mask and target pass-through, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial.attacks import base, make_attack
from advspatial.attacks.apgd import APGD, APGDL2
from advspatial.attacks.apgd_targeted import APGDT
from advspatial.attacks.base import Attack, AttackSpec
from advspatial.attacks.ensemble import AutoAttack, AutoAttackL2
from advspatial.attacks.square import Square, SquareL2
from advspatial.errors import ConfigError
from helpers import RowCounter, first_images

N = 32


def _data(subset, n: int = N):
    return first_images(subset, n)


def test_worst_case_per_image_is_the_union_of_the_components_alone(trained_tiny_cnn, fmnist_test_subset):
    """Per-sample seeding makes a component's result on an image independent of the other images it
    runs with, so the ensemble fools exactly the images some component alone fools (or the clean one)."""
    model = trained_tiny_cnn
    x, y = _data(fmnist_test_subset)
    ens = AutoAttack(model, eps=0.02, steps=10, n_restarts=2, n_queries=100,
                     components=("apgd-ce", "apgd-dlr", "square", "apgdt"))
    res = ens.run(x, y)
    alone = {
        "apgd-ce": APGD(model, eps=0.02, steps=10, n_restarts=2, loss="ce").run(x, y),
        "apgd-dlr": APGD(model, eps=0.02, steps=10, n_restarts=2, loss="dlr").run(x, y),
        "square": Square(model, eps=0.02, n_queries=100).run(x, y),
        "apgdt": APGDT(model, eps=0.02, steps=10).run(x, y),
    }
    clean = res.clean_pred != y
    union = clean | torch.stack([r.success for r in alone.values()]).any(0)
    assert torch.equal(res.success, union)
    assert all(res.success_rate >= r.success_rate for r in alone.values())
    assert res.success_rate > alone["apgd-ce"].success_rate  # the later components add something here

    assert list(ens.last_breakdown) == list(ens.components) and torch.equal(ens.last_clean_success, clean)
    hits = torch.stack([clean, *ens.last_breakdown.values()])
    assert (hits.sum(0) <= 1).all()                       # each image credited once
    assert torch.equal(hits.any(0), res.success)
    for name, hit in ens.last_breakdown.items():
        assert alone[name].success[hit].all()
        assert torch.allclose(res.x_adv[hit], alone[name].x_adv[hit], atol=1e-6)  # its first success is kept
    curve = ens.robust_accuracy_curve()
    assert list(curve) == ["clean", *ens.components]
    values = list(curve.values())
    assert values == sorted(values, reverse=True) and values[-1] == pytest.approx(1 - res.success_rate)
    assert res.linf.max() <= 0.02 + 1e-6


def test_queries_count_forward_passes(trained_tiny_cnn, fmnist_test_subset):
    x, y = _data(fmnist_test_subset, 16)
    counting = RowCounter(trained_tiny_cnn)
    res = AutoAttack(counting, eps=0.02, steps=4, n_restarts=2, n_queries=20).run(x, y)
    assert counting.rows == 16 + int(res.queries.sum())


def test_parameters_reach_the_components(tiny_cnn):
    ens = AutoAttack(tiny_cnn(size=8), components=("apgd-ce", "apgd-dlr", "apgdt", "square"))
    ce, dlr, apgdt, square = (ens.attacks[n] for n in ens.components)
    assert (ce.loss, ce.steps, ce.n_restarts, ce.eot_iter, ce.early_stop, ce.eps) == ("ce", 100, 5, 1, True, 8 / 255)
    assert dlr.loss == "dlr" and dlr.n_restarts == 5
    assert apgdt.n_restarts == 1 and apgdt.n_target_classes == 9  # target classes replace restarts
    assert (square.n_queries, square.n_restarts, square.early_stop) == (5000, 1, True)
    l2 = make_attack("autoattack-l2", tiny_cnn(size=8), eps=0.3)
    assert isinstance(l2, AutoAttackL2) and l2.components == ("apgd-l2", "apgd-l2-dlr", "square-l2")
    assert [type(a) for a in l2.attacks.values()] == [APGDL2, APGDL2, SquareL2]
    assert all(a.eps == 0.3 for a in l2.attacks.values())


def test_eot_mode_skips_square_and_never_stops_early(tiny_cnn):
    model = tiny_cnn(size=8)
    ens = AutoAttack(model, eps=0.05, steps=3, n_restarts=1, eot_iter=3)
    assert ens.active_components == ("apgd-ce", "apgd-dlr") and ens.skipped_components == ("square",)
    assert all(a.eot_iter == 3 and not a.early_stop for a in ens.attacks.values())
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    res = ens.run(x, torch.tensor([0, 3, 5, 9]))
    assert list(ens.last_breakdown) == ["apgd-ce", "apgd-dlr"] and res.linf.max() <= 0.05 + 1e-6


class _NoisyLinear(nn.Module):
    """A randomized model: logits of a fixed linear map of x plus fresh noise at every call."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 4)
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(x.flatten(1))
        return z + 0.05 * torch.randn(z.shape, generator=self.gen)


def test_eot_early_stop_stops_only_images_fooled_on_every_pass():
    torch.manual_seed(0)
    model = _NoisyLinear()
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = model.fc(x.flatten(1)).argmax(1)
    full = AutoAttack(model, eps=0.3, steps=20, n_restarts=2, eot_iter=3).run(x, y)
    early_attack = AutoAttack(model, eps=0.3, steps=20, n_restarts=2, eot_iter=3, eot_early_stop=True)
    assert all(a.early_stop for a in early_attack.attacks.values())
    early = early_attack.run(x, y)
    assert int(early.queries.sum()) < int(full.queries.sum())  # fooled images stop spending passes
    assert float(early.linf.max()) <= 0.3 + 1e-6
    with torch.no_grad():  # a stopped image was fooled on all 3 passes of its step: it stays fooled without noise
        clean_logits_adv = model.fc(early.x_adv.flatten(1)).argmax(1)
    assert float((clean_logits_adv != y).float().mean()) >= 0.5


def test_mask_and_target_pass_through(trained_tiny_cnn, fmnist_test_subset):
    x, y = _data(fmnist_test_subset, 16)
    mask = torch.zeros(28, 28)
    mask[6:22, 6:22] = 1.0
    ens = AutoAttack(trained_tiny_cnn, eps=0.1, steps=5, n_restarts=1, n_queries=30)
    res = ens.run(x, y, mask=mask)
    assert (res.x_adv - x)[:, 0][:, mask == 0].abs().max() == 0 and res.success.any()
    t = (y + 1) % 10
    res = ens.run(x, y, target=t)
    assert torch.equal(res.success, res.adv_pred == t) and res.success.any()
    assert torch.equal(ens.last_clean_success, res.clean_pred == t)


def test_l2_ensemble_stays_in_budget(trained_tiny_cnn, fmnist_test_subset):
    x, y = _data(fmnist_test_subset, 16)
    res = make_attack("autoattack-l2", trained_tiny_cnn, eps=0.5, steps=5, n_restarts=1, n_queries=30).run(x, y)
    assert res.l2.max() <= 0.5 + 1e-5 and res.success_rate > (res.clean_pred != y).float().mean()


class _Untargeted(Attack):
    """A stand-in eps-bounded L-inf attack with no targeted mode (returns x)."""

    supports_targeted = False

    def __init__(self, model: nn.Module, eps: float = 0.1, seed: int = 0) -> None:
        super().__init__(model, seed)
        self.eps = eps

    def perturb(self, x, y, mask, target, sample_ids):  # type: ignore[no-untyped-def]
        return x.clone(), torch.zeros(x.shape[0], dtype=torch.long)


def test_targeted_run_needs_targetable_components(tiny_cnn, monkeypatch):
    monkeypatch.setitem(base._REGISTRY, "untargeted-stub", AttackSpec("untargeted-stub", _Untargeted, {}, "stub"))
    ens = AutoAttack(tiny_cnn(size=8), eps=0.05, steps=2, components=("apgd-ce", "untargeted-stub"))
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    assert len(ens.run(x, y)) == 2
    with pytest.raises(ConfigError, match="untargeted-stub.*no targeted mode"):
        ens.run(x, y, target=torch.tensor([1, 2]))


@pytest.mark.parametrize("cls, components, match", [
    (AutoAttack, ("apgd-ce", "nope"), r"unknown component attack 'nope'; valid: .*apgd-ce"),
    (AutoAttack, ("apgd-ce", "square-l2"), r"'square-l2' is not an eps-bounded linf attack.*valid: .*square"),
    (AutoAttack, ("apgd-ce", "autoattack"), r"'autoattack' is an ensemble \(ensembles do not nest\)"),
    (AutoAttackL2, ("apgd-l2", "deepfool"), r"'deepfool' is not an eps-bounded l2 attack"),
    (AutoAttack, ("apgd-ce", "apgd-ce"), "must not repeat"),
    (AutoAttack, (), "at least one"),
])
def test_bad_components_raise_config_error(tiny_cnn, cls, components, match):
    with pytest.raises(ConfigError, match=match):
        cls(tiny_cnn(size=8), components=components)
    with pytest.raises(ConfigError, match="none of .* can run"):
        AutoAttack(tiny_cnn(size=8), components=("square",), eot_iter=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": 2.0}, r"eps=2.0 is out of range"), ({"steps": 0}, "steps=0"), ({"n_restarts": 0}, "n_restarts=0"),
    ({"n_queries": 0}, "n_queries=0"), ({"eot_iter": 0}, "eot_iter=0"),
])
def test_bad_parameters_raise_config_error(tiny_cnn, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_attack("autoattack", tiny_cnn(size=8), **kwargs)


@pytest.mark.parametrize("name", ["pgd", "autoattack"])
def test_an_attack_moved_to_another_model_runs_every_call_there_with_the_same_result(tiny_cnn, name):
    model = tiny_cnn(size=12)
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    y = model(x).argmax(1)
    attack = make_attack(name, model, eps=0.03, steps=4, seed=1, **({"n_queries": 20} if name == "autoattack" else {}))
    counting = RowCounter(model)
    moved = attack.on(counting)
    torch.testing.assert_close(moved(x, y, sample_ids=torch.arange(6)), attack(x, y, sample_ids=torch.arange(6)))
    assert counting.rows > 0 and moved.model is counting and attack.model is model
    if isinstance(moved, AutoAttack):
        assert all(a.model is counting for a in moved.attacks.values())
        assert all(a.model is model for a in attack.attacks.values())
