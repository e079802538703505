"""The adaptive evaluation: identity-BPDA vs the local gradient, gradient masking exposed, the convergence rule."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import CallCounter, grad_map, intensity_map
from torch import nn

from advspatial.attacks import make_attack
from advspatial.defence.adaptive import (
    GRADIENTS, AdaptiveBudget, Undefended, attack_defence, attack_undefended, ensemble_attack, eot_examples,
    gradients_of, pick_lowest, roi_attack_mask,
)
from advspatial.defence.neutralize import NeutralizedModel
from advspatial.defence.transforms import TransformDefence
from advspatial.errors import ConfigError
from advspatial.passes import PassLedger

SMALL = AdaptiveBudget(steps=10, restarts=1, queries=200, eot_iter=2, draws=3)


class _LinearModel(nn.Module):
    """z = [0, w.x - b, -10] on 1x8x8 images (a third class that never wins, so DLR is defined): every
    gradient attack breaks it when eps*|w|_1 exceeds the margin."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(1, 1, 8, 8, generator=gen))
        self.b = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1 = (x * self.w).flatten(1).sum(1) - self.b
        return torch.stack([torch.zeros_like(z1), z1, torch.full_like(z1, -10.0)], 1)


def _images(n: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_identity_bpda_through_a_no_op_defence_is_the_undefended_attack(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    y = model(x).argmax(1)
    ids = torch.arange(30, 36)
    no_op = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.0)  # neutralizes nothing
    defended = attack_defence(no_op, x, y, 0.05, SMALL, sample_ids=ids, seed=4, gradients=("identity",))
    plain = attack_undefended(model, x, y, 0.05, SMALL, sample_ids=ids, seed=4)
    assert torch.equal(defended.correct["identity"], plain.correct["white-box"])
    assert torch.allclose(defended.x_adv, plain.x_adv)
    assert float(plain.correct["white-box"].mean()) < 1.0  # the attack did something


def test_gradient_masking_defence_beats_plain_pgd_but_not_bpda_or_square():
    model = _LinearModel()
    x = _images(32)
    with torch.no_grad():
        model.b.fill_(float((x * model.w).flatten(1).sum(1).median()))
    quantized = TransformDefence(model, "jpeg", 40)  # rounding: a zero local gradient
    with torch.no_grad():
        y = quantized(x).argmax(1)
    eps = 0.15
    pgd = make_attack("pgd", quantized, eps=eps, alpha=eps / 4, steps=20, random_start=False)
    x_pgd = pgd(x, y)
    with torch.no_grad():
        pgd_acc = float((quantized(x_pgd).argmax(1) == y).float().mean())
    assert pgd_acc == 1.0  # masked: the local gradient is 0, plain PGD does not move
    ids = torch.arange(32)
    bpda = attack_defence(quantized, x, y, eps, SMALL, sample_ids=ids, seed=0, gradients=("identity",))
    assert float(bpda.correct["identity"].mean()) <= 0.1
    square = make_attack("square", quantized, eps=eps, n_queries=300, seed=0)
    x_square = square(x, y, sample_ids=ids)
    with torch.no_grad():
        square_acc = float((quantized(x_square).argmax(1) == y).float().mean())
    assert square_acc <= 0.25  # the gradient-free attack needs no gradient at all
    local = attack_defence(quantized, x, y, eps, AdaptiveBudget(steps=10, restarts=1, queries=300), sample_ids=ids,
                           seed=0, gradients=("local",))
    assert float(local.correct["worst"].mean()) <= 0.25  # in the ensemble, Square exposes the masking too


def test_worst_case_is_the_per_image_minimum_over_gradients(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    y = model(x).argmax(1)
    defence = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2, fill="zero")
    out = attack_defence(defence, x, y, 0.03, SMALL, sample_ids=torch.arange(8), seed=1)
    assert set(out.correct) == {"identity", "local", "worst"}
    # Square runs once on what both gradients left standing: it can only lower the per-image minimum
    assert bool((out.correct["worst"] <= torch.minimum(out.correct["identity"], out.correct["local"])).all())
    with torch.no_grad():
        rescored = (defence(out.x_adv).argmax(1) == y).float()
    assert torch.equal(rescored, out.correct["worst"])  # x_adv holds the worst case's examples


def _images_sent(model: nn.Module, run):  # type: ignore[no-untyped-def]
    """(run's value, images sent forward through ``model`` while it ran)."""
    sent = [0]
    handle = model.register_forward_hook(lambda _m, inputs, _o: sent.__setitem__(0, sent[0] + inputs[0].shape[0]))
    try:
        return run(), sent[0]
    finally:
        handle.remove()


@pytest.mark.parametrize("case", ["masked", "neutralized"])
def test_worst_case_alone_runs_later_gradients_on_standing_images_with_the_same_result(case, tiny_cnn):
    if case == "masked":  # BPDA breaks every image at once; the local gradient is zero
        model: nn.Module = _LinearModel()
        x = _images(16)
        with torch.no_grad():
            model.b.fill_(float((x * model.w).flatten(1).sum(1).median()))
        defence: nn.Module = TransformDefence(model, "jpeg", 40)
        eps = 0.15
    else:  # some images stand after the first gradient, so the second runs on a subset
        model = tiny_cnn(size=12)
        x = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(5))
        defence = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2, fill="zero")
        eps = 0.02
    with torch.no_grad():
        y = defence(x).argmax(1)
    ids = torch.arange(40, 56)
    full, full_sent = _images_sent(model, lambda: attack_defence(defence, x, y, eps, SMALL, sample_ids=ids, seed=2))
    worst, worst_sent = _images_sent(model, lambda: attack_defence(defence, x, y, eps, SMALL, sample_ids=ids, seed=2,
                                                                    per_gradient=False))
    assert set(worst.correct) == {"worst"}
    assert torch.equal(worst.correct["worst"], full.correct["worst"])
    assert torch.equal(worst.x_adv, full.x_adv)
    standing = full.correct["identity"] > 0
    if case == "masked":
        assert not bool(standing.any()) and worst_sent < full_sent / 2
    else:
        assert 0 < int(standing.sum()) < len(x) and worst_sent < full_sent


class _SteadyDraws(CallCounter):
    """A "randomized" defence whose draws never differ (every draw is the model): its stacked EOT attacks must give
    each loss's own APGD. Counts its calls."""

    randomized = True

    def forward_draws(self, x: torch.Tensor, k: int) -> torch.Tensor:
        self.calls += 1
        return self.model(x).repeat(k, 1, 1).view(k, x.shape[0], -1)

    def with_backward(self, backward: str) -> _SteadyDraws:
        return self


@pytest.mark.parametrize("eot_iter", [1, 3])
def test_eot_losses_go_as_one_stacked_attack_with_each_loss_own_examples(tiny_cnn, eot_iter):
    """APGD-CE and APGD-DLR through a randomized defence: each loss's own APGD, in about half the calls; an image
    every one of the attacker's draws misclassifies keeps x."""
    model = tiny_cnn(size=12)
    x = torch.rand(10, 1, 12, 12, generator=torch.Generator().manual_seed(8))
    y = model(x).argmax(1)
    y[:2] = (y[:2] + 1) % 10  # two images the defence misclassifies on every draw
    ids, mask = torch.arange(70, 80), torch.ones(10, 1, 12, 12)
    defence = _SteadyDraws(model)
    budget = AdaptiveBudget(steps=6, restarts=1, eot_iter=eot_iter, draws=2)
    stacked = eot_examples(defence, "local", x, y, 0.03, budget, ("apgd-ce", "apgd-dlr"), seed=3, mask=mask,
                           sample_ids=ids)
    stacked_calls, defence.calls = defence.calls, 0
    per_draw = {"early_stop": False} if eot_iter > 1 else {}
    alone = [make_attack(name, defence, eps=0.03, steps=6, n_restarts=1, eot_iter=eot_iter, seed=3, **per_draw)(
        x[2:], y[2:], mask=mask[2:], sample_ids=ids[2:]) for name in ("apgd-ce", "apgd-dlr")]
    for mine, theirs in zip(stacked, alone, strict=True):
        assert torch.equal(mine[:2], x[:2])
        torch.testing.assert_close(mine[2:], theirs, atol=1e-6, rtol=0)
    assert not torch.equal(stacked[0], stacked[1])
    assert stacked_calls < 0.6 * defence.calls + 2


def test_eot_attacks_an_image_some_draws_still_classify_right(tiny_cnn, monkeypatch):
    """A randomized defence's one misclassifying draw breaks nothing: only an image all of the attacker's draws
    misclassify is left out (kept as x)."""
    from advspatial.defence import adaptive

    model = tiny_cnn(size=12)
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(9))
    y = model(x).argmax(1)
    monkeypatch.setattr(adaptive, "attacker_share", lambda *_a, **_k: torch.tensor([0.0, 0.05, 1.0]))
    budget = AdaptiveBudget(steps=4, restarts=1, eot_iter=3, draws=2)
    ce, _ = eot_examples(_SteadyDraws(model), "local", x, y, 0.03, budget, ("apgd-ce", "apgd-dlr"), seed=0,
                         mask=None, sample_ids=torch.arange(3))
    assert torch.equal(ce[0], x[0])
    assert not torch.equal(ce[1], x[1]) and not torch.equal(ce[2], x[2])


def test_randomized_control_is_attacked_with_eot_and_scored_on_fresh_draws(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(6))
    y = model(x).argmax(1)
    control = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2, mode="random")
    assert control.randomized
    attack = ensemble_attack(control, 0.03, SMALL, randomized=True, seed=0)
    assert attack.eot_iter == SMALL.eot_iter and not any(c.startswith("square") for c in attack.components)
    out = attack_defence(control, x, y, 0.03, SMALL, sample_ids=torch.arange(4), seed=0)
    shares = out.correct["worst"]
    assert bool(((shares * SMALL.draws).round() == shares * SMALL.draws).all())  # multiples of 1/draws
    assert not ensemble_attack(model, 0.03, SMALL, randomized=False, seed=0).eot_iter > 1


def test_roi_mask_is_the_clean_top_fraction():
    x = torch.rand(2, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    mask = roi_attack_mask(x, intensity_map, 0.2)
    assert mask.shape == (2, 1, 10, 10) and torch.equal(mask.flatten(1).sum(1), torch.tensor([20.0, 20.0]))
    top = x[:, 0].flatten(1).topk(20).values[:, -1]
    assert bool((x[:, 0][mask[:, 0] > 0].view(2, -1) >= top[:, None]).all())


def test_budget_validates():
    with pytest.raises(ConfigError):
        AdaptiveBudget(steps=0)
    with pytest.raises(ConfigError):
        AdaptiveBudget(components=())
    assert not math.isnan(AdaptiveBudget().as_dict()["steps"])


class _Sequential(nn.Module):
    """A randomized defence with its batched ``forward_draws`` hidden: EOT one pass at a time."""

    def __init__(self, defence: nn.Module) -> None:
        super().__init__()
        self.defence = defence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.defence(x)


@pytest.mark.parametrize("kind", ["control", "noise"])
def test_batched_eot_is_the_same_attack_as_one_pass_at_a_time(tiny_cnn, kind):
    model = tiny_cnn(size=12)
    x = torch.rand(5, 1, 12, 12, generator=torch.Generator().manual_seed(9))
    y = model(x).argmax(1)
    make = (lambda: NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2, mode="random")) \
        if kind == "control" else (lambda: TransformDefence(model, "noise", 0.2))
    ids = torch.arange(5)
    kw = dict(eps=0.05, steps=6, eot_iter=5, early_stop=False, seed=2)
    batched = make_attack("apgd-ce", make(), **kw)(x, y, sample_ids=ids)
    one_by_one = make_attack("apgd-ce", _Sequential(make()), **kw)(x, y, sample_ids=ids)
    assert torch.allclose(batched, one_by_one, atol=1e-6)
    assert not torch.equal(batched, x)  # the attack moved


def test_forward_draws_equals_successive_forward_passes(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(10))
    a = NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.3, mode="random")
    b = a.variant()
    with torch.no_grad():
        stacked = a.forward_draws(x, 4)
        single = torch.stack([b(x) for _ in range(4)])
    assert torch.allclose(stacked, single, atol=1e-6) and a.calls == b.calls == 4
    assert not torch.allclose(stacked[0], stacked[1])  # the draws differ


def test_pick_lowest_takes_the_attackers_lowest_share_first_on_ties():
    a, b = torch.zeros(3, 1, 2, 2), torch.ones(3, 1, 2, 2)
    picked = pick_lowest([(a, torch.tensor([0.5, 0.2, 0.3])), (b, torch.tensor([0.4, 0.2, 0.9]))])
    assert picked[0].eq(1).all() and picked[1].eq(0).all() and picked[2].eq(0).all()


def test_randomized_defence_gets_both_losses_on_every_image_and_a_fresh_score(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(11))
    y = model(x).argmax(1)
    noise = TransformDefence(model, "noise", 0.1)
    budget = AdaptiveBudget(steps=5, eot_iter=3, draws=4, eot_gradients=("local", "identity"))
    out = attack_defence(noise, x, y, 0.1, budget, sample_ids=torch.arange(6), seed=0)
    assert set(out.correct) == {"identity", "local", "worst"}
    assert (out.x_adv - x).abs().max() <= 0.1 + 1e-6
    # the attacker's pick over all candidates is never worse for it than its pick within one gradient,
    # as scored on its own draws; scored on fresh draws it is a share of the 4 draws
    assert bool(((out.correct["worst"] * 4).round() == out.correct["worst"] * 4).all())
    assert float(out.correct["worst"].mean()) < 1.0
    assert not AdaptiveBudget(eot_iter=4).full_eot and AdaptiveBudget().full_eot
    assert not AdaptiveBudget(eot_early_stop=True).full_eot


def test_a_randomized_defence_is_attacked_through_its_eot_gradients_and_a_deterministic_one_through_both(tiny_cnn):
    model = tiny_cnn(size=12)
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    y = model(x).argmax(1)
    noise, blur = TransformDefence(model, "noise", 0.1), TransformDefence(model, "blur", 1.0)
    assert gradients_of(noise) == ("local",) and gradients_of(blur) == GRADIENTS
    assert gradients_of(Undefended(model)) == ("identity",)
    assert gradients_of(noise, AdaptiveBudget(eot_gradients=["identity"])) == ("identity",)
    out = attack_defence(noise, x, y, 0.1, AdaptiveBudget(steps=3, eot_iter=2, draws=2), sample_ids=torch.arange(4),
                         seed=0)
    assert set(out.correct) == {"local", "worst"}
    with pytest.raises(ConfigError, match="gradient 'bpda' unknown"):
        AdaptiveBudget(eot_gradients=("bpda",))


def test_attack_randomized_called_directly_takes_the_budgets_eot_gradients(tiny_cnn):
    from advspatial.defence.adaptive import attack_randomized

    model = tiny_cnn(size=12)
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(4))
    y = model(x).argmax(1)
    noise = TransformDefence(model, "noise", 0.1)
    budget = AdaptiveBudget(steps=2, eot_iter=2, draws=2, eot_gradients=("identity",))
    out = attack_randomized(noise, x, y, 0.1, budget, sample_ids=torch.arange(3), seed=0)
    assert set(out.correct) == {"identity", "worst"}


def test_the_attackers_own_draws_are_scored_a_bounded_pass_at_a_time_with_the_same_draws(monkeypatch):
    """attacker_share over 50 draws of a batch: passes of at most SHARE_IMAGES images, the same shares as one call."""
    from advspatial.defence import adaptive

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x, y = _images(6), torch.tensor([0, 1, 2, 0, 1, 2])
    sizes: list[int] = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda z: sizes.append(len(z)) or forward(z))
    whole = adaptive.attacker_share(TransformDefence(model, "noise", 0.5, seed=1), x, y, 50, torch.arange(6))
    assert sizes == [300]                                      # 50 draws x 6 images fit the bound at 8x8
    sizes.clear()
    monkeypatch.setattr(adaptive, "SHARE_IMAGES", 2)           # 2 at 28x28 = 24 of 8x8 per pass: 4 draws of 6
    ledger = PassLedger()
    ledger.watch(model)
    chunked = adaptive.attacker_share(TransformDefence(model, "noise", 0.5, seed=1), x, y, 50, torch.arange(6))
    assert max(sizes) == 24 and sum(sizes) == 300 and len(sizes) == 13
    assert ledger.outside.rounds == 1                          # the draws' passes are one round
    assert torch.equal(whole, chunked) and 0.0 < float(whole.mean()) < 1.0


@pytest.mark.parametrize("case", ["neutralized", "jpeg"])
def test_every_gradient_and_loss_as_one_run_gives_each_gradients_ensemble_in_fewer_rounds(case, tiny_cnn):
    """The deterministic defence's gradient attacks (APGD-CE then APGD-DLR, through BPDA and the local gradient)
    as one stacked run: per gradient the same images broken and the same worst case as the ensemble run through
    each gradient alone, in fewer rounds."""
    from advspatial.defence.adaptive import correct_share, keep_worse

    model = tiny_cnn(size=12)
    x = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(7))
    defence: nn.Module = {"neutralized": lambda: NeutralizedModel(model, intensity_map, grad_map(model), 0.2),
                          "jpeg": lambda: TransformDefence(model, "jpeg", 60)}[case]()
    with torch.no_grad():
        y = defence(x).argmax(1)
    ids, eps = torch.arange(60, 76), 0.02
    budget = AdaptiveBudget(steps=8, restarts=2, components=("apgd-ce", "apgd-dlr"))
    ledger = PassLedger()
    ledger.watch(model)
    with ledger.stage("stacked"):
        out = attack_defence(defence, x, y, eps, budget, sample_ids=ids, seed=2)
    with ledger.stage("one gradient at a time"):
        alone = {g: ensemble_attack(defence.with_backward(g), eps, budget, randomized=False, seed=2,
                                    components=budget.components)(x, y, sample_ids=ids)
                 for g in gradients_of(defence)}
    worst, worst_x = torch.full((16,), math.inf), x.clone()
    for g, x_adv in alone.items():
        found = correct_share(defence, x_adv, y, 1, ids)
        assert torch.equal(out.correct[g], found), g
        worst, worst_x = keep_worse(worst, worst_x, torch.arange(16), found, x_adv)
    assert torch.equal(out.correct["worst"], worst)
    torch.testing.assert_close(out.x_adv, worst_x, atol=1e-6, rtol=0)
    assert 0 < float(worst.mean()) < 1  # some images broken, some standing: every restart and loss ran
    assert ledger.by_stage["stacked"].rounds < 0.7 * ledger.by_stage["one gradient at a time"].rounds


@pytest.mark.parametrize("kind", ["noise", "random-control"])
def test_eot_examples_on_a_randomized_defence_do_not_depend_on_the_batch(tiny_cnn, kind: str) -> None:
    """The same 8 images (the same sample ids) attacked as one batch and as two batches of 4: the same examples and
    shares. The attacker's draws are keyed by each image's id, not its row (keyed by rows, the examples moved by
    2 eps between the two batchings)."""
    from advspatial.defence.adaptive import attack_randomized

    model = tiny_cnn(size=8)
    x = _images(8, seed=3)
    y, ids = model(x).argmax(1), torch.arange(100, 108)
    budget = AdaptiveBudget(steps=5, restarts=1, queries=20, eot_iter=3, draws=4)

    def attacked(rows: slice):
        defence = (TransformDefence(model, "noise", 0.1, seed=0) if kind == "noise" else
                   NeutralizedModel(model, intensity_map, grad_map(model), fraction=0.2, fill="zero", mode="random"))
        return attack_randomized(defence, x[rows], y[rows], 0.03, budget, sample_ids=ids[rows], seed=0)

    whole, halves = attacked(slice(0, 8)), [attacked(slice(0, 4)), attacked(slice(4, 8))]
    assert torch.allclose(whole.x_adv, torch.cat([h.x_adv for h in halves]), atol=1e-6)
    for g in whole.correct:
        assert torch.equal(whole.correct[g], torch.cat([h.correct[g] for h in halves]))


@pytest.mark.parametrize("name", ["square", "apgd-ce"])
def test_an_attack_on_a_randomized_defence_does_not_depend_on_the_batch(tiny_cnn, name: str) -> None:
    """Square's queries and APGD's EOT steps on the noise defence: each image's draws follow its sample id, so one
    batch of 8 and two of 4 give the same examples, also where an early stop drops the rows already broken."""
    model = tiny_cnn(size=8)
    x = _images(8, seed=5)
    y, ids = model(x).argmax(1), torch.arange(40, 48)
    params = {"n_queries": 40} if name == "square" else {"steps": 6, "eot_iter": 2}

    def attacked(rows: slice) -> torch.Tensor:
        defence = TransformDefence(model, "noise", 0.2, seed=0)
        return make_attack(name, defence, eps=0.05, seed=1, **params)(x[rows], y[rows], sample_ids=ids[rows])

    assert torch.allclose(attacked(slice(0, 8)), torch.cat([attacked(slice(0, 4)), attacked(slice(4, 8))]),
                          atol=1e-6)
