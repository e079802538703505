"""The faithfulness gate (regions/faithfulness.py): known answers, batch invariance, Quantus cross-check."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from advspatial.attacks import make_attack
from advspatial.errors import ConfigError
from advspatial.regions import faithfulness as fg

SIZE = 16
PATCH = (slice(2, 8), slice(2, 8))   # the only pixels the fixture model reads (6x6, top left)
FAR = (slice(9, 15), slice(9, 15))   # a 6x6 square it ignores (bottom right)
N_IMAGES = 40


def patch_model(num_classes: int = 3, hidden: int = 8, seed: int = 0) -> nn.Sequential:
    """Flatten -> Linear(256, hidden) -> ReLU -> Linear(hidden, K): logits depend on the PATCH pixels only.

    Every weight on the patch is positive and every weight elsewhere exactly 0, so
    each logit rises with the patch and ignores the rest. The output biases make
    the logits equal at the mean patch (0.8), so the predicted class varies with
    the patch's pattern.
    """
    gen = torch.Generator().manual_seed(seed)
    on_patch = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    on_patch[PATCH] = True
    first, second = nn.Linear(SIZE * SIZE, hidden), nn.Linear(hidden, num_classes)
    with torch.no_grad():
        w1 = torch.rand(hidden, SIZE * SIZE, generator=gen) * on_patch.flatten()
        first.weight.copy_(w1)
        first.bias.zero_()
        w2 = torch.rand(num_classes, hidden, generator=gen) + 0.1
        second.weight.copy_(w2)
        at_mean = w2 @ w1 @ torch.full((SIZE * SIZE,), 0.8)
        second.bias.copy_(-at_mean)
    return nn.Sequential(nn.Flatten(), first, nn.ReLU(), second).eval()


def patch_images(n: int = N_IMAGES, seed: int = 1) -> torch.Tensor:
    """Dark background U[0,0.2), bright patch U[0.6,1)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, SIZE, SIZE, generator=gen) * 0.2
    x[:, :, PATCH[0], PATCH[1]] = 0.6 + 0.4 * torch.rand(n, 1, 6, 6, generator=gen)
    return x


def square_map(where: tuple[slice, slice], n: int = N_IMAGES, seed: int = 2) -> torch.Tensor:
    """Positive (distinct) values on one 6x6 square, 0 elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    maps = torch.zeros(n, SIZE, SIZE)
    maps[:, where[0], where[1]] = 0.5 + 0.5 * torch.rand(n, 6, 6, generator=gen)
    return maps


@pytest.fixture(scope="module")
def fixture():
    model = patch_model()
    x = patch_images()
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def gate(model, x, y, maps, fills=("zero", "blur"), **kw):
    ids = torch.arange(len(x)) + 100
    attack = make_attack("pgd", model, eps=0.1, alpha=0.025, steps=10, seed=0)
    cols = fg.deletion_columns(model, x, y, maps, fraction=0.2, fills=fills, sample_ids=ids)
    cols.update(fg.restricted_attack_columns(model, x, y, maps, attack, fraction=0.2, sample_ids=ids))
    return cols, fg.summarize_gate(cols, y, seed=0, fraction=0.2, **kw)


# -- known answers -------------------------------------------------------------------

def test_fixture_model_reads_only_the_patch(fixture):
    model, x, _ = fixture
    changed = x.clone()
    changed[:, :, FAR[0], FAR[1]] = torch.rand(len(x), 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(model(x), model(changed))
        brighter = x.clone()
        brighter[:, :, PATCH[0], PATCH[1]] += 0.01
        assert bool((model(brighter) > model(x)).all())
    assert len(torch.unique(fixture[2])) >= 2   # several classes for the per-class summary


def test_map_on_the_patch_passes_the_gate(fixture):
    model, x, y = fixture
    cols, result = gate(model, x, y, square_map(PATCH), fills=("zero", "blur", "noise"))
    assert result.passed, result.reason
    assert result.reason == "passed"
    assert result.n == N_IMAGES
    # only the 36 positive pixels are eligible (k = 51 > 36), and the random region matches
    assert bool((cols["roi:pixels"] == 36).all())
    for f in ("zero", "blur", "noise"):
        assert result.deletion[f]["logit"].estimate.low > 0
        assert result.deletion[f]["accuracy"].estimate.mean >= 0
    assert result.attack["margin"].estimate.low > 0
    assert result.attack["margin"].p < 0.01
    # the zero fill removes the whole patch: the classifier loses almost every image
    assert result.means["deletion"]["zero"]["drop_roi"] > result.means["deletion"]["zero"]["drop_random"]


def test_map_far_from_the_patch_fails_and_says_why(fixture):
    model, x, y = fixture
    cols, result = gate(model, x, y, square_map(FAR))
    assert not result.passed
    # filling or attacking pixels the model ignores changes nothing at all
    assert torch.equal(cols["deletion:zero:drop_roi"], torch.zeros(N_IMAGES))
    assert torch.allclose(cols["attack:margin_roi"], cols["attack:margin_clean"])
    assert result.deletion["zero"]["logit"].estimate.high < 0
    assert result.attack["margin"].estimate.high < 0
    assert "deletion:zero logit effect" in result.reason
    assert "deletion:blur logit effect" in result.reason
    assert "attack margin effect" in result.reason
    assert "insufficient" not in result.reason


def test_only_the_failing_check_is_named(fixture):
    """The patch map with the attack columns of the far map: deletion passes, the attack check fails."""
    model, x, y = fixture
    good, _ = gate(model, x, y, square_map(PATCH))
    bad, _ = gate(model, x, y, square_map(FAR))
    mixed = {**good, **{k: v for k, v in bad.items() if k.startswith("attack:")}}
    result = fg.summarize_gate(mixed, y)
    assert not result.passed
    assert result.reason.startswith("attack margin effect")
    assert "deletion" not in result.reason


def test_gate_needs_two_fills_an_attack_and_enough_images(fixture):
    model, x, y = fixture
    maps = square_map(PATCH)
    cols = fg.deletion_columns(model, x, y, maps, fills=("zero",))
    result = fg.summarize_gate(cols, y)
    assert not result.passed
    assert "need >= 2" in result.reason and "attack: no restricted-attack columns" in result.reason
    assert result.attack == {}
    full, _ = gate(model, x, y, maps)
    small = {k: v[:10] for k, v in full.items()}
    result = fg.summarize_gate(small, y[:10])
    assert not result.passed and result.reason == "insufficient data: n=10 < 30"
    assert fg.summarize_gate(small, y[:10], min_n=5).passed


def test_summary_per_class_and_json(fixture):
    model, x, y = fixture
    rows = [{"step": 1, "layer": "3", "spearman": 0.5, "pearson": math.nan, "top_iou": 0.2, "n": 3,
             "n_undefined": 0}]
    names = ["a", "b", "c"]
    cols, result = gate(model, x, y, square_map(PATCH), class_names=names, randomization=rows)
    d = result.as_dict()
    text = json.dumps(d)   # NaN is allowed
    assert json.loads(text)["passed"] is True
    assert set(d) == {"passed", "reason", "fraction", "n", "deletion", "attack", "means", "per_class",
                      "randomization"}
    assert set(d["deletion"]) == {"zero", "blur"}
    assert set(d["deletion"]["zero"]["logit"]) == {"mean", "low", "high", "n", "p"}
    assert set(d["attack"]) == {"margin", "accuracy"}
    present = {names[c] for c in torch.unique(y).tolist()}
    assert set(d["per_class"]) == present
    assert sum(c["n"] for c in d["per_class"].values()) == N_IMAGES
    c0 = names[int(y[0])]
    keep = y == y[0]
    diff = cols["deletion:zero:drop_roi"][keep] - cols["deletion:zero:drop_random"][keep]
    assert d["per_class"][c0]["deletion"]["zero"]["logit"]["mean"] == pytest.approx(float(diff.double().mean()))
    assert d["randomization"] == rows
    assert d["fraction"] == 0.2


# -- random regions and batch invariance ---------------------------------------------------

def test_random_region_same_in_any_batch_and_same_size():
    gen = torch.Generator().manual_seed(3)
    maps = torch.rand(5, SIZE, SIZE, generator=gen)
    maps[2, 2:] = 0          # image 2 has 32 positive pixels, fewer than k = 51: a smaller RoI
    ids = torch.tensor([7, 3, 11, 50, 2])
    roi = fg.roi_mask(maps, 0.2, seed=0, sample_ids=ids)
    rnd = fg.random_region_like(roi, seed=0, sample_ids=ids)
    assert torch.equal(rnd.flatten(1).sum(1), roi.flatten(1).sum(1))
    assert int(roi[2].sum()) == 2 * SIZE and int(roi[0].sum()) == round(0.2 * SIZE * SIZE)
    for i in range(5):
        alone = fg.random_region_like(roi[i:i + 1], seed=0, sample_ids=ids[i:i + 1])
        assert torch.equal(alone[0], rnd[i])
    # another id or another seed gives another region; the region is not the RoI
    other = fg.random_region_like(roi[:1], seed=0, sample_ids=torch.tensor([8]))
    assert not torch.equal(other[0], rnd[0])
    assert not torch.equal(fg.random_region_like(roi, seed=1, sample_ids=ids), rnd)
    assert not torch.equal(rnd, roi)


def test_columns_do_not_depend_on_the_batch(fixture):
    model, x, y = fixture
    maps = square_map(PATCH)
    ids = torch.arange(5) + 40
    attack = make_attack("pgd", model, eps=0.1, alpha=0.025, steps=5, seed=0)
    fills = ("zero", "blur", "noise", "inpaint")

    def cols(sl: slice) -> dict:
        c = fg.deletion_columns(model, x[sl], y[sl], maps[sl], fills=fills, sample_ids=ids[sl])
        c.update(fg.restricted_attack_columns(model, x[sl], y[sl], maps[sl], attack, sample_ids=ids[sl]))
        return c

    batch = cols(slice(0, 5))
    merged = fg.concat_columns([cols(slice(i, i + 1)) for i in range(5)])
    assert set(batch) == set(merged)
    for key in batch:
        assert batch[key].shape == (5,) and batch[key].device.type == "cpu"
        assert torch.allclose(batch[key].double(), merged[key].double(), atol=1e-5), key


def test_noise_fill_changes_only_the_region_and_stays_in_range(fixture):
    model, x, y = fixture
    maps = square_map(FAR, n=4)
    ids = torch.tensor([1, 2, 3, 4])
    region = fg.roi_mask(maps, 0.2, 0, ids)
    fill = fg._make_deletion_fill("noise", {}, x[:4], 0, ids)
    out = fill(x[:4], region)
    assert torch.equal(out[~region[:, None].expand_as(out)], x[:4][~region[:, None].expand_as(out)])
    inside = out[region[:, None].expand_as(out)] - x[:4][region[:, None].expand_as(out)]
    assert float(inside.abs().mean()) > 0.1
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    with pytest.raises(ConfigError):
        fg._make_deletion_fill("noise", {"width": 2}, x[:4], 0, ids)
    with pytest.raises(ConfigError):
        fg.deletion_columns(model, x, y, square_map(PATCH), fills=("zero", "sharpen"))
    with pytest.raises(ConfigError):
        fg.deletion_columns(model, x, y, square_map(PATCH), fills=("mean", "zero"))   # needs dataset_mean
    cols = fg.deletion_columns(model, x[:4], y[:4], maps, fills=("mean", "zero"),
                               fill_params={"mean": {"dataset_mean": (0.3,)}})
    assert "deletion:mean:drop_roi" in cols


# -- model randomization ---------------------------------------------------------------

def saliency_of(labels: torch.Tensor):
    def fn(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).gather(1, labels[:, None]).sum(), x)
        return g.abs().sum(1)

    return fn


def test_randomization_check_leaves_the_model_alone_and_correlation_falls(fixture):
    _, x, y = fixture
    model = patch_model()
    model.train()
    model[3].eval()                      # a mixed mode must survive as it is
    model[1].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}

    rows = fg.model_randomization_check(model, x[:8], saliency_of(y[:8]), seed=0)

    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert modes == {name: m.training for name, m in model.named_modules()}
    assert flags == {name: p.requires_grad for name, p in model.named_parameters()}
    # from the output backwards: the second linear layer, then the first
    assert [r["layer"] for r in rows] == ["3", "1"]
    assert [r["step"] for r in rows] == [1, 2]
    # the head alone randomized: the map still sits on the patch; the first layer too: it spreads out
    assert rows[0]["spearman"] > 0.8
    assert rows[1]["spearman"] < 0.5
    assert rows[1]["spearman"] < rows[0]["spearman"]
    assert rows[1]["top_iou"] < rows[0]["top_iou"]
    assert all(r["n"] == 8 and r["n_undefined"] == 0 for r in rows)
    # seeded: the same rows again; max_layers cuts the cascade
    assert fg.model_randomization_check(model, x[:8], saliency_of(y[:8]), seed=0) == rows
    assert len(fg.model_randomization_check(model, x[:8], saliency_of(y[:8]), seed=0, max_layers=1)) == 1
    # max_steps compares fewer steps of the *same* cumulative cascade: the last row is unchanged
    capped = fg.model_randomization_check(model, x[:8], saliency_of(y[:8]), seed=0, max_steps=1)
    assert capped == rows[-1:]


def test_parameterized_layers_follow_the_forward_pass(tiny_cnn):
    model = tiny_cnn(size=16)
    names = [n for n, _ in fg.parameterized_layers(model, torch.rand(1, 1, 16, 16))]
    assert names == ["features.0", "features.3", "fc"]
    assert not model._forward_hooks and not model.fc._forward_hooks   # hooks removed


# -- Quantus cross-check ---------------------------------------------------------------

@pytest.mark.parametrize("baseline,softmax", [(0.0, False), ("black", False), (0.0, True)])
def test_deletion_curve_matches_quantus_pixel_flipping(tiny_cnn, baseline, softmax):
    """Our ``deletion_curve`` (zero fill) equals ``quantus.PixelFlipping`` to 1e-5.

    Compared: the true-class score after deleting the top 32, 64, ..., 256 pixels of
    a strictly positive attribution with distinct values (so quantus's argsort and
    our top-fraction rule pick the same pixels), one-channel 16x16 images (quantus
    ranks elements, we rank pixels: the same for one channel). PixelFlipping with
    ``features_in_step=32`` flips cumulatively, one step per point, with no point for
    the clean image. ``perturb_baseline=0.0`` replaces by 0, like our zero fill;
    ``"black"`` is the per-image minimum of the current (perturbed) image, which is 0
    here because every image holds a 0 pixel. ``normalise=False, abs=False`` leave
    the attribution as it is (normalising by the max would not change the ranking
    anyway). ``softmax=False`` compares logits, ``softmax=True`` probabilities.
    """
    quantus = pytest.importorskip("quantus")
    model = tiny_cnn(size=16, seed=4)
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(6, 1, 16, 16, generator=gen)
    x[:, 0, 0, 0] = 0.0
    y = torch.randint(0, 10, (6,), generator=gen)
    a = torch.rand(6, 16, 16, generator=gen) + 0.01
    metric = quantus.PixelFlipping(features_in_step=32, perturb_baseline=baseline, normalise=False, abs=False,
                                   disable_warnings=True, display_progressbar=False)
    theirs = np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a[:, None].numpy(),
                               channel_first=True, softmax=softmax, device="cpu"))
    fractions = [32 * j / 256 for j in range(1, 9)]
    ours = fg.deletion_curve(model, x, y, a, fractions, "zero", score="probability" if softmax else "logit")
    assert theirs.shape == tuple(ours.shape) == (6, 8)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-5)
    # and the curve's ends: everything deleted = the model on a black image
    with torch.no_grad():
        black = model(torch.zeros(1, 1, 16, 16))
        black = black.softmax(1) if softmax else black
    assert torch.allclose(ours[:, -1], black[0, y], atol=1e-6)


def test_deletion_curve_agrees_with_deletion_columns(fixture):
    model, x, y = fixture
    maps = square_map(PATCH)
    curve = fg.deletion_curve(model, x, y, maps, [0.2], "blur", sample_ids=torch.arange(N_IMAGES))
    cols = fg.deletion_columns(model, x, y, maps, fills=("zero", "blur"))
    assert torch.allclose(cols["clean:logit"] - curve[:, 0], cols["deletion:blur:drop_roi"], atol=1e-5)


def synthetic_columns(effects: dict[str, torch.Tensor], margin_effect: torch.Tensor) -> dict[str, torch.Tensor]:
    """Columns whose paired differences are the given per-image effects (random part cancels)."""
    n = len(margin_effect)
    base = torch.linspace(0, 3, n)
    cols = {"roi:pixels": torch.full((n,), 51.0)}
    for f, e in effects.items():
        cols |= {f"deletion:{f}:drop_roi": base + e, f"deletion:{f}:drop_random": base.clone(),
                 f"deletion:{f}:correct_roi": torch.zeros(n), f"deletion:{f}:correct_random": torch.ones(n)}
    cols |= {"attack:margin_random": base.clone(), "attack:margin_roi": base - margin_effect,
             "attack:correct_roi": torch.zeros(n), "attack:correct_random": torch.zeros(n)}
    return cols


def test_a_positive_mean_is_not_enough_the_ci_must_lie_above_zero():
    from advspatial.regions.inference import bootstrap_mean_ci, paired_p

    n = 40
    clear = torch.full((n,), 0.5) + 0.01 * torch.arange(n)
    noisy = torch.tensor([1.0, -1.0] * (n // 2)) + 0.05        # mean 0.05, CI spans 0
    labels = torch.zeros(n, dtype=torch.long)
    cols = synthetic_columns({"zero": clear, "blur": noisy}, clear)
    result = fg.summarize_gate(cols, labels, seed=3)
    e = result.deletion["blur"]["logit"]
    assert e.estimate.mean == pytest.approx(0.05) and e.estimate.low < 0 < e.estimate.high
    assert not result.passed
    assert result.reason.startswith("deletion:blur logit effect +0.05") and "zero" not in result.reason
    diff = cols["deletion:blur:drop_roi"].double() - cols["deletion:blur:drop_random"].double()
    assert e.estimate == bootstrap_mean_ci(diff, 3)
    assert e.p == paired_p(diff)
    assert result.deletion["zero"]["accuracy"].estimate.mean == 1.0    # correct_random - correct_roi
    assert result.attack["accuracy"].estimate.mean == 0.0
    ok = fg.summarize_gate(synthetic_columns({"zero": clear, "blur": clear}, clear), labels)
    assert ok.passed, ok.reason
    weak_attack = fg.summarize_gate(synthetic_columns({"zero": clear, "blur": clear}, noisy), labels)
    assert not weak_attack.passed and weak_attack.reason.startswith("attack margin effect")


# -- the control region ------------------------------------------------------------------

def test_shifted_control_is_the_roi_rolled_and_keyed_by_sample_id() -> None:
    from advspatial.regions import shifted_region_like

    gen = torch.Generator().manual_seed(0)
    roi = torch.rand(6, 12, 10, generator=gen) > 0.8
    ids = torch.tensor([5, 9, 2, 7, 1, 3])
    shifted = shifted_region_like(roi, seed=4, sample_ids=ids)
    for i in range(6):
        rolls = [torch.roll(roi[i], (dy, dx), (0, 1)) for dy in range(12) for dx in range(10)]
        assert any(torch.equal(shifted[i], r) for r in rolls)  # the same shape, moved cyclically
        alone = shifted_region_like(roi[i:i + 1], seed=4, sample_ids=ids[i:i + 1])
        assert torch.equal(alone[0], shifted[i])  # independent of the batch
    same = roi[:1].expand(6, -1, -1).contiguous()
    moved = shifted_region_like(same, seed=4, sample_ids=ids)
    assert len({tuple(m.flatten().tolist()) for m in moved}) > 1  # different ids, different places


class EdgeCounter(nn.Module):
    """Class-0 logit = minus the cyclic total variation of the image: cares about edges, not about places."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tv = (x - torch.roll(x, 1, 2)).abs().sum((1, 2, 3)) + (x - torch.roll(x, 1, 3)).abs().sum((1, 2, 3))
        return torch.stack([-tv, torch.full_like(tv, -1e6)], 1)


def test_a_location_blind_model_sees_no_difference_with_the_shifted_control() -> None:
    """Deleting a blob vs scattered pixels: only edges matter to this model, so the RoI is not special.

    The shifted control (same shape) measures exactly 0; the scattered control makes the
    blob look *less* important than random pixels, the artefact that rejected every
    coherent explainer on natural images.
    """
    x = torch.full((4, 1, 12, 12), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    imp = torch.zeros(4, 12, 12)
    imp[:, 3:7, 4:8] = 1.0 + torch.rand(4, 4, 4, generator=torch.Generator().manual_seed(0))
    shifted = fg.deletion_columns(EdgeCounter(), x, y, imp, fraction=16 / 144, fills=("zero",), control="shifted")
    scattered = fg.deletion_columns(EdgeCounter(), x, y, imp, fraction=16 / 144, fills=("zero",), control="scattered")
    effect = lambda c: c["deletion:zero:drop_roi"] - c["deletion:zero:drop_random"]  # noqa: E731
    torch.testing.assert_close(effect(shifted), torch.zeros(4), atol=1e-4, rtol=0)
    assert bool((effect(scattered) < 0).all())
    with pytest.raises(ConfigError, match="gate control"):
        fg.deletion_columns(EdgeCounter(), x, y, imp, control="checkerboard")


def test_randomization_steps_are_evenly_spaced_and_keep_first_and_last() -> None:
    assert fg.evaluation_steps(8, None) == set(range(1, 9))
    assert fg.evaluation_steps(8, 12) == set(range(1, 9))
    steps = fg.evaluation_steps(100, 12)
    assert len(steps) == 12 and min(steps) == 1 and max(steps) == 100
    assert fg.evaluation_steps(100, 1) == {100}


@pytest.mark.parametrize(("side", "sigma"), [(16, 1.0), (28, 1.0), (32, 1.0), (64, 2.0), (224, 7.0)])
def test_deletion_blur_sigma_scales_with_the_shorter_side(side, sigma):
    from advspatial.regions.deletion import deletion_blur_sigma

    assert deletion_blur_sigma(side, 2 * side) == sigma == deletion_blur_sigma(2 * side, side)


def test_gate_blur_fill_defaults_to_the_scaled_sigma_and_an_explicit_sigma_wins():
    """At 64 pixels the default blur is sigma 2 (not 1); ``fill_params`` still sets it exactly."""
    from advspatial.regions.fills import fill

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 4))
    x = torch.rand(3, 3, 64, 64)
    y = torch.tensor([0, 1, 2])
    maps = torch.rand(3, 64, 64)
    cols = fg.deletion_columns(model, x, y, maps, fills=("zero", "blur"))
    roi = fg.roi_mask(maps, 0.2, 0, torch.arange(3))
    with torch.no_grad():
        clean = model(x)[torch.arange(3), y]
        for sigma, expected_equal in ((2.0, True), (1.0, False)):
            filled = model(fill(x, roi, "blur", sigma=sigma))[torch.arange(3), y]
            assert torch.allclose(clean - filled, cols["deletion:blur:drop_roi"], atol=1e-5) is expected_equal
    explicit = fg.deletion_columns(model, x, y, maps, fills=("zero", "blur"), fill_params={"blur": {"sigma": 1.0}})
    with torch.no_grad():
        one = model(fill(x, roi, "blur", sigma=1.0))[torch.arange(3), y]
    assert torch.allclose(clean - one, explicit["deletion:blur:drop_roi"], atol=1e-5)
