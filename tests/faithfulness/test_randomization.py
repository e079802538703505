"""Smooth and efficient MPRT and the randomization pass rules (regions/randomization.py).

Cross-checks against Quantus 0.6 (``quantus.SmoothMPRT``, ``quantus.EfficientMPRT``): Quantus randomizes
with ``torch.manual_seed(seed + 1); module.reset_parameters()`` for each module in turn, so after the last
layer its fully randomized model is each layer's default initialization under that seed; the tests build
that model once and hand it to both. SmoothMPRT draws its input noise from NumPy's global generator: the
tests make it return our draws (``np.random.randn`` patched), and it calls ``quantus.explain`` rather than
the explain_func it is given, so ``quantus.explain`` is patched to the same fixed explainer.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from advspatial import stacked_runs
from advspatial.errors import ConfigError, ShapeError
from advspatial.faithfulness.randomization import (
    CASCADE_MAX_SPEARMAN, cascade_verdict, fully_randomized, model_randomization_check,
)
from advspatial.faithfulness.mprt import (
    efficient_mprt, histogram_entropy, randomization_checks, smooth_mprt, smoothed_maps,
)
from advspatial.passes import PassLedger
from advspatial.runtime import sample_generator, stream_seed

SIZE = 12


def saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|d logit_y / d x| summed over channels: a fixed, model-dependent explainer."""
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).gather(1, y[:, None]).sum(), x)
    return g.abs().sum(1)


def edges(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A model-free map: the gradient magnitude of the image (finite differences)."""
    gray = x.mean(1)
    gy = torch.zeros_like(gray)
    gx = torch.zeros_like(gray)
    gy[:, 1:-1] = gray[:, 2:] - gray[:, :-2]
    gx[:, :, 1:-1] = gray[:, :, 2:] - gray[:, :, :-2]
    return (gx ** 2 + gy ** 2).sqrt()


def quantus_randomized(model: nn.Module, seed: int) -> nn.Module:
    """Quantus' fully randomized model: every module with reset_parameters reset after manual_seed(seed + 1)."""
    net = copy.deepcopy(model)
    state = torch.random.get_rng_state()
    for _, module in net.named_modules():
        if hasattr(module, "reset_parameters"):
            torch.manual_seed(seed + 1)
            module.reset_parameters()
    torch.random.set_rng_state(state)
    return net


def quantus_explain(model, inputs, targets, **kwargs) -> np.ndarray:
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(targets)).long()
    return saliency(model, x, y).numpy()


@pytest.fixture
def data(tiny_cnn):
    model = tiny_cnn(in_channels=2, size=SIZE, seed=3)
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(6, 2, SIZE, SIZE, generator=gen)
    y = torch.randint(0, 10, (6,), generator=gen)
    return model, x, y


def test_smooth_mprt_equals_quantus(data, monkeypatch):
    """Same randomized model, same noise, same explainer: per-image Spearman equal to 1e-5."""
    import quantus

    model, x, y = data
    ids = torch.tensor([9, 2, 40, 7, 1, 3])
    samples, seed = 5, 42
    ours = smooth_mprt(model, x, y, saliency, seed, sample_ids=ids, samples=samples, noise_magnitude=0.2,
                       randomized_model=quantus_randomized(model, seed), clip=False)
    # our noise, draw k of image i: the (k+1)-th standard normal (C,H,W) of its generator
    gens = [sample_generator(stream_seed(seed, 41), int(i)) for i in ids]
    draws = [torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens]).numpy() for _ in range(samples - 1)]
    calls = {"k": 0}

    def randn(*shape):
        out = draws[calls["k"] % (samples - 1)].astype(np.float64)
        calls["k"] += 1
        assert out.shape == shape
        return out

    monkeypatch.setattr(np.random, "randn", randn)
    monkeypatch.setattr(quantus, "explain", quantus_explain)
    metric = quantus.SmoothMPRT(nr_samples=samples, noise_magnitude=0.2, seed=seed, return_last_correlation=True,
                                skip_layers=True, disable_warnings=True, display_progressbar=False)
    ref = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, explain_func=quantus_explain,
                 explain_func_kwargs={}, device="cpu")
    assert calls["k"] == 3 * (samples - 1)      # a_batch, the original again, the randomized model
    np.testing.assert_allclose(ours.spearman[0].numpy(), np.array(ref), atol=1e-5)  # one draw: (1, N)
    assert ours.mean == pytest.approx(float(np.mean(ref)), abs=1e-5)
    assert float(ours.spearman.std()) > 0.01    # the values differ per image: the comparison could fail


def test_efficient_mprt_equals_quantus(data):
    """Same randomized model, same explainer: per-image relative entropy rise equal to 1e-5."""
    import quantus

    model, x, y = data
    seed = 7
    ours = efficient_mprt(model, x, y, saliency, seed, randomized_model=quantus_randomized(model, seed))
    metric = quantus.EfficientMPRT(seed=seed, disable_warnings=True, display_progressbar=False)
    ref = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, explain_func=quantus_explain,
                 explain_func_kwargs={}, device="cpu")
    np.testing.assert_allclose(ours.rise[0].numpy(), np.array(ref), atol=1e-5)  # one draw: (1, N)
    assert ours.mean_rise == pytest.approx(float(np.mean(ref)), abs=1e-5)
    assert ours.median_rise == pytest.approx(float(np.median(ref)), abs=1e-5)
    assert float(ours.rise.std()) > 0.01
    # the entropy itself: Quantus' discrete_entropy of each map
    from quantus.functions.complexity_func import discrete_entropy

    maps = saliency(model, x, y)
    np.testing.assert_allclose(histogram_entropy(maps).numpy(),
                               [discrete_entropy(a=m[None].numpy(), x=None, n_bins=100) for m in maps], atol=1e-10)


def test_fully_randomized_is_the_last_step_of_the_cascade(data):
    model, x, y = data
    rows = model_randomization_check(model, x, lambda m, z: saliency(m, z, y), seed=5)
    net = fully_randomized(model, x, seed=5)
    from advspatial.regions.overlap import spearman

    rho = spearman(saliency(copy.deepcopy(model).eval(), x, y), saliency(net, x, y))
    assert rows[-1]["spearman"] == pytest.approx(float(rho.double().mean()), abs=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  copy.deepcopy(model).state_dict().values(), strict=True))
    assert not torch.equal(net.fc.weight, model.fc.weight)


def test_a_model_free_map_fails_and_a_model_dependent_map_passes(data):
    """Known answers: an edge map ignores the weights (Spearman exactly 1, no complexity rise); the gradient
    of this CNN changes under full randomization."""
    model, x, y = data
    free = randomization_checks(model, x, y, edges, seed=0, samples=4)
    assert free.smooth.mean == pytest.approx(1.0) and free.efficient.median_rise == pytest.approx(0.0)
    assert not free.passed and not free.smooth.passed and not free.efficient.passed
    assert "sMPRT" in free.reason and "eMPRT" in free.reason
    # image intensity: the same
    inten = randomization_checks(model, x, y, lambda m, z, t: z.mean(1), seed=0, samples=4)
    assert not inten.passed
    grad = randomization_checks(model, x, y, saliency, seed=0, samples=4)
    assert grad.smooth.mean < 0.5 and grad.smooth.passed
    d = grad.as_dict()
    assert set(d) == {"passed", "reason", "smooth_mprt", "efficient_mprt", "draw_seeds"}
    assert d["smooth_mprt"]["n"] == len(x)


def test_randomization_checks_equal_the_two_checks_alone(data):
    model, x, y = data
    both = randomization_checks(model, x, y, saliency, seed=2, samples=3)
    alone = smooth_mprt(model, x, y, saliency, seed=2, samples=3)
    torch.testing.assert_close(both.smooth.spearman, alone.spearman)
    eff = efficient_mprt(model, x, y, saliency, seed=2)
    torch.testing.assert_close(both.efficient.rise, eff.rise)


def test_smoothed_maps_are_batch_independent_and_end_with_the_clean_image(data):
    model, x, y = data
    ids = torch.tensor([5, 6, 7, 8, 9, 10])
    smooth, plain = smoothed_maps(model, x, y, saliency, seed=1, sample_ids=ids, samples=3)
    torch.testing.assert_close(plain, saliency(model, x, y))
    # the noisy copies stay in [0,1] (advspatial's maps refuse other images); clip=False is Quantus' definition
    seen = []
    smoothed_maps(model, x, y, lambda m, z, t: seen.append(z) or saliency(m, z, t), seed=1, samples=3)
    assert all(float(z.min()) >= 0 and float(z.max()) <= 1 for z in seen)
    unclipped = []
    smoothed_maps(model, x, y, lambda m, z, t: unclipped.append(z) or saliency(m, z, t), seed=1, samples=3,
                  clip=False)
    assert float(unclipped[0].min()) < 0 or float(unclipped[0].max()) > 1
    for i in range(len(x)):
        s, _ = smoothed_maps(model, x[i:i + 1], y[i:i + 1], saliency, seed=1, sample_ids=ids[i:i + 1], samples=3)
        torch.testing.assert_close(s[0], smooth[i], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(smooth, plain)


def test_smoothed_copies_are_one_round_and_stacked_calls_give_the_same_maps(data, monkeypatch):
    """The noisy copies do not depend on each other: one round, a call per copy on a CPU (the same maps to the
    bit as one at a time), the copies stacked into one call of the explainer where a device's budget allows."""
    model, x, y = data
    ids = torch.tensor([5, 6, 7, 8, 9, 10])
    ledger = PassLedger()
    ledger.watch(model)
    calls: list[int] = []

    def counted(m: nn.Module, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(len(z))
        return saliency(m, z, t)

    smooth, plain = smoothed_maps(model, x, y, counted, seed=1, sample_ids=ids, samples=4)
    assert calls == [len(x)] * 4 and ledger.outside.rounds == 1
    monkeypatch.setattr(stacked_runs, "CPU_STACK_ELEMENTS", 1 << 30)
    calls.clear()
    stacked, stacked_plain = smoothed_maps(model, x, y, counted, seed=1, sample_ids=ids, samples=4)
    assert calls == [4 * len(x)] and ledger.outside.rounds == 2
    torch.testing.assert_close(stacked, smooth, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(stacked_plain, plain, atol=1e-6, rtol=1e-5)


def test_cascade_verdict_rule():
    row = {"step": 3, "layer": "features.0", "spearman": 0.2, "pearson": 0.1, "top_iou": 0.1, "n": 8,
           "n_undefined": 0}
    assert CASCADE_MAX_SPEARMAN == 0.5
    assert cascade_verdict([{**row, "spearman": 0.9}, row])["passed"] is True
    v = cascade_verdict([row, {**row, "spearman": 0.887}])
    assert v["passed"] is False and "survive" in v["reason"] and v["spearman"] == 0.887
    assert cascade_verdict([{**row, "spearman": float("nan")}])["passed"] is False
    assert cascade_verdict([])["passed"] is False
    assert cascade_verdict([row], max_spearman=0.1)["passed"] is False
    # ranks that flip under randomization still follow the image: |Spearman| is judged (the gate's one rule)
    assert cascade_verdict([{**row, "spearman": -0.9}])["passed"] is False


def test_bad_maps_are_one_line_errors(data):
    model, x, y = data
    with pytest.raises(ShapeError, match="explain_fn returned"):
        efficient_mprt(model, x, y, lambda m, z, t: z.mean(1)[:, :-1])
    with pytest.raises(ShapeError, match="labels"):
        efficient_mprt(model, x, y[:-1], saliency)


def test_efficient_mprt_passes_only_a_rise_in_complexity() -> None:
    """One-sided, as Hedström et al. define it: a map that turns into a smooth blob under randomization (a fall)
    fails, as an unchanged complexity does; only a rise passes."""
    from advspatial.faithfulness.mprt import EFFICIENT_MPRT_MIN_RISE, _efficient_result

    gen = torch.Generator().manual_seed(0)
    sharp = torch.rand(6, 12, 12, generator=gen)                    # noise-like: high histogram entropy
    blob = torch.zeros(6, 12, 12)
    blob[:, 4:8, 4:8] = 1.0                                         # one flat blob: low entropy
    fell = _efficient_result(sharp, [blob], EFFICIENT_MPRT_MIN_RISE, 100)
    rose = _efficient_result(blob, [sharp], EFFICIENT_MPRT_MIN_RISE, 100)
    same = _efficient_result(sharp, [sharp.flip(1)], EFFICIENT_MPRT_MIN_RISE, 100)
    assert fell.median_rise < -EFFICIENT_MPRT_MIN_RISE and not fell.passed
    assert rose.median_rise > EFFICIENT_MPRT_MIN_RISE and rose.passed
    assert same.median_rise == pytest.approx(0.0) and not same.passed


def test_draws_are_keyed_by_their_seeds_and_do_not_depend_on_the_images_around_them(data):
    """Each draw is a re-initialization from its own seed: the first is the run's seed (the one-draw check), the
    others differ from it and from each other, and an image's values are the same whether it is checked alone or
    with others."""
    model, x, y = data
    rows = model_randomization_check(model, x, lambda m, z: saliency(m, z, y[: len(z)]), seed=5, draws=3)
    one = model_randomization_check(model, x, lambda m, z: saliency(m, z, y[: len(z)]), seed=5)
    last = rows[-1]
    assert len(last["per_draw"]) == 3 and len(set(last["draw_seeds"])) == 3 and last["draw_seeds"][0] == 5
    assert last["per_draw"][0] == one[-1]["per_draw"][0]
    assert last["per_draw"][1] != last["per_draw"][2]
    assert last["maps"] == 3 * len(x)
    alone = model_randomization_check(model, x[2:3], lambda m, z: saliency(m, z, y[2:3]), seed=5, draws=3)
    np.testing.assert_allclose([r[0] for r in alone[-1]["per_draw"]], [r[2] for r in last["per_draw"]], atol=1e-6)
    both = randomization_checks(model, x, y, saliency, seed=5, samples=3, draws=3)
    assert both.draw_seeds == tuple(last["draw_seeds"]) and both.smooth.spearman.shape == (3, len(x))
    first = randomization_checks(model, x, y, saliency, seed=5, samples=3)
    torch.testing.assert_close(both.smooth.spearman[:1], first.smooth.spearman)


def test_the_curve_draws_compare_every_step_and_the_others_only_the_last_which_the_rule_reads(data):
    """With curve_draws the steps before the last (no rule reads them) are compared on the first draws only; the
    last step, which the pass rule reads, on every draw, with the values of the check without curve_draws; each
    draw's maps cost a model of their own, so the maps made are counted as calls."""
    model, x, y = data
    calls = []

    def explain(m: nn.Module, z: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return saliency(m, z, y[: len(z)])

    every = model_randomization_check(model, x, explain, seed=5, draws=4, max_steps=3)
    made_every = len(calls)
    calls.clear()
    rows = model_randomization_check(model, x, explain, seed=5, draws=4, max_steps=3, curve_draws=1)
    assert (made_every, len(calls)) == (1 + 4 * 3, 1 + 3 + 3)   # the trained map, then the maps per draw
    assert [len(r["draw_seeds"]) for r in rows] == [1, 1, 4]
    assert rows[-1]["per_draw"] == every[-1]["per_draw"] and rows[-1]["draw_seeds"] == every[-1]["draw_seeds"]
    one = model_randomization_check(model, x, explain, seed=5, draws=1, max_steps=3)   # the first draw alone
    assert rows[0]["spearman"] == one[0]["spearman"] and rows[1]["spearman"] == one[1]["spearman"]
    assert rows[0]["spearman"] != every[0]["spearman"]   # the curve's point: one draw's, not the mean of four
    assert rows[0]["maps"] == len(x) and rows[-1]["maps"] == 4 * len(x)
    assert model_randomization_check(model, x, explain, seed=5, draws=2, max_steps=3, curve_draws=5)[0][
        "draw_seeds"] == every[0]["draw_seeds"][:2]
    with pytest.raises(ConfigError, match="curve_draws"):
        model_randomization_check(model, x, explain, draws=2, curve_draws=0)


def test_a_map_that_collapses_under_randomization_is_counted_as_changed_not_dropped(data):
    """A randomized map that is constant keeps none of the original's ranking: Spearman 0 in the cascade and in
    smooth MPRT, an entropy fall to 0 in efficient MPRT (-1), and every such map is counted in the record."""
    model, x, y = data
    trained = copy.deepcopy(model).eval()

    def explain(m: nn.Module, z: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """The saliency of the trained weights; a constant map for any other weights."""
        maps = saliency(m, z, y[: len(z)] if t is None else t)
        same = all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), trained.state_dict().values(),
                                                     strict=True))
        return maps if same else torch.zeros_like(maps)

    rows = model_randomization_check(trained, x, explain, seed=1, draws=2)
    assert rows[-1]["n_collapsed"] == 2 * len(x) and rows[-1]["spearman"] == 0.0 and rows[-1]["n"] == len(x)
    result = randomization_checks(trained, x, y, explain, seed=1, samples=2, draws=2).as_dict()
    assert result["smooth_mprt"]["n_collapsed"] == 2 * len(x) and result["smooth_mprt"]["spearman"] == 0.0
    assert result["efficient_mprt"]["n_collapsed"] == 2 * len(x) and result["efficient_mprt"]["rise"] == -1.0
    assert not result["efficient_mprt"]["passed"]


def test_each_check_prints_progress_lines_when_asked(data, capsys, monkeypatch):
    """Long randomization checks report progress (plain lines in a log: at the start, every ~30 s and at the end),
    counted in map computations; nothing without ``progress``."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    model, x, y = data
    model_randomization_check(model, x, lambda m, z: saliency(m, z, y), seed=0, max_steps=2, draws=2, progress=True)
    randomization_checks(model, x, y, saliency, seed=0, samples=2, draws=2, progress=True)
    err = capsys.readouterr().err
    assert "gate: cascading randomization" in err and "4/4" in err
    assert "gate: smooth and efficient MPRT" in err and "6/6" in err
    model_randomization_check(model, x, lambda m, z: saliency(m, z, y), seed=0, max_steps=2)
    assert capsys.readouterr().err == ""
