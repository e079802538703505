"""Region selection, the random control, the class prior and NeutralizedModel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import grad_map
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.defence.neutralize import ClassPriorVulnerability, NeutralizedModel, class_prior_maps, map_of
from advspatial.defence.selection import neutralization_region, select_regions, top_fraction
from advspatial.errors import ConfigError, ShapeError
from advspatial.passes import PassLedger
from advspatial.regions import random_region_like
from advspatial.regions.fills import fill


def _distinct_maps(seed: int, n: int, h: int, w: int, zero_share: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    maps = torch.rand(n, h, w, generator=gen, dtype=torch.float64) + 0.01
    return torch.where(torch.rand(n, h, w, generator=gen) < zero_share, torch.zeros_like(maps), maps)


def _numpy_top(maps: np.ndarray, fraction: float) -> np.ndarray:
    """Reference for maps with distinct positive values: the k largest strictly positive pixels."""
    n, h, w = maps.shape
    k = int(math.floor(fraction * h * w + 0.5))
    out = np.zeros(maps.shape, dtype=bool)
    for i in range(n):
        flat = maps[i].ravel()
        order = np.argsort(-flat, kind="stable")[:k]
        keep = np.zeros(h * w, dtype=bool)
        keep[order] = True
        out[i] = (keep & (flat > 0)).reshape(h, w)
    return out


# -- top fraction ---------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9), fraction=st.floats(0, 1),
       zero_share=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 10_000))
def test_top_fraction_matches_a_reference_on_distinct_values(n, h, w, fraction, zero_share, seed):
    maps = _distinct_maps(seed, n, h, w, zero_share)
    got = top_fraction(maps, fraction, seed=seed)
    np.testing.assert_array_equal(got.numpy(), _numpy_top(maps.numpy(), fraction))


def test_top_fraction_breaks_ties_randomly_but_reproducibly():
    maps = torch.ones(2, 10, 10)
    a = top_fraction(maps, 0.3, seed=1)
    assert a.flatten(1).sum(1).tolist() == [30, 30]
    assert torch.equal(a, top_fraction(maps, 0.3, seed=1))
    assert not torch.equal(a, top_fraction(maps, 0.3, seed=2))
    # not by pixel order: the first 30 pixels are not the choice
    assert not torch.equal(a[0].flatten(), torch.arange(100) < 30)
    # batch equals each image alone with its sample id
    alone = top_fraction(maps[1:], 0.3, seed=1, sample_ids=torch.tensor([1]))
    assert torch.equal(alone, a[1:])


def test_top_fraction_keeps_the_strict_winners_before_ties():
    maps = torch.zeros(1, 4, 4)
    maps[0, 0, :2] = 2.0          # two clear winners
    maps[0, 1, :] = 1.0           # four tied for the remaining two places
    region = top_fraction(maps, 4 / 16, seed=3)
    assert bool(region[0, 0, :2].all()) and int(region[0, 1].sum()) == 2 and int(region.sum()) == 4


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5), h=st.integers(1, 8), w=st.integers(1, 8), fraction=st.floats(0, 1),
       levels=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_a_devices_top_fraction_reads_nothing_and_gives_the_same_regions(n, h, w, fraction, levels, seed) -> None:
    """Maps of a few levels (ties at the cut in some images, not in others) and zeros: the device's path (forced)
    breaks every image's ties without reading which need it, and gives the regions of the CPU's path."""
    from advspatial import host_syncs

    g = torch.Generator().manual_seed(seed)
    maps = torch.randint(0, levels + 1, (n, h, w), generator=g).float()
    importance, ids = torch.rand(n, h, w, generator=g), torch.arange(7, 7 + n)
    plain = select_regions(importance, maps, fraction, seed=seed, sample_ids=ids)
    host_syncs.DEVICE_PATH_ON_CPU = True
    try:
        ledger = PassLedger()
        with ledger.stage("select"):
            forced = select_regions(importance, maps, fraction, seed=seed, sample_ids=ids)
            reads_before_the_end = ledger._current().syncs
    finally:
        host_syncs.DEVICE_PATH_ON_CPU = False
    assert reads_before_the_end == 0
    for a, b in zip((plain.roi, plain.roa, plain.neutralized), (forced.roi, forced.roa, forced.neutralized),
                    strict=True):
        assert torch.equal(a, b)


def test_a_devices_top_fraction_fails_its_stage_on_nan_maps(monkeypatch) -> None:
    from advspatial import host_syncs

    monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", True)
    with pytest.raises(ConfigError, match="maps contain NaN"):
        with PassLedger().stage("select"):
            top_fraction(torch.full((1, 2, 2), float("nan")), 0.2)


def test_top_fraction_rejects_bad_input():
    with pytest.raises(ConfigError, match="fraction"):
        top_fraction(torch.ones(1, 3, 3), 1.5)
    with pytest.raises(ShapeError, match=r"\(N,H,W\)"):
        top_fraction(torch.ones(3, 3), 0.2)
    with pytest.raises(ConfigError, match="NaN"):
        top_fraction(torch.full((1, 2, 2), float("nan")), 0.2)


# -- N = RoA minus RoI -------------------------------------------------------------------

def test_region_known_answer_on_synthetic_maps():
    # importance grows to the left, vulnerability grows upward: RoI = left columns, RoA = top rows
    h = w = 10
    importance = torch.arange(w, 0, -1, dtype=torch.float32).repeat(h, 1)[None] + torch.rand(1, h, w) * 0.1
    vulnerability = torch.arange(h, 0, -1, dtype=torch.float32)[:, None].repeat(1, w)[None] + torch.rand(1, h, w) * 0.1
    sel = select_regions(importance, vulnerability, 0.3)
    expected_roi = torch.zeros(1, h, w, dtype=torch.bool)
    expected_roi[..., :3] = True
    expected_roa = torch.zeros(1, h, w, dtype=torch.bool)
    expected_roa[:, :3] = True
    assert torch.equal(sel.roi, expected_roi) and torch.equal(sel.roa, expected_roa)
    expected = torch.zeros(1, h, w, dtype=torch.bool)
    expected[:, :3, 3:] = True
    assert torch.equal(sel.neutralized, expected)
    assert torch.equal(neutralization_region(importance, vulnerability, 0.3), expected)
    # a smaller RoI leaves more to neutralize
    smaller = neutralization_region(importance, vulnerability, 0.3, roi_fraction=0.1)
    expected[:, :3, 1:] = True
    assert torch.equal(smaller, expected)


@settings(max_examples=15, deadline=None)
@given(h=st.integers(2, 8), fraction=st.floats(0, 1), roi_fraction=st.floats(0, 1), seed=st.integers(0, 999))
def test_region_equals_roa_minus_roi(h, fraction, roi_fraction, seed):
    imp = _distinct_maps(seed, 3, h, h, 0.3)
    vul = _distinct_maps(seed + 1, 3, h, h, 0.3)
    region = neutralization_region(imp, vul, fraction, roi_fraction=roi_fraction, seed=seed)
    roi = _numpy_top(imp.numpy(), roi_fraction)
    roa = _numpy_top(vul.numpy(), fraction)
    np.testing.assert_array_equal(region.numpy(), roa & ~roi)


def test_custom_binarize_is_used():
    imp, vul = _distinct_maps(0, 2, 5, 5), _distinct_maps(1, 2, 5, 5)
    sel = select_regions(imp, vul, 0.4, binarize=lambda m, f: m > 0.5)
    assert torch.equal(sel.roi, imp > 0.5) and torch.equal(sel.neutralized, (vul > 0.5) & ~(imp > 0.5))


def test_region_shape_mismatch():
    with pytest.raises(ShapeError, match="same"):
        select_regions(torch.ones(1, 4, 4), torch.ones(1, 4, 5), 0.2)


# -- the random control --------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.floats(0, 0.5))
def test_random_control_same_count_and_inside_within(seed, p):
    gen = torch.Generator().manual_seed(seed)
    region = torch.rand(4, 7, 6, generator=gen) < p
    within = region | (torch.rand(4, 7, 6, generator=gen) < 0.3)
    control = random_region_like(region, seed)
    assert torch.equal(control.flatten(1).sum(1), region.flatten(1).sum(1))
    inside = random_region_like(region, seed, within=within)
    assert torch.equal(inside.flatten(1).sum(1), region.flatten(1).sum(1))
    assert not bool((inside & ~within).any())


def test_random_control_is_seeded_per_image():
    region = torch.zeros(3, 10, 10, dtype=torch.bool)
    region[:, :2] = True
    a = random_region_like(region, 5)
    assert torch.equal(a, random_region_like(region, 5))
    assert not torch.equal(a, random_region_like(region, 6))
    assert not torch.equal(a[0], a[1])  # different images, different draws
    assert torch.equal(random_region_like(region[2:], 5, sample_ids=torch.tensor([2])), a[2:])


def test_random_control_positions_are_uniform():
    # over many draws each pixel is chosen about count/(H*W) of the time
    region = torch.zeros(400, 6, 6, dtype=torch.bool)
    region[:, :1] = True  # 6 of 36 pixels
    freq = random_region_like(region, 0).float().mean(0)
    assert float((freq - 6 / 36).abs().max()) < 0.08


def test_random_control_needs_enough_room():
    region = torch.ones(1, 3, 3, dtype=torch.bool)
    with pytest.raises(ConfigError, match="fewer pixels"):
        random_region_like(region, 0, within=torch.zeros(1, 3, 3, dtype=torch.bool))


# -- the class prior ----------------------------------------------------------------------

def test_class_mean_maps_and_prior_lookup(tiny_cnn):
    maps = torch.stack([torch.full((28, 28), float(v)) for v in (1, 3, 5)])
    prior = class_prior_maps(maps, torch.tensor([0, 0, 2]), 10)
    assert prior.shape == (10, 28, 28)
    assert float(prior[0, 0, 0]) == 2.0 and float(prior[2, 0, 0]) == 5.0 and float(prior[1].abs().max()) == 0.0
    model = tiny_cnn()
    x = torch.rand(4, 1, 28, 28)
    prior = torch.rand(10, 28, 28)
    vul = ClassPriorVulnerability(prior, model)(x)
    assert torch.equal(vul, prior[model(x).argmax(1)])
    always_five = torch.nn.Linear(28 * 28, 10)
    torch.nn.init.zeros_(always_five.weight)
    torch.nn.init.zeros_(always_five.bias)
    always_five.bias.data[5] = 1.0
    flat_model = torch.nn.Sequential(torch.nn.Flatten(), always_five)
    with pytest.raises(ShapeError, match="prior_maps has only 3 classes"):
        ClassPriorVulnerability(prior[:3], flat_model)(x)
    with pytest.raises(ConfigError, match=">= 0"):
        ClassPriorVulnerability(-prior, model)


# -- NeutralizedModel ---------------------------------------------------------------------



def _intensity(x: torch.Tensor) -> torch.Tensor:
    return x.sum(1)


def test_empty_region_gives_the_model_exactly(tiny_cnn):
    model = tiny_cnn()
    x = torch.rand(3, 1, 28, 28)
    defended = NeutralizedModel(model, _intensity, grad_map(model), fraction=0.0, fill="blur")
    assert torch.equal(defended(x), model(x))
    assert not bool(defended.last_region.any())
    # a vulnerability map that is zero everywhere selects nothing either
    zero_vul = NeutralizedModel(model, _intensity, lambda x: torch.zeros(x.shape[0], 28, 28), fraction=0.5)
    assert torch.equal(zero_vul(x), model(x))


def test_forward_is_model_of_filled_input_and_gradients_match(tiny_cnn):
    model = tiny_cnn()
    for p in model.parameters():
        p.requires_grad_(False)  # as inside an attack
    x = torch.rand(3, 1, 28, 28)
    defended = NeutralizedModel(model, _intensity, grad_map(model), fraction=0.3, fill="blur",
                                fill_params={"sigma": 1.5})
    var = x.clone().requires_grad_(True)
    out = defended(var)
    region = defended.last_region
    assert region.any() and not region.all()
    assert torch.equal(region, defended.last_selection.roa & ~defended.last_selection.roi)
    ref_var = x.clone().requires_grad_(True)
    ref = model(fill(ref_var, region, "blur", sigma=1.5))
    assert torch.equal(out, ref)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad((out * weights).sum(), var)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), ref_var)
    assert g.abs().sum() > 0 and torch.allclose(g, g_ref)


def test_maps_need_gradients_even_under_no_grad_and_inference_mode(tiny_cnn):
    model = tiny_cnn()
    x = torch.rand(2, 1, 28, 28)
    defended = NeutralizedModel(model, grad_map(model), grad_map(model), fraction=0.2)
    with torch.no_grad():
        a = defended(x)
    with torch.inference_mode():
        b = defended(x)
    assert torch.equal(a, b)
    assert map_of(grad_map(model), x).shape == (2, 28, 28)
    with torch.inference_mode():
        inference_tensor = x.clone()
        assert torch.equal(defended(inference_tensor), a)
    with pytest.raises(ShapeError, match="map function returned"):
        map_of(lambda x: x[:, 0, :5], x)


def test_parameters_are_the_wrapped_models(tiny_cnn):
    model = tiny_cnn()
    prior = ClassPriorVulnerability(torch.rand(10, 28, 28), model)
    defended = NeutralizedModel(model, _intensity, prior)
    assert [id(p) for p in defended.parameters()] == [id(p) for p in model.parameters()]
    assert set(defended.state_dict()) == {"model." + k for k in model.state_dict()}


def test_random_mode_same_count_resampled_per_call(tiny_cnn):
    model = tiny_cnn()
    x = torch.rand(2, 1, 28, 28)
    defend = NeutralizedModel(model, _intensity, grad_map(model), fraction=0.3, seed=4)
    defend(x)
    region = defend.last_region
    rand = defend.variant("random")
    rand(x)
    first = rand.last_region
    rand(x)
    second = rand.last_region
    assert torch.equal(first.flatten(1).sum(1), region.flatten(1).sum(1))
    assert not torch.equal(first, second) and rand.calls == 2
    rand.reset()
    rand(x)
    assert torch.equal(rand.last_region, first)  # reproducible from the seed
    fixed = NeutralizedModel(model, _intensity, grad_map(model), fraction=0.3, seed=4, mode="random", resample=False)
    fixed(x)
    a = fixed.last_region
    fixed(x)
    assert torch.equal(a, fixed.last_region)
    selection = fixed.select(x)
    assert torch.equal(a, fixed.control_region(x, selection, 0))  # without resampling: draw 0, as scored
    assert not torch.equal(first, a)  # the attacker's draws are never the scored ones


def test_the_random_controls_scoring_draws_are_one_round_with_each_draws_own_prediction(tiny_cnn):
    """predict_draws' draws do not depend on each other: one round (a call per draw on a CPU), each draw's column
    the model's prediction on that draw's filled image."""
    model = tiny_cnn()
    x, ids = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(3)), torch.arange(10, 14)
    rand = NeutralizedModel(model, _intensity, grad_map(model), fraction=0.3, seed=2, mode="random")
    ledger = PassLedger()
    ledger.watch(model)
    preds = rand.predict_draws(x, 5, ids)
    assert (ledger.outside.calls, ledger.outside.rounds) == (1 + 5, 1 + 1)   # the selection's map, then the draws
    selection = rand.select(x, sample_ids=ids)
    for d, region in enumerate(rand.control_regions(x, selection, range(5), ids)):
        with torch.no_grad():
            assert torch.equal(preds[:, d], model(rand.fill_fn(x, region)).argmax(1))


def test_random_control_avoids_the_roi_and_matches_composition(tiny_cnn):
    model = tiny_cnn()
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(4, 1, 28, 28, generator=gen)
    x[:, :, :, :14] = 0.0  # a dark (background) half
    rand = NeutralizedModel(model, _intensity, grad_map(model), fraction=0.3, seed=2, mode="random")
    selection = rand.select(x)
    fg = x.amax(1) > 0.05
    for d in range(5):
        control = rand.control_region(x, selection, d)
        assert not bool((control & selection.roi).any())  # the defence never touches the RoI: nor does its control
        for stratum in (fg, ~fg):
            assert torch.equal((control & stratum).flatten(1).sum(1),
                               (selection.neutralized & stratum).flatten(1).sum(1))
    draws = [rand.control_region(x, selection, d) for d in range(3)]
    assert not torch.equal(draws[0], draws[1])
    # keyed by the global id: image 2 alone with id 2 gets the same draw
    alone = rand.control_region(x[2:3], rand.select(x[2:3], sample_ids=torch.tensor([2])), 1, torch.tensor([2]))
    assert torch.equal(alone[0], rand.control_region(x, selection, 1, torch.arange(4))[2])


def test_oracle_mode_uses_the_given_region(tiny_cnn):
    model = tiny_cnn()
    x = torch.rand(2, 1, 28, 28)
    region = torch.zeros(2, 28, 28, dtype=torch.bool)
    region[:, 5:10] = True
    oracle = NeutralizedModel(model, _intensity, _intensity, mode="oracle")
    with pytest.raises(ConfigError, match="set_oracle_region"):
        oracle(x)
    oracle.set_oracle_region(region)
    assert torch.equal(oracle(x), model(fill(x, region, "zero")))
    assert torch.equal(oracle.forward_with_region(x, region), oracle(x))
    with pytest.raises(ShapeError):
        oracle(x[:1])


def test_constructor_validation(tiny_cnn):
    model = tiny_cnn()
    with pytest.raises(ConfigError, match="valid: defend, oracle, random"):
        NeutralizedModel(model, _intensity, _intensity, mode="blocked")
    with pytest.raises(ConfigError, match="fraction"):
        NeutralizedModel(model, _intensity, _intensity, fraction=2)
    with pytest.raises(ConfigError, match="valid: blur, inpaint, mean, road, zero"):
        NeutralizedModel(model, _intensity, _intensity, fill="noise")


def test_modes_and_flags_are_untouched(tiny_cnn):
    model = tiny_cnn().train()
    defended = NeutralizedModel(model, grad_map(model), grad_map(model))
    defended(torch.rand(2, 1, 28, 28))
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert not model._forward_hooks and not model._backward_hooks


def test_paired_maps_select_what_the_two_callables_select(tiny_cnn):
    model = tiny_cnn()
    x = torch.rand(4, 1, 28, 28)
    calls = []

    def paired(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(len(z))
        return _intensity(z), grad_map(model)(z)

    plain = NeutralizedModel(model, _intensity, grad_map(model), fraction=0.3, seed=2)
    shared = NeutralizedModel(model, _intensity, grad_map(model), fraction=0.3, seed=2, maps_fn=paired)
    assert torch.equal(shared(x), plain(x)) and calls == [4]
    assert torch.equal(shared.last_selection.neutralized, plain.last_selection.neutralized)
    control = shared.variant("random")
    assert control.maps_fn is paired
    control(x)
    assert calls == [4, 4]
    with pytest.raises(ShapeError, match="map function returned"):
        NeutralizedModel(model, _intensity, _intensity, maps_fn=lambda z: (_intensity(z), z[:, 0, :5]))(x)


def test_the_selection_is_reused_for_the_same_images_and_a_device_reads_nothing_to_decide(tiny_cnn,
                                                                                          monkeypatch) -> None:
    """The same memory unchanged: the maps are not computed again on either path. Equal values in new memory: a CPU
    compares them and reuses the selection; a device (forced) computes the maps again, the same selection, without a
    read back."""
    from advspatial import host_syncs

    model = tiny_cnn(size=8)
    computed: list[int] = []

    def importance(x: torch.Tensor) -> torch.Tensor:
        computed.append(len(x))
        return x.mean(1)

    defence = NeutralizedModel(model, importance, importance, fraction=0.3, fill="zero")
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for device_path, maps_for_a_copy in ((False, 0), (True, 2)):
        monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", device_path)
        first = defence.select(x)
        computed.clear()
        ledger = PassLedger()
        with ledger.stage("select"):
            assert defence.select(x) is first
            again = defence.select(x.clone())
            reads = ledger._current().syncs
        assert len(computed) == maps_for_a_copy and torch.equal(again.neutralized, first.neutralized)
        assert reads == (0 if device_path else 1)
        defence.reset()
