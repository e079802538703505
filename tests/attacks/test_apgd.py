"""APGD (L-inf, L2) and APGD-T: the DLR losses and the checkpoint schedule against torchattacks and
the paper, success against torchattacks at equal budgets, a known answer, mask, batch independence
with restarts, early stop, EOT, query counts, registry and parameter errors."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from advspatial.attacks import make_attack
from advspatial.attacks.apgd import APGD, APGDL2, checkpoints
from advspatial.attacks.apgd_targeted import APGDT
from advspatial.attacks.gradients import dlr_loss, dlr_loss_targeted
from advspatial.attacks.base import margin
from advspatial.errors import ConfigError
from attack_checks import (
    ImageByImage, assert_acts_only_inside_masks, assert_batch_equals_each_alone,
    assert_eps_zero_returns_x_and_misclassified_stay,
)
from helpers import RowCounter, first_images, fooled

N = 32


def _data(subset, n: int = N):
    return first_images(subset, n)


def _linear(classes: int, dim: int = 16, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, classes)).eval()


# -- losses and schedule --------------------------------------------------------------

def test_dlr_losses_match_torchattacks():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(256, 10, generator=g) * 3
    y = torch.randint(0, 10, (256,), generator=g)
    t = (y + torch.randint(1, 10, (256,), generator=g)) % 10
    logits[:64].scatter_(1, y[:64, None], 20.0)  # the label on top: DLR's other branch
    ref, ref_t = torchattacks.APGD(nn.Linear(1, 1)), torchattacks.APGDT(nn.Linear(1, 1))
    torch.testing.assert_close(dlr_loss(logits, y), ref.dlr_loss(logits, y), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(dlr_loss_targeted(logits, y, t), ref_t.dlr_loss_targeted(logits, y, t),
                               atol=1e-6, rtol=1e-6)


def test_checkpoints_follow_the_paper_formula():
    """p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06):
    0, .22, .41 (+.19), .57 (+.16), .70 (+.13), .80 (+.10), .87 (+.07), .93 (+.06), .99 (+.06), 1.05 > 1;
    w_j = ceil(p_j * steps)."""
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    # steps = 10: ceil(2.2, 4.1, 5.7, 7.0, 8.0, 8.7, 9.3, 9.9) = 3, 5, 6, 7, 8, 9, 10, 10 (repeat dropped)
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [0, 1]


@pytest.mark.parametrize("loss, classes, match", [("dlr", 2, "at least 3 classes"), ("dlr", 3, "at least 4 classes")])
def test_dlr_needs_enough_classes(loss, classes, match):
    x, y = torch.full((2, 1, 4, 4), 0.5), torch.tensor([0, 1])
    target = torch.tensor([2, 0]) if classes == 3 else None
    with pytest.raises(ConfigError, match=match):
        APGD(_linear(classes), eps=0.1, steps=2, loss=loss).run(x, y, target=target)


# -- against torchattacks at equal budgets ---------------------------------------------

@pytest.mark.parametrize("kind", ["ce", "dlr", "l2", "apgdt"])
def test_success_at_least_torchattacks(trained_tiny_cnn, fmnist_test_subset, kind):
    """Same eps, steps, restarts. The two draw different random starts, and we follow the paper where
    the reference deviates (condition 2 at the first checkpoint, '<' in condition 1), so one borderline
    image of 32 may go either way: slack 1/32. Observed: equal rates (e.g. 13/32 at eps=0.02)."""
    model = trained_tiny_cnn
    x, y = _data(fmnist_test_subset)
    if kind == "l2":
        eps, ours = 0.3, APGDL2(model, eps=0.3, steps=20)
        ref = torchattacks.APGD(model, norm="L2", eps=0.3, steps=20, n_restarts=1, loss="ce", seed=0)
    elif kind == "apgdt":
        eps, ours = 0.02, APGDT(model, eps=0.02, steps=10)
        ref = torchattacks.APGDT(model, eps=0.02, steps=10, n_restarts=1, seed=0, n_classes=10)
    else:
        eps, ours = 0.02, APGD(model, eps=0.02, steps=20, loss=kind)
        ref = torchattacks.APGD(model, norm="Linf", eps=0.02, steps=20, n_restarts=1, loss=kind, seed=0)
    res = ours.run(x, y)
    ref_rate = fooled(model, ref(x, y), y).float().mean().item()
    clean_error = (res.clean_pred != y).float().mean().item()
    assert res.success_rate >= ref_rate - 1 / N
    assert res.success_rate > clean_error + 2 / N  # the attack does fool correctly classified images
    assert torch.equal(res.success, fooled(model, res.x_adv, y))
    norms = res.l2 if kind == "l2" else res.linf
    assert norms.max() <= eps + 1e-6


def test_targeted_apgd_hits_the_target(trained_tiny_cnn, fmnist_test_subset):
    x, y = _data(fmnist_test_subset)
    t = (y + 1) % 10
    for atk in (APGD(trained_tiny_cnn, eps=0.2, steps=20), APGDT(trained_tiny_cnn, eps=0.2, steps=20)):
        res = atk.run(x, y, target=t)
        assert torch.equal(res.success, res.adv_pred == t)
        assert res.success_rate > 0.6 and res.linf.max() <= 0.2 + 1e-6


def test_linf_known_answer_on_a_linear_model():
    """3 linear classes, class 0 far ahead: the margin gradient is constant, sign(w_j - w_0) with j the
    runner-up; the first step (2*eps from the random start) reaches the corner and momentum keeps it there."""
    model = _linear(3)
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([50.0, 0.0, -50.0]))
    w = model[1].weight.detach()
    x, y = torch.full((4, 1, 4, 4), 0.5), torch.zeros(4, dtype=torch.long)
    x_adv = APGD(model, eps=0.05, steps=5, loss="margin")(x, y)
    expected = x + 0.05 * (w[1] - w[0]).sign().view(1, 1, 4, 4)
    assert torch.allclose(x_adv, expected, atol=1e-7)


# -- mask, batch independence, early stop ------------------------------------------------

@pytest.mark.parametrize("cls, eps", [(APGD, 0.1), (APGDL2, 1.0), (APGDT, 0.1)])
def test_mask_keeps_the_perturbation_exactly_zero_outside(trained_tiny_cnn, fmnist_test_subset, cls, eps):
    x, y = _data(fmnist_test_subset, 16)
    attack = cls(trained_tiny_cnn, eps=eps, steps=5, early_stop=False)
    for res in assert_acts_only_inside_masks(attack, x, y, slice(8, 20), slice(6, 22)):
        norms = res.l2 if cls is APGDL2 else res.linf
        assert norms.max() <= eps + 1e-6


@pytest.mark.parametrize("cls", [APGD, APGDL2])
def test_channel_mask_on_colour_images(tiny_cnn, cls):
    model = tiny_cnn(in_channels=3, size=12)
    x, y = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 3, 5, 9])
    res = cls(model, eps=0.05, steps=4, early_stop=False).run(x, y, mask=torch.tensor([0.0, 1.0, 0.5]).view(1, 3, 1, 1))
    delta = res.x_adv - x
    assert delta[:, 0].abs().max() == 0 and delta[:, 1].abs().max() > 0 and delta[:, 2].abs().max() > 0


@pytest.mark.parametrize("name, build", [
    ("linf-restarts", lambda m: APGD(m, eps=0.012, steps=8, n_restarts=3, seed=5)),
    ("linf-no-early-stop", lambda m: APGD(m, eps=0.012, steps=8, n_restarts=2, loss="dlr", early_stop=False)),
    ("l2-restarts", lambda m: APGDL2(m, eps=0.15, steps=8, n_restarts=3)),
    ("apgdt", lambda m: APGDT(m, eps=0.012, steps=5, n_target_classes=3)),
])
def test_batch_equals_each_image_alone(trained_tiny_cnn, fmnist_test_subset, name, build):
    x, y = _data(fmnist_test_subset, 12)
    ids = torch.arange(100, 112)
    assert_batch_equals_each_alone(build(ImageByImage(trained_tiny_cnn)), x, y, ids)


def test_restarts_run_only_on_unfooled_images(trained_tiny_cnn, fmnist_test_subset):
    x, y = _data(fmnist_test_subset, 16)
    res = APGD(trained_tiny_cnn, eps=0.012, steps=8, n_restarts=3).run(x, y)
    per_run = 8 + 1  # start + steps
    unfooled = ~res.success
    assert unfooled.any() and res.success.any()
    assert (res.queries[unfooled] == 1 + 3 * per_run + 1).all()  # clean pass, 3 runs, run()'s final pass
    assert (res.queries[res.success] < 1 + 3 * per_run + 1).all()


def test_eps_zero_returns_x_and_a_misclassified_image_stays(trained_tiny_cnn, fmnist_test_subset):
    x, y = _data(fmnist_test_subset)
    for cls in (APGD, APGDL2, APGDT):
        assert_eps_zero_returns_x_and_misclassified_stay(lambda eps, cls=cls: cls(trained_tiny_cnn, eps=eps, steps=3),
                                                         x, y)


def test_without_early_stop_every_step_runs_and_the_best_adversarial_is_kept(trained_tiny_cnn, fmnist_test_subset):
    """Both follow the same iterates until the first adversarial one: the same images are fooled,
    and without early stop the kept point has at least the loss of the first adversarial iterate."""
    x, y = _data(fmnist_test_subset)
    keep = trained_tiny_cnn(x).argmax(1) == y
    x, y = x[keep], y[keep]
    kwargs = dict(eps=0.02, steps=10, loss="margin")
    early = APGD(trained_tiny_cnn, **kwargs).run(x, y)
    full = APGD(trained_tiny_cnn, early_stop=False, **kwargs).run(x, y)
    assert torch.equal(early.success, full.success) and early.success.any()
    assert (full.queries == 1 + 10 + 1).all()  # start, 10 steps, run()'s final pass
    assert (early.queries <= 1 + 1 + 10 + 1).all() and (early.queries[early.success] < 12).any()  # + clean pass
    with torch.no_grad():
        loss_early = -margin(trained_tiny_cnn(early.x_adv), y)
        loss_full = -margin(trained_tiny_cnn(full.x_adv), y)
    assert (loss_full >= loss_early - 1e-5).all()


def test_eot_averages_gradients_and_counts_each_pass(trained_tiny_cnn, fmnist_test_subset):
    """On a deterministic model the mean of 2 equal gradients is the gradient: the same iterates,
    twice the queries (apart from the clean pass and run()'s final pass)."""
    x, y = _data(fmnist_test_subset, 16)
    one = APGD(trained_tiny_cnn, eps=0.02, steps=6, n_restarts=2).run(x, y)
    two = APGD(trained_tiny_cnn, eps=0.02, steps=6, n_restarts=2, eot_iter=2).run(x, y)
    assert torch.equal(one.x_adv, two.x_adv)
    assert torch.equal(two.queries - 2, 2 * (one.queries - 2))


@pytest.mark.parametrize("build", [
    lambda m: APGD(m, eps=0.02, steps=4, n_restarts=2, eot_iter=2),
    lambda m: APGDT(m, eps=0.02, steps=3, n_target_classes=2, early_stop=False),
])
def test_queries_count_forward_passes(trained_tiny_cnn, fmnist_test_subset, build):
    x, y = _data(fmnist_test_subset, 16)
    counting = RowCounter(trained_tiny_cnn)
    res = build(counting).run(x, y)
    assert counting.rows == 16 + int(res.queries.sum())  # run()'s uncounted clean pass + the rest


def test_randomized_model_with_eot_stays_in_budget(tiny_cnn):
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_cnn(size=8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x + 0.05 * torch.randn_like(x))

    x, y = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 3, 5, 9])
    res = APGD(Noisy(), eps=0.03, steps=4, eot_iter=3, early_stop=False).run(x, y)
    assert res.linf.max() <= 0.03 + 1e-6 and (res.queries == 3 * 5 + 1).all()


# -- registry and parameters --------------------------------------------------------------

def test_registry_builds_the_variants(tiny_cnn):
    model = tiny_cnn(size=8)
    assert make_attack("apgd-ce", model, eps=0.1, steps=5).loss == "ce"
    assert make_attack("apgd-dlr", model, steps=5).loss == "dlr"
    l2 = make_attack("apgd-l2", model)
    assert isinstance(l2, APGDL2) and l2.eps == 0.5 and l2.norm == "l2"
    assert make_attack("apgd-l2-dlr", model).loss == "dlr"
    apgdt = make_attack("apgdt", model, n_target_classes=3)
    assert isinstance(apgdt, APGDT) and apgdt.loss == "dlr" and apgdt.n_target_classes == 3
    with pytest.raises(ConfigError, match="no parameter"):
        make_attack("apgd-ce", model, loss="dlr")


@pytest.mark.parametrize("cls, kwargs, match", [
    (APGD, {"eps": 1.5}, r"eps=1.5 is out of range; valid: \[0, 1\]"),
    (APGD, {"steps": 0}, r"steps=0 is out of range"),
    (APGD, {"n_restarts": 0}, r"n_restarts=0 is out of range"),
    (APGD, {"rho": 0.0}, r"rho=0.0 is out of range; valid: \(0, 1\]"),
    (APGD, {"eot_iter": 0}, r"eot_iter=0 is out of range"),
    (APGD, {"loss": "l1"}, "ce, dlr, margin"),
    (APGDL2, {"eps": -0.1}, r"valid: \[0, inf\]"),
    (APGDT, {"n_target_classes": 0}, r"n_target_classes=0 is out of range"),
])
def test_bad_parameters_raise_config_error(tiny_cnn, cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(tiny_cnn(size=8), **kwargs)


def test_checkpoint_halves_on_either_condition_and_restarts_from_the_best_point(tiny_cnn):
    """Four images at a checkpoint with a window of 10 steps (rho = 0.75: fewer than 7.5 increases stall):
    0: 3 increases -> condition 1;  1: 9 increases, f_max grew -> keep;
    2: 9 increases, f_max unchanged, not halved last time -> condition 2;
    3: 9 increases, f_max unchanged but halved last time -> keep."""
    from advspatial.attacks.apgd import _Run

    atk = APGD(tiny_cnn(size=8), eps=0.1, steps=10)
    n = 4
    cur, best_x = torch.zeros(n, 1, 2, 2), torch.ones(n, 1, 2, 2)
    st = _Run(
        idx=torch.arange(n), ids=torch.arange(n), x=cur.clone(), y=torch.zeros(n, dtype=torch.long), loss_target=None,
        goal=None, active=torch.ones(n, dtype=torch.bool),
        mask=None, cur=cur, prev=cur.clone(), grad=torch.zeros_like(cur), loss=torch.zeros(n),
        best_x=best_x, best_grad=torch.ones_like(cur), best_loss=torch.tensor([1.0, 2.0, 1.0, 1.0]),
        step=torch.full((n,), 0.2), n_up=torch.tensor([3, 9, 9, 9]), last_best=torch.ones(n),
        reduced=torch.tensor([False, False, False, True]),
    )
    atk._checkpoint(st, 10)
    halved = torch.tensor([True, False, True, False])
    assert torch.equal(st.step, torch.where(halved, 0.1, 0.2))
    assert torch.equal(st.cur[:, 0, 0, 0], halved.float()) and torch.equal(st.grad[:, 0, 0, 0], halved.float())
    assert torch.equal(st.reduced, halved) and torch.equal(st.last_best, st.best_loss)
    assert (st.n_up == 0).all()


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-dlr"])
def test_an_early_stop_on_a_device_masks_broken_rows_with_the_same_examples_and_fewer_reads(tiny_cnn, monkeypatch,
                                                                                         name: str) -> None:
    """On a device (forced) the rows an early stop ends are masked and dropped at the checkpoints only: the same
    examples and query counts as dropping them at every step, in fewer host reads."""
    from helpers import assert_same_attack_in_fewer_reads, on_both_paths

    model = tiny_cnn(size=8)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = model(x).argmax(1)
    seen = on_both_paths(monkeypatch, model, lambda: make_attack(name, model, eps=0.03, steps=30, seed=2).run(
        x, y, sample_ids=torch.arange(16)))
    assert_same_attack_in_fewer_reads(seen)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_through_a_chunked_run_is_the_whole_graphs_run_and_holds_one_batch(loss: str) -> None:
    """Through :class:`~advspatial.stacked_runs.RowChunks` each batch's gradient is taken before the next batch's
    forward (the run keeps one batch's activations), and the attack is the one whose gradient goes back through
    the same calls all at once, to the bit."""
    from advspatial.stacked_runs import RowChunks, in_chunks

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 4)).eval()

    class SameCallsWholeGraph(nn.Module):  # RowChunks' calls, but one backward over all of them
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return in_chunks(lambda sl: net(x[sl]), x.shape[0], 3)

    x = torch.rand(7, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    events: list[str] = []

    def record(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if out.requires_grad:  # a forward whose gradient is taken: "F", then "B" when its gradient comes back
            events.append("F")
            out.register_hook(lambda g: events.append("B"))

    net.register_forward_hook(record)
    chunked = APGD(RowChunks(net, 3), eps=0.05, steps=6, loss=loss, seed=0, early_stop=False).run(x, y)
    assert events and events == ["F", "B"] * (len(events) // 2)  # never two batches' graphs held at once
    whole = APGD(SameCallsWholeGraph(), eps=0.05, steps=6, loss=loss, seed=0, early_stop=False).run(x, y)
    assert torch.equal(chunked.x_adv, whole.x_adv) and torch.equal(chunked.success, whole.success)
