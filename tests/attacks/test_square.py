"""Square Attack (L-inf, L2): the p schedule and the L2 window pattern against torchattacks, success
against torchattacks at equal budgets, the exact perturbation values (L-inf +-eps, L2 norm eps) with
and without a mask, batch independence with restarts, early stop, query counts, registry, errors."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from advspatial.attacks import make_attack
from advspatial.attacks.base import margin
from advspatial.attacks.square import Square, SquareL2, eta_pattern, p_schedule
from advspatial.errors import ConfigError
from attack_checks import (
    assert_acts_only_inside_masks, assert_batch_equals_each_alone, assert_eps_zero_returns_x_and_misclassified_stay,
)
from helpers import RowCounter, StepNotes, first_images, fooled

N = 32


def _data(subset, n: int = N):
    return first_images(subset, n)


def _unfoolable(tiny_cnn, channels: int = 1) -> nn.Module:
    """A tiny CNN whose class 0 wins by 1000 on any image: no point is adversarial for y = 0."""
    model = tiny_cnn(in_channels=channels, size=12)
    with torch.no_grad():
        model.fc.bias[0] += 1000.0
    return model


# -- schedule and pattern -------------------------------------------------------------------

@pytest.mark.parametrize("n_queries, p_init", [(10000, 0.8), (1000, 0.8), (137, 0.3)])
def test_p_schedule_matches_torchattacks(n_queries, p_init):
    ref = torchattacks.Square(nn.Linear(1, 1), n_queries=n_queries, p_init=p_init)
    assert all(p_schedule(i, n_queries, p_init) == ref.p_selection(i) for i in range(n_queries))


def test_p_schedule_halves_at_the_paper_iterations():
    p = [p_schedule(i, 10000, 0.8) for i in (0, 10, 11, 50, 51, 201, 501, 1001, 2001, 4001, 6001, 8001, 9999)]
    assert p == [0.8, 0.8, 0.4, 0.4, 0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625, 0.003125, 0.0015625, 0.0015625]


@pytest.mark.parametrize("s", [3, 4, 5, 6, 7, 9, 12, 25])
def test_eta_pattern_matches_torchattacks_up_to_transpose(s):
    torch.manual_seed(0)
    ref = torchattacks.Square(nn.Linear(1, 1), norm="L2").eta(s)  # randomly transposed
    ours = eta_pattern(s)
    assert min((ours - ref).abs().max(), (ours.T - ref).abs().max()) < 1e-6
    assert ours.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert (ours[: s // 2] > 0).all() and (ours[s // 2:] < 0).all()


# -- against torchattacks --------------------------------------------------------------------

@pytest.mark.parametrize("norm, eps", [("Linf", 0.05), ("L2", 0.5)])
def test_success_at_least_torchattacks(trained_tiny_cnn, fmnist_test_subset, norm, eps):
    """Equal budgets (300 queries, 1 restart, p_init 0.8, margin loss). Different random numbers (per image
    here, one stream and one window position per batch step in the reference) make a borderline image go
    either way: slack 1/32. Observed: L-inf 14/32 vs 14/32, L2 11/32 vs 10/32."""
    model = trained_tiny_cnn
    x, y = _data(fmnist_test_subset)
    cls = Square if norm == "Linf" else SquareL2
    res = cls(model, eps=eps, n_queries=300, p_init=0.8, loss="margin").run(x, y)
    ref = torchattacks.Square(model, norm=norm, eps=eps, n_queries=300, n_restarts=1, p_init=0.8,
                              loss="margin", seed=0)
    ref_rate = fooled(model, ref(x, y), y).float().mean().item()
    clean_error = (res.clean_pred != y).float().mean().item()
    assert res.success_rate >= ref_rate - 1 / N
    assert res.success_rate > clean_error + 2 / N
    norms = res.linf if norm == "Linf" else res.l2
    assert norms.max() <= eps + 1e-5
    assert (res.queries <= 300 + 2).all()  # clean pass, 300 per restart, run()'s final pass


def test_targeted_square_hits_the_target(trained_tiny_cnn, fmnist_test_subset):
    """Observed at eps 0.3, 200 queries: 12/16 here, 6/16 for torchattacks' targeted Square."""
    x, y = _data(fmnist_test_subset, 16)
    t = (y + 1) % 10
    res = Square(trained_tiny_cnn, eps=0.3, n_queries=200).run(x, y, target=t)
    ref = torchattacks.Square(trained_tiny_cnn, eps=0.3, n_queries=200, seed=0)
    ref.set_mode_targeted_by_label(quiet=True)
    with torch.no_grad():
        ref_rate = (trained_tiny_cnn(ref(x, t)).argmax(1) == t).float().mean().item()
    assert torch.equal(res.success, res.adv_pred == t)
    assert res.success_rate >= ref_rate - 1 / 16 and res.success_rate > 0.5


# -- exact perturbation values and the mask ---------------------------------------------------

def test_linf_perturbation_is_plus_minus_eps_times_the_mask(tiny_cnn):
    """Stripes and windows set entries to +-eps (times the mask); on mid-grey images nothing is clipped."""
    model = _unfoolable(tiny_cnn)
    x, y = torch.full((6, 1, 12, 12), 0.5), torch.zeros(6, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    for mask in (None, (torch.rand(6, 12, 12, generator=g) < 0.5).float(), torch.rand(1, 1, 12, 12, generator=g)):
        res = Square(model, eps=0.1, n_queries=50).run(x, y, mask=mask)
        expected = torch.full_like(x, 0.1) if mask is None else 0.1 * torch.broadcast_to(
            mask if mask.ndim == 4 else mask[:, None], x.shape)
        assert torch.allclose((res.x_adv - x).abs(), expected, atol=1e-6)
        assert (res.queries == 1 + 50 + 1).all() and not res.success.any()


def test_l2_updates_keep_the_norm_at_eps_inside_the_mask(tiny_cnn):
    """Each L2 update moves the budget of two windows (and any unused budget) into one: with no box
    clipping (mid-grey images) every accepted point has norm exactly eps, also when the mask is small."""
    model = _unfoolable(tiny_cnn)
    x, y = torch.full((6, 1, 12, 12), 0.5), torch.zeros(6, dtype=torch.long)
    mask = torch.zeros(12, 12)
    mask[2:9, 3:10] = 1.0
    for m in (None, mask):
        res = SquareL2(model, eps=0.5, n_queries=80).run(x, y, mask=m)
        assert torch.allclose(res.l2, torch.full((6,), 0.5), atol=1e-5)
        if m is not None:
            assert (res.x_adv - x)[:, 0][:, m == 0].abs().max() == 0


def test_colour_images_and_a_channel_mask(tiny_cnn):
    """3 channels: L-inf entries are +-eps*mask; L2 budgets are per channel and still sum to eps^2."""
    model = _unfoolable(tiny_cnn, channels=3)
    x, y = torch.full((4, 3, 12, 12), 0.5), torch.zeros(4, dtype=torch.long)
    channel_mask = torch.tensor([0.0, 1.0, 0.5]).view(1, 3, 1, 1)
    delta = Square(model, eps=0.1, n_queries=40)(x, y, mask=channel_mask) - x
    assert torch.allclose(delta.abs(), (0.1 * channel_mask).expand_as(x), atol=1e-6)
    for m in (None, channel_mask):
        res = SquareL2(model, eps=0.5, n_queries=40).run(x, y, mask=m)
        assert torch.allclose(res.l2, torch.full((4,), 0.5), atol=1e-5)
        if m is not None:
            assert (res.x_adv - x)[:, 0].abs().max() == 0


@pytest.mark.parametrize("cls, eps", [(Square, 0.1), (SquareL2, 1.0)])
def test_mask_keeps_the_perturbation_exactly_zero_outside(trained_tiny_cnn, fmnist_test_subset, cls, eps):
    x, y = _data(fmnist_test_subset, 16)
    attack = cls(trained_tiny_cnn, eps=eps, n_queries=40, early_stop=False)
    for res in assert_acts_only_inside_masks(attack, x, y, slice(5, 20), slice(4, 24)):
        assert (res.linf if cls is Square else res.l2).max() <= eps + 1e-5


# -- batch independence, early stop, queries ---------------------------------------------------

@pytest.mark.parametrize("build", [
    lambda m: Square(m, eps=0.02, n_queries=60, n_restarts=2, seed=3),
    lambda m: SquareL2(m, eps=0.3, n_queries=60, n_restarts=2),
    lambda m: Square(m, eps=0.02, n_queries=40, loss="ce", early_stop=False),
])
def test_batch_equals_each_image_alone(trained_tiny_cnn, fmnist_test_subset, build):
    x, y = _data(fmnist_test_subset, 12)
    ids = torch.arange(50, 62)
    atk = build(trained_tiny_cnn)
    assert_batch_equals_each_alone(atk, x, y, ids, staggered=atk.early_stop)


def test_seed_and_sample_id_choose_the_random_numbers(trained_tiny_cnn, fmnist_test_subset):
    x, y = _data(fmnist_test_subset, 4)
    a = Square(trained_tiny_cnn, eps=0.05, n_queries=5, seed=1)(x, y)
    b = Square(trained_tiny_cnn, eps=0.05, n_queries=5, seed=1)(x, y)
    c = Square(trained_tiny_cnn, eps=0.05, n_queries=5, seed=2)(x, y)
    d = Square(trained_tiny_cnn, eps=0.05, n_queries=5, seed=1)(x, y, sample_ids=torch.arange(10, 14))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)


def test_eps_zero_returns_x_and_a_misclassified_image_stays(trained_tiny_cnn, fmnist_test_subset):
    x, y = _data(fmnist_test_subset)
    for cls in (Square, SquareL2):
        assert_eps_zero_returns_x_and_misclassified_stay(
            lambda eps, cls=cls: cls(trained_tiny_cnn, eps=eps, n_queries=10), x, y)


def test_without_early_stop_the_search_goes_on(trained_tiny_cnn, fmnist_test_subset):
    """Same random numbers, same accepted points until the first adversarial one: the same images are
    fooled; without early stop every query is spent and the margin can only grow."""
    x, y = _data(fmnist_test_subset)
    keep = trained_tiny_cnn(x).argmax(1) == y
    x, y = x[keep], y[keep]
    early = Square(trained_tiny_cnn, eps=0.05, n_queries=100).run(x, y)
    full = Square(trained_tiny_cnn, eps=0.05, n_queries=100, early_stop=False).run(x, y)
    assert torch.equal(early.success, full.success) and early.success.any()
    assert (full.queries == 100 + 1).all() and (early.queries[early.success] < 100).all()
    with torch.no_grad():
        assert (margin(trained_tiny_cnn(full.x_adv), y) <= margin(trained_tiny_cnn(early.x_adv), y) + 1e-5).all()


def test_queries_count_forward_passes(trained_tiny_cnn, fmnist_test_subset):
    x, y = _data(fmnist_test_subset, 16)
    counting = RowCounter(trained_tiny_cnn)
    res = SquareL2(counting, eps=0.3, n_queries=30, n_restarts=2).run(x, y)
    assert counting.rows == 16 + int(res.queries.sum())
    assert res.queries.max() == 1 + 2 * 30 + 1


# -- registry and parameters --------------------------------------------------------------

def test_registry_builds_both_norms(tiny_cnn):
    model = tiny_cnn(size=8)
    linf, l2 = make_attack("square", model, n_queries=10), make_attack("square-l2", model)
    assert type(linf) is Square and linf.eps == 8 / 255 and linf.n_queries == 10
    assert type(l2) is SquareL2 and l2.eps == 0.5 and l2.norm == "l2"


@pytest.mark.parametrize("cls, kwargs, match", [
    (Square, {"eps": 1.5}, r"eps=1.5 is out of range; valid: \[0, 1\]"),
    (Square, {"n_queries": 0}, r"n_queries=0 is out of range"),
    (Square, {"n_restarts": 0}, r"n_restarts=0 is out of range"),
    (Square, {"p_init": 0.0}, r"p_init=0.0 is out of range; valid: \(0, 1\]"),
    (Square, {"loss": "dlr"}, "margin, ce"),
    (SquareL2, {"eps": -1.0}, r"valid: \[0, inf\]"),
])
def test_bad_parameters_raise_config_error(tiny_cnn, cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(tiny_cnn(size=8), **kwargs)


@pytest.mark.parametrize("name", ["square", "square-l2"])
def test_an_early_stop_on_a_device_masks_found_rows_with_the_same_examples_and_fewer_reads(tiny_cnn, monkeypatch,
                                                                                         name: str) -> None:
    """On a device (forced) the rows that found an example are masked and dropped when a block of random numbers
    starts: the same examples and query counts as dropping them at every query, in fewer host reads."""
    from helpers import assert_same_attack_in_fewer_reads, on_both_paths

    model = tiny_cnn(size=8)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    y = model(x).argmax(1)
    eps = 0.05 if name == "square" else 0.5
    seen = on_both_paths(monkeypatch, model, lambda: make_attack(name, model, eps=eps, n_queries=150, seed=2).run(
        x, y, sample_ids=torch.arange(16)))
    assert_same_attack_in_fewer_reads(seen)


@pytest.mark.parametrize("name, kwargs, targeted", [
    ("square", {}, False), ("square-l2", {}, False), ("square", {"early_stop": False}, False),
    ("square", {"n_restarts": 2, "loss": "ce"}, False), ("square-l2", {}, True),
])
def test_on_a_device_several_iterations_go_in_one_call_with_the_same_examples(tiny_cnn, monkeypatch, name: str,
                                                                              kwargs: dict, targeted: bool) -> None:
    """On a device (forced) each call proposes the next iterations from the point accepted so far and keeps them
    up to the first that a row accepts: the examples and query counts of one iteration per call, in fewer rounds,
    with a mask, restarts, a targeted search and without early stop alike."""
    from helpers import on_both_paths

    model = tiny_cnn(size=8)
    draw = torch.Generator().manual_seed(4)
    x = torch.rand(16, 1, 8, 8, generator=draw)
    mask = (torch.rand(16, 1, 8, 8, generator=draw) < 0.6).float()
    y = model(x).argmax(1)
    target = (y + 1) % 10 if targeted else None
    eps = 0.05 if name == "square" else 0.5
    seen = on_both_paths(monkeypatch, model, lambda: make_attack(name, model, eps=eps, n_queries=300, seed=2,
                                                                 **kwargs).run(
        x, y, mask=mask, target=target, sample_ids=torch.arange(16)))
    (one_by_one, sequential), (proposed, speculative) = seen[False], seen[True]
    assert (~one_by_one.success).any()  # rows that search to the end, where the proposals go several at a time
    assert torch.allclose(one_by_one.x_adv, proposed.x_adv, atol=1e-6)
    assert torch.equal(one_by_one.queries, proposed.queries) and torch.equal(one_by_one.success, proposed.success)
    assert speculative.rounds < sequential.rounds


def test_an_image_no_window_fools_takes_its_queries_in_a_few_dozen_calls_on_a_device(tiny_cnn, monkeypatch) -> None:
    """The case that made Square's rounds the floor of the adaptive evaluation's: one image no point fools, 1,000
    queries. Its window changes are rarely accepted, so on a device most calls carry the most iterations allowed."""
    from helpers import on_both_paths

    model = _unfoolable(tiny_cnn)
    x = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(1, dtype=torch.long)
    seen = on_both_paths(monkeypatch, model, lambda: Square(model, eps=0.05, n_queries=1000).run(
        x, y, sample_ids=torch.arange(1)))
    (one_by_one, sequential), (proposed, speculative) = seen[False], seen[True]
    assert torch.allclose(one_by_one.x_adv, proposed.x_adv, atol=1e-6)
    assert torch.equal(one_by_one.queries, proposed.queries)
    assert sequential.rounds >= 1000 and speculative.rounds < 200


@pytest.mark.parametrize("device_path", [False, True])
def test_the_search_shows_its_query_while_it_runs_and_forgets_it_after(tiny_cnn, monkeypatch,
                                                                        device_path: bool) -> None:
    """A batch Square searches for minutes inside one call: the idle bar and the heartbeat show its query count (one
    iteration a call on a CPU, several on a device's few rows), the start's queries none, and nothing after."""
    from advspatial import host_syncs, progress

    monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", device_path)
    model = StepNotes(_unfoolable(tiny_cnn))
    x = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    Square(model, eps=0.05, n_queries=50).run(x, torch.zeros(1, dtype=torch.long), sample_ids=torch.arange(1))
    shown = [note for note in model.notes if note is not None]
    done = [int(note.removeprefix("query ").split("/")[0]) for note in shown]
    assert all(note.endswith("/50") for note in shown) and done == sorted(set(done)) and done[0] == 1
    assert model.notes[0] is None and done[-1] <= 49  # the start's query; the last iteration is query 50
    assert len(done) == 49 if not device_path else len(done) < 20
    assert progress._ACTIVITY.step is None
