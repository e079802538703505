"""The faithfulness gate (faithfulness/gate.py): known answers, batch invariance, Quantus cross-check."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from advspatial import stacked_runs
from advspatial.attacks import make_attack
from advspatial.errors import ConfigError
from advspatial.faithfulness import deletion, randomization
from advspatial.regions import controls
from advspatial.faithfulness import gate as fg
from advspatial.faithfulness.record import GateResult
from advspatial.passes import PassLedger
from advspatial.regions.references import LayoutSums, reference_maps

SIZE = 16
PATCH = (slice(2, 8), slice(2, 8))   # the only pixels the fixture model reads (6x6, top left)
FAR = (slice(9, 15), slice(9, 15))   # a 6x6 square it ignores (bottom right)
N_IMAGES = 40
#: randomization rows of a map that changes when the weights are destroyed (for tests about the other comparisons)
PASSING_RANDOMIZATION = [{"step": 1, "layer": "1", "spearman": 0.05, "pearson": math.nan, "top_iou": 0.1, "n": 3,
                          "n_undefined": 0}]


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


def regions_of(maps, x, y, ids, fraction=0.2, references=True):
    """Every region the gate compares, with the reference maps built as the gate stage builds them."""
    refs = None
    if references:
        sums = LayoutSums()
        sums.add(maps, y)
        class_layout, dataset_layout = sums.leave_one_out(maps, y)
        refs = reference_maps(x, {"class-layout": class_layout, "dataset-layout": dataset_layout})
    return deletion.gate_regions(maps, fraction, 0, ids, references=refs)


def gate(model, x, y, maps, fills=("zero", "blur"), fraction=0.2, randomization=PASSING_RANDOMIZATION, **kw):
    ids = torch.arange(len(x)) + 100
    attack = make_attack("pgd", model, eps=0.1, alpha=0.025, steps=10, seed=0)
    regions = regions_of(maps, x, y, ids, fraction)
    cols = deletion.deletion_columns(model, x, y, regions, fills=fills, sample_ids=ids)
    cols.update(deletion.restricted_attack_columns(model, x, y, regions, attack, sample_ids=ids))
    return cols, fg.summarize_gate(cols, y, seed=0, fraction=fraction, randomization=randomization, **kw)


# -- known answers: a model that reads bright spots inside an off-centre patch -----------------

SPOT = 2          # spots are SPOT x SPOT squares
SPOTS = 4         # per image inside the patch, and as many outside it (which the model ignores)


class SpotReader(nn.Module):
    """Logits = W @ relu(x - 0.5) with W zero outside PATCH: only bright pixels inside the patch count."""

    def __init__(self, num_classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        on_patch = torch.zeros(SIZE, SIZE)
        on_patch[PATCH] = 1.0
        self.read = nn.Linear(SIZE * SIZE, num_classes)
        with torch.no_grad():
            self.read.weight.copy_((0.5 + torch.rand(num_classes, SIZE * SIZE, generator=gen)) * on_patch.flatten())
            self.read.bias.copy_(torch.tensor([0.0, 0.3, 0.6])[:num_classes])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.read(torch.relu(x - 0.5).flatten(1))


def _place_spots(x: torch.Tensor, rows: range, cols: range, count: int, gen: torch.Generator) -> torch.Tensor:
    mask = torch.zeros(x.shape[-2:], dtype=torch.bool)
    for _ in range(count):
        r = int(torch.randint(rows.start, rows.stop - SPOT + 1, (1,), generator=gen))
        c = int(torch.randint(cols.start, cols.stop - SPOT + 1, (1,), generator=gen))
        mask[r:r + SPOT, c:c + SPOT] = True
    return mask


def spot_images(n: int = N_IMAGES, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark background U[0, 0.3); bright spots U[0.8, 1) inside the patch and as many outside (bottom right).

    Returns the images and the (N,H,W) mask of the spots inside the patch (what the model reads).
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, SIZE, SIZE, generator=gen) * 0.3
    read = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    for i in range(n):
        inside = _place_spots(x, range(PATCH[0].start, PATCH[0].stop), range(PATCH[1].start, PATCH[1].stop),
                              SPOTS, gen)
        outside = _place_spots(x, range(8, SIZE), range(8, SIZE), SPOTS, gen)
        bright = inside | outside
        x[i, 0][bright] = 0.8 + 0.2 * torch.rand(int(bright.sum()), generator=gen)
        read[i] = inside
    return x, read


def gradient_times_input(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(z).gather(1, y[:, None]).sum(), z)
    return (g * x).clamp_min(0).sum(1).detach()


@pytest.fixture(scope="module")
def spots():
    model = SpotReader().eval()
    x, read = spot_images()
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y, read


def test_spot_model_reads_only_bright_pixels_in_the_patch(spots):
    model, x, y, read = spots
    changed = x.clone()
    changed[:, :, 8:, 8:] = torch.rand(len(x), 1, 8, 8)
    dim = x.clone()
    dim[~read[:, None].expand_as(x)] = torch.rand(int((~read).sum())) * 0.5   # all but the read spots below 0.5
    with torch.no_grad():
        assert torch.equal(model(x), model(changed))
        torch.testing.assert_close(model(x), model(dim))
    assert len(torch.unique(y)) >= 2


def test_the_true_explanation_passes_every_comparison(spots):
    """Gradient x input marks this image's read spots: it beats location, scatter, both layouts, the centre,
    intensity and edges, and changes when the weights are destroyed."""
    model, x, y, _ = spots
    maps = gradient_times_input(model, x, y)
    rows = randomization.model_randomization_check(model, x[:32], lambda m, z: gradient_times_input(m, z, y[:32]),
                                                 seed=0)
    _, result = gate(model, x, y, maps, fraction=SPOTS * SPOT * SPOT / SIZE ** 2, randomization=rows)
    assert result.passed, result.reason
    assert list(result.comparisons) == [s.name for s in fg.COMPARISONS] + ["randomization"]
    assert all(c.beats and c.checked for c in result.comparisons.values())
    # scatter is judged with the edge-free fill only (blur), every other comparison with both fills
    assert set(result.comparisons["scatter"].effects) == {"deletion:blur", "attack"}
    assert set(result.comparisons["class-layout"].effects) == {"deletion:zero", "deletion:blur", "attack"}


@pytest.mark.parametrize("name", ["centre", "intensity", "edges", "class-layout", "dataset-layout"])
def test_every_model_free_reference_fed_as_the_explainer_fails(spots, name):
    """A model-free map as the 'explainer' cannot change when the weights are destroyed: it fails the gate on
    randomization, whatever it does on the damage rows; an image reference against itself reads equivalent
    (specificity; the gate's layout references are rebuilt from the explainer's own maps, so not the same region)."""
    model, x, y, _ = spots
    sums = LayoutSums()
    grad = gradient_times_input(model, x, y)
    sums.add(grad, y)
    class_layout, dataset_layout = sums.leave_one_out(grad, y)
    maps = reference_maps(x, {"class-layout": class_layout, "dataset-layout": dataset_layout})[name]
    fixed = maps[:8]
    rows = randomization.model_randomization_check(model, x[:8], lambda m, z: fixed, seed=0)
    _, result = gate(model, x, y, maps, fraction=SPOTS * SPOT * SPOT / SIZE ** 2, randomization=rows)
    assert result.status == "failed" and not result.passed
    assert "fails randomization: cascade |Spearman| after every layer 1.00" in result.reason
    assert result.comparisons[name].role == "specificity"
    if name in ("centre", "intensity", "edges"):
        assert result.comparisons[name].outcome == "equivalent"


def test_a_centred_blob_is_equivalent_to_the_centre_prior_and_does_not_pass(spots):
    """Being as damaging as the centre prior is a specificity finding, worded as one; it never enters the gate's
    verdict, which rests on location, scatter and randomization alone (the centre disc overlaps the model's
    off-centre patch, so it beats its own shape elsewhere; a real model-free map then fails on randomization,
    checked above)."""
    from advspatial.faithfulness.specificity import specificity_sentence

    model, x, y, _ = spots
    maps = reference_maps(x, names=("centre",))["centre"] + 1e-3 * torch.rand(len(x), SIZE, SIZE)
    _, result = gate(model, x, y, maps, fraction=SPOTS * SPOT * SPOT / SIZE ** 2)
    assert result.passed == all(result.comparisons[k].beats for k in ("location", "scatter", "randomization"))
    assert result.comparisons["centre"].outcome == "equivalent"
    sentence = specificity_sentence(result)
    deletion_part = sentence.split(". On the restricted attack")[0]
    assert deletion_part.startswith("On deletion (what the model uses): the RoI is within the margin of ")
    assert "the centre prior" in deletion_part and "the model looks " in deletion_part
    assert "at the centre of the image" in deletion_part
    assert "centre" not in result.reason and "insufficient" not in result.reason


def test_randomization_decides(spots):
    """The same columns with a map that survives full randomization (|Spearman| 0.9) fail the gate."""
    model, x, y, _ = spots
    maps = gradient_times_input(model, x, y)
    survives = [{"step": 1, "layer": "read", "spearman": 0.9, "n": 8}]
    _, result = gate(model, x, y, maps, fraction=SPOTS * SPOT * SPOT / SIZE ** 2, randomization=survives)
    assert not result.passed
    assert result.comparisons["randomization"].checked and not result.comparisons["randomization"].beats
    assert result.comparisons["randomization"].failing() == ["cascade |Spearman| after every layer 0.90 (>= 0.5 fails)"]
    assert all(c.beats for k, c in result.comparisons.items() if k != "randomization")
    _, unchecked = gate(model, x, y, maps, fraction=SPOTS * SPOT * SPOT / SIZE ** 2, randomization=None)
    assert unchecked.status == "undecided" and "randomization not checked" in unchecked.reason
    mprt = {"passed": False, "smooth_mprt": {"spearman": 0.8, "bound": 0.5, "passed": False},
            "efficient_mprt": {"rise": 0.01, "bound": 0.05, "passed": False}}
    cols, _ = gate(model, x, y, maps, fraction=SPOTS * SPOT * SPOT / SIZE ** 2)
    smooth_fails = fg.summarize_gate(cols, y, randomization=PASSING_RANDOMIZATION, mprt=mprt)
    assert smooth_fails.status == "failed" and "fails randomization: smooth MPRT" in smooth_fails.reason
    assert smooth_fails.comparisons["randomization"].failing() == [
        "smooth MPRT Spearman 0.80 (>= 0.5 fails)",
        "efficient MPRT complexity change +0.01 (a rise of at most +0.05 fails)"]
    from advspatial.experiments.measurement.roi import roi_label
    assert "fails the randomization check: smooth MPRT Spearman 0.80" in roi_label(smooth_fails)
    assert set(smooth_fails.comparisons["randomization"].effects) == {
        "cascade spearman", "smooth MPRT spearman", "efficient MPRT rise"}
    ok = fg.summarize_gate(cols, y, randomization=PASSING_RANDOMIZATION,
                           mprt={"passed": True, "smooth_mprt": {"spearman": 0.1, "passed": True},
                                 "efficient_mprt": {"rise": -0.3, "passed": True}})
    assert ok.passed, ok.reason
    from advspatial.faithfulness.sanity import randomization_passed

    assert randomization_passed([{"spearman": -0.6}]) is False
    assert randomization_passed([{"spearman": 0.49}]) is True
    assert randomization_passed([{"spearman": math.nan}]) is False
    assert randomization_passed([]) is None


# -- known answers: an object at a per-image place; a model that reads only global colour ------

class BarDetector(nn.Module):
    """Two classes: a horizontal or a vertical bright bar anywhere (conv on relu(x - 0.5), max over places)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 4, padding=0, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0, 0, :] = 1.0
            self.conv.weight[1, 0, :, 0] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.relu(x - 0.5)).amax((2, 3))


def test_a_per_image_object_map_beats_the_class_layout():
    gen = torch.Generator().manual_seed(7)
    n = 40
    x = torch.rand(n, 1, SIZE, SIZE, generator=gen) * 0.3
    truth = torch.zeros(n, SIZE, SIZE)
    y = torch.arange(n) % 2
    for i in range(n):
        r, c = (int(v) for v in torch.randint(0, SIZE - 4, (2,), generator=gen))
        if y[i] == 0:
            truth[i, r, c:c + 4] = 1.0
        else:
            truth[i, r:r + 4, c] = 1.0
    x[:, 0][truth.bool()] = 0.9
    model = BarDetector().eval()
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), y)
    maps = truth + 1e-3 * torch.rand(n, SIZE, SIZE, generator=gen)
    _, result = gate(model, x, y, maps, fraction=4 / SIZE ** 2)
    assert result.comparisons["class-layout"].beats, result.comparisons["class-layout"].failing()
    assert result.comparisons["dataset-layout"].beats


class GlobalColour(nn.Module):
    """Reads only the mean colour: logits (mean red - mean green, its negative)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x[:, 0].mean((1, 2)) - x[:, 1].mean((1, 2))
        return torch.stack([d, -d], 1) * 10


@pytest.mark.parametrize("which", ["random", "centre", "intensity", "edges", "gradient"])
def test_no_map_passes_for_a_model_that_reads_only_global_colour(which):
    """Flat-coloured images (mid-range, so no clipping) and a model of their mean colour: every place is alike."""
    gen = torch.Generator().manual_seed(11)
    colour = 0.3 + 0.4 * torch.rand(40, 3, 1, 1, generator=gen)
    x = colour.expand(40, 3, SIZE, SIZE).contiguous()
    model = GlobalColour().eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    assert len(torch.unique(y)) == 2
    if which == "random":
        maps = torch.rand(40, SIZE, SIZE, generator=gen)
    elif which == "gradient":
        maps = gradient_times_input(model, x, y) + 1e-3 * torch.rand(40, SIZE, SIZE, generator=gen)
    else:
        maps = reference_maps(x, names=(which,))[which] + 1e-3 * torch.rand(40, SIZE, SIZE, generator=gen)
    _, result = gate(model, x, y, maps)
    assert not result.passed, which
    assert not result.comparisons["location"].beats and not result.comparisons["scatter"].beats


def test_the_blur_control_says_when_a_blurred_copy_does_as_well(spots):
    model, x, y, _ = spots
    sharp = gradient_times_input(model, x, y)
    _, result = gate(model, x, y, sharp, fraction=SPOTS * SPOT * SPOT / SIZE ** 2)
    blurred = result.blurred
    assert blurred is not None
    beaten = [k for k, c in result.comparisons.items() if c.beats and k in blurred.beats]
    assert beaten and blurred.as_good == all(blurred.beats[k] for k in beaten)
    assert set(blurred.vs_map) == {"deletion:zero", "deletion:blur", "attack"}
    # a map that does not beat the class layout: its blurred copy cannot be "as good" on nothing
    far = square_map(FAR)
    _, nothing = gate(model, x, y, far, fraction=SPOTS * SPOT * SPOT / SIZE ** 2)
    assert nothing.blurred is not None and nothing.blurred.as_good is False
    smooth = deletion.blurred_map(sharp)
    sparse = fg.gini_sparseness(sharp)
    assert bool((sparse > fg.gini_sparseness(smooth)).all())
    assert float(fg.gini_sparseness(torch.ones(1, 4, 4))) == pytest.approx(0.0)
    one = torch.zeros(1, 4, 4)
    one[0, 1, 2] = 1.0
    assert float(fg.gini_sparseness(one)) == pytest.approx(15 / 16)


# -- the older fixture: a model that reads a whole patch ---------------------------------------

def test_map_far_from_the_patch_fails_and_says_why(fixture):
    model, x, y = fixture
    cols, result = gate(model, x, y, square_map(FAR))
    assert not result.passed
    # filling or attacking pixels the model ignores changes nothing at all
    assert torch.equal(cols["deletion:zero:drop:roi"], torch.zeros(N_IMAGES))
    assert torch.allclose(cols["attack:margin:roi"], cols["attack:margin_clean"])
    location = result.comparisons["location"].decisions
    assert location["deletion:zero"].high < 0 and location["attack"].high < 0
    assert result.status == "failed" and location["attack"].outcome == "not better"
    assert "not better than location x deletion:zero" in result.reason
    assert "insufficient" not in result.reason


def test_gate_needs_two_fills_and_enough_images(fixture):
    model, x, y = fixture
    maps = square_map(PATCH)
    ids = torch.arange(len(x))
    cols = deletion.deletion_columns(model, x, y, regions_of(maps, x, y, ids), fills=("zero",))
    result = fg.summarize_gate(cols, y, randomization=PASSING_RANDOMIZATION)
    assert result.status == "failed"
    assert "need >= 2" in result.reason
    assert "attack" not in result.comparisons["location"].decisions
    full, _ = gate(model, x, y, maps)
    small = {k: v[:10] for k, v in full.items()}
    result = fg.summarize_gate(small, y[:10], randomization=PASSING_RANDOMIZATION)
    assert result.status == "undecided" and "insufficient data: n=10 < 30" in result.reason


def test_summary_per_class_and_json(fixture):
    model, x, y = fixture
    names = ["a", "b", "c"]
    cols, result = gate(model, x, y, square_map(PATCH), class_names=names)
    d = result.as_dict()
    text = json.dumps(d)   # NaN is allowed
    assert json.loads(text)["n"] == N_IMAGES
    assert set(d) == {"passed", "reason", "status", "fraction", "n", "comparisons", "control", "margin",
                      "restricted_attack", "blurred", "complexity", "means", "per_class", "randomization", "skipped",
                      "images_planned", "images_examined", "stopped"}
    location = d["comparisons"]["location"]
    assert set(location) == {"name", "words", "beats", "checked", "effects", "failed", "role", "outcome",
                             "decisions"}
    assert set(location["effects"]) == {"deletion:zero", "deletion:blur", "attack"}
    assert set(location["effects"]["deletion:zero"]) == {"mean", "low", "high", "n", "p"}
    assert set(location["decisions"]["attack"]) == {"rule", "outcome", "mean", "low", "high", "low90", "high90",
                                                    "sd", "n", "margin", "within_margin"}
    present = {names[c] for c in torch.unique(y).tolist()}
    assert set(d["per_class"]) == present
    # the record reads back from its JSON exactly (what a re-rendered report reads), the explainer's name included
    result.method = "saliency"
    text = json.dumps(result.as_dict())
    again = GateResult.from_dict(json.loads(text))
    assert json.dumps(again.as_dict()) == text and again.method == "saliency"
    assert again.not_beaten() == result.not_beaten() and again.per_class.keys() == result.per_class.keys()
    assert sum(c["n"] for c in d["per_class"].values()) == N_IMAGES
    c0 = names[int(y[0])]
    keep = y == y[0]
    diff = cols["deletion:zero:drop:roi"][keep] - cols["deletion:zero:drop:shifted"][keep]
    assert d["per_class"][c0]["effects"]["deletion:zero"]["mean"] == pytest.approx(float(diff.double().mean()))
    assert d["randomization"] == PASSING_RANDOMIZATION
    assert d["fraction"] == 0.2


# -- regions and batch invariance ------------------------------------------------------------

def test_random_region_same_in_any_batch_and_same_size():
    gen = torch.Generator().manual_seed(3)
    maps = torch.rand(5, SIZE, SIZE, generator=gen)
    maps[2, 2:] = 0          # image 2 has 32 positive pixels, fewer than k = 51: a smaller RoI
    ids = torch.tensor([7, 3, 11, 50, 2])
    roi = deletion.roi_mask(maps, 0.2, seed=0, sample_ids=ids)
    rnd = controls.random_region_like(roi, seed=0, sample_ids=ids)
    assert torch.equal(rnd.flatten(1).sum(1), roi.flatten(1).sum(1))
    assert int(roi[2].sum()) == 2 * SIZE and int(roi[0].sum()) == round(0.2 * SIZE * SIZE)
    for i in range(5):
        alone = controls.random_region_like(roi[i:i + 1], seed=0, sample_ids=ids[i:i + 1])
        assert torch.equal(alone[0], rnd[i])
    other = controls.random_region_like(roi[:1], seed=0, sample_ids=torch.tensor([8]))
    assert not torch.equal(other[0], rnd[0])
    assert not torch.equal(controls.random_region_like(roi, seed=1, sample_ids=ids), rnd)
    assert not torch.equal(rnd, roi)


def test_every_gate_region_has_the_roi_pixel_count(spots):
    model, x, y, _ = spots
    maps = gradient_times_input(model, x, y)
    maps[3] = 0.0
    maps[3, 0, :5] = 1.0                                   # image 3: only 5 positive pixels, a smaller RoI
    regions = regions_of(maps, x, y, torch.arange(len(x)), fraction=0.2)
    counts = regions["roi"].flatten(1).sum(1)
    assert int(counts[3]) == 5
    assert set(regions) == {"roi", "shifted", "scattered", "blurred",
                            *(f"ref:{r}" for r in ("class-layout", "dataset-layout", "centre", "intensity", "edges"))}
    for name, region in regions.items():
        assert torch.equal(region.flatten(1).sum(1), counts), name


def test_columns_do_not_depend_on_the_batch(fixture):
    model, x, y = fixture
    maps = square_map(PATCH)
    ids = torch.arange(5) + 40
    attack = make_attack("pgd", model, eps=0.1, alpha=0.025, steps=5, seed=0)
    fills = ("zero", "blur", "noise", "inpaint", "road")
    regions = regions_of(maps[:5], x[:5], y[:5], ids)

    def cols(sl: slice) -> dict:
        alone = deletion.gate_regions(maps[sl], 0.2, 0, ids[sl])
        assert all(torch.equal(alone[k], regions[k][sl]) for k in alone)   # regions are keyed by sample id
        part = {k: v[sl] for k, v in regions.items()}
        c = deletion.deletion_columns(model, x[sl], y[sl], part, fills=fills, sample_ids=ids[sl])
        c.update(deletion.restricted_attack_columns(model, x[sl], y[sl], part, attack, sample_ids=ids[sl]))
        return c

    batch = cols(slice(0, 5))
    merged = deletion.concat_columns([cols(slice(i, i + 1)) for i in range(5)])
    assert set(batch) == set(merged)
    for key in batch:
        assert batch[key].shape == (5,) and batch[key].device.type == "cpu"
        assert torch.allclose(batch[key].double(), merged[key].double(), atol=1e-5, equal_nan=True), key


def test_deletion_is_one_round_and_stacked_calls_give_the_same_columns(fixture, monkeypatch):
    """Every (fill, region) of a batch is one round: one call each on a CPU, and the same columns from calls
    stacked as a GPU makes them (forced here on the CPU)."""
    model, x, y = fixture
    ids = torch.arange(len(x))
    regions = regions_of(square_map(PATCH), x, y, ids)
    ledger = PassLedger()
    ledger.watch(model)
    one_each = deletion.deletion_columns(model, x, y, regions, fills=("zero", "blur"), sample_ids=ids)
    assert (ledger.outside.calls, ledger.outside.rounds) == (1 + 2 * len(regions), 2)
    monkeypatch.setattr(stacked_runs, "CPU_STACK_ELEMENTS", 1 << 30)
    stacked = deletion.deletion_columns(model, x, y, regions, fills=("zero", "blur"), sample_ids=ids)
    assert (ledger.outside.calls, ledger.outside.rounds) == (1 + 2 * len(regions) + 2, 4)
    assert set(stacked) == set(one_each)
    for key in one_each:
        assert torch.allclose(stacked[key].double(), one_each[key].double(), atol=1e-5, equal_nan=True), key


def test_roads_fill_of_every_region_is_one_solve_on_a_device_and_each_image_gets_its_own_fill(fixture, monkeypatch):
    """On a device (its path forced here, and its stacked calls) ROAD's fills of a batch's regions are one
    conjugate-gradient solve, not one a region, and equal to the bit the fills made one region at a time (each system
    stops on its own; the noise is keyed by sample id); a CPU's stacking setting of 0 keeps one solve a region."""
    from advspatial import host_syncs
    from advspatial.regions import imputation_iterative

    model, x, y = fixture
    ids = torch.arange(len(x)) + 7
    regions = list(regions_of(square_map(PATCH), x, y, ids).values())
    monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", True)
    solves: list[int] = []
    solve = imputation_iterative.RegionSystems.solve
    monkeypatch.setattr(imputation_iterative.RegionSystems, "solve",
                        lambda self, b: solves.append(len(b)) or solve(self, b))
    road = deletion.make_deletion_fill("road", {}, x, 0, ids)
    one_each = list(deletion.filled_images(road, x, regions))
    assert solves == [len(x)] * len(regions)
    solves.clear()
    monkeypatch.setattr(stacked_runs, "CPU_STACK_ELEMENTS", 1 << 30)
    stacked = list(deletion.filled_images(road, x, regions))
    assert solves == [len(x) * len(regions)]
    assert all(torch.equal(a, b) for a, b in zip(stacked, one_each, strict=True))
    solves.clear()
    monkeypatch.setattr(stacked_runs, "CPU_STACK_ELEMENTS", 3 * x.numel())  # three regions a solve
    assert all(torch.equal(a, b) for a, b in zip(deletion.filled_images(road, x, regions), one_each, strict=True))
    assert solves == [3 * len(x)] * (len(regions) // 3) + [len(regions) % 3 * len(x)] * (len(regions) % 3 > 0)
    blur = deletion.make_deletion_fill("blur", {}, x, 0, ids)  # any other fill: one region a fill, as ever
    assert all(torch.equal(a, blur(x, r)) for a, r in zip(deletion.filled_images(blur, x, regions), regions,
                                                          strict=True))


def test_the_restricted_attack_is_bounded_per_call_and_per_run_and_gives_the_same_columns(fixture, monkeypatch):
    """Regions x images exceed a batch at 224 px: the stack is attacked as one run whose model calls take
    ``max_images`` images at a time (each step one round), a run holds at most ``run_rows`` rows; same columns."""
    model, x, y = fixture
    ids = torch.arange(5) + 40
    regions = regions_of(square_map(PATCH)[:5], x[:5], y[:5], ids)
    attack = make_attack("pgd", model, eps=0.1, alpha=0.025, steps=5, seed=0)
    calls: list[int] = []
    handle = model.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[0]))
    rows = 5 * len(regions)
    try:
        whole = deletion.restricted_attack_columns(model, x[:5], y[:5], regions, attack, sample_ids=ids)
        assert max(calls) == rows                            # the fixture's stack fits the default bound: one call
        calls.clear()
        ledger = PassLedger()
        ledger.watch(model)
        split = deletion.restricted_attack_columns(model, x[:5], y[:5], regions, attack, sample_ids=ids,
                                                   max_images=7)
        assert max(calls) == 7 and len(calls) > 5 + 1       # the attack's calls, 7 images at most
        steps_rounds = ledger.outside.rounds
        assert steps_rounds < len(calls) / 2                 # the chunks of one step are one round
        calls.clear()
        monkeypatch.setattr(stacked_runs, "STACK_ELEMENTS", 9 * x[0].numel())  # a run holds 9 rows at most
        before = ledger.outside.rounds
        runs = deletion.restricted_attack_columns(model, x[:5], y[:5], regions, attack, sample_ids=ids, max_images=7)
        assert ledger.outside.rounds - before > 2 * steps_rounds  # several runs, one after another
        monkeypatch.undo()
        # a run whose gradient's activations fit 9 rows of memory: runs of 7 rows (whole calls), one after another
        kept = stacked_runs.kept_bytes_per_row(model, x[:1])
        monkeypatch.setattr(stacked_runs, "device_memory", lambda _: int(9 * kept / stacked_runs.RUN_MEMORY_SHARE))
        assert stacked_runs.run_rows(7, x, model) == 7
        before = ledger.outside.rounds
        bounded = deletion.restricted_attack_columns(model, x[:5], y[:5], regions, attack, sample_ids=ids,
                                                     max_images=7)
        assert ledger.outside.rounds - before > 2 * steps_rounds
    finally:
        handle.remove()
    assert max(calls) == 7
    for other in (split, runs, bounded):
        assert set(whole) == set(other)
        for key in whole:
            assert torch.allclose(whole[key].double(), other[key].double(), atol=1e-5, equal_nan=True), key
    with pytest.raises(ConfigError, match="max_images"):
        deletion.restricted_attack_columns(model, x[:5], y[:5], regions, attack, sample_ids=ids, max_images=0)


def test_a_missing_reference_is_left_out_not_faked(fixture):
    """An image alone in its class has no class layout: its columns are NaN and the comparison uses the rest."""
    model, x, y = fixture
    maps = square_map(PATCH)
    y = torch.where(y == 2, 0, y)
    y[0] = 2                                               # a class of its own
    ids = torch.arange(len(x))
    regions = regions_of(maps, x, y, ids)
    assert not bool(regions["ref:class-layout"][0].any()) and bool(regions["ref:class-layout"][1].any())
    cols = deletion.deletion_columns(model, x, y, regions, fills=("zero", "blur"), sample_ids=ids)
    assert math.isnan(float(cols["deletion:zero:drop:ref:class-layout"][0]))
    assert not math.isnan(float(cols["deletion:zero:drop:ref:class-layout"][1]))
    result = fg.summarize_gate(cols, y, randomization=PASSING_RANDOMIZATION)
    assert result.comparisons["class-layout"].effects["deletion:zero"].estimate.n == len(x) - 1


def test_noise_fill_changes_only_the_region_and_stays_in_range(fixture):
    model, x, y = fixture
    maps = square_map(FAR, n=4)
    ids = torch.tensor([1, 2, 3, 4])
    region = deletion.roi_mask(maps, 0.2, 0, ids)
    fill = deletion.make_deletion_fill("noise", {}, x[:4], 0, ids)
    out = fill(x[:4], region)
    assert torch.equal(out[~region[:, None].expand_as(out)], x[:4][~region[:, None].expand_as(out)])
    inside = out[region[:, None].expand_as(out)] - x[:4][region[:, None].expand_as(out)]
    assert float(inside.abs().mean()) > 0.1
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    with pytest.raises(ConfigError):
        deletion.make_deletion_fill("noise", {"width": 2}, x[:4], 0, ids)
    regions = {"roi": deletion.roi_mask(square_map(PATCH), 0.2)}
    with pytest.raises(ConfigError):
        deletion.deletion_columns(model, x, y, regions, fills=("zero", "sharpen"))
    with pytest.raises(ConfigError):
        deletion.deletion_columns(model, x, y, regions, fills=("mean", "zero"))   # needs dataset_mean
    cols = deletion.deletion_columns(model, x[:4], y[:4], {"roi": region}, fills=("mean", "zero"),
                               fill_params={"mean": {"dataset_mean": (0.3,)}})
    assert "deletion:mean:drop:roi" in cols


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

    rows = randomization.model_randomization_check(model, x[:8], saliency_of(y[:8]), seed=0)

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
    assert randomization.model_randomization_check(model, x[:8], saliency_of(y[:8]), seed=0) == rows
    assert len(randomization.model_randomization_check(model, x[:8], saliency_of(y[:8]), seed=0, max_layers=1)) == 1
    # max_steps compares fewer steps of the *same* cumulative cascade: the last row is unchanged
    capped = randomization.model_randomization_check(model, x[:8], saliency_of(y[:8]), seed=0, max_steps=1)
    assert capped == rows[-1:]


def test_parameterized_layers_follow_the_forward_pass(tiny_cnn):
    model = tiny_cnn(size=16)
    names = [n for n, _ in randomization.parameterized_layers(model, torch.rand(1, 1, 16, 16))]
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
    ours = deletion.deletion_curve(model, x, y, a, fractions, "zero", score="probability" if softmax else "logit")
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
    curve = deletion.deletion_curve(model, x, y, maps, [0.2], "blur", sample_ids=torch.arange(N_IMAGES))
    cols = deletion.deletion_columns(model, x, y, {"roi": deletion.roi_mask(maps, 0.2)}, fills=("zero", "blur"))
    assert torch.allclose(cols["clean:logit"] - curve[:, 0], cols["deletion:blur:drop:roi"], atol=1e-5)


def synthetic_columns(effects: dict[str, torch.Tensor], margin_effect: torch.Tensor,
                      regions: tuple[str, ...] = ("shifted",)) -> dict[str, torch.Tensor]:
    """Columns whose paired differences (RoI against each of ``regions``) are the given per-image effects: deletion
    drops differ by ``effects[fill]``; the margin the restricted attack removes (of a clean margin of 4) differs by
    ``margin_effect``."""
    n = len(margin_effect)
    base = torch.linspace(0, 3, n)
    cols = {"roi:pixels": torch.full((n,), 51.0), "attack:margin_clean": torch.full((n,), 4.0)}
    for f, e in effects.items():
        cols |= {f"deletion:{f}:drop:roi": base + e, f"deletion:{f}:correct:roi": torch.zeros(n)}
        for r in regions:
            cols |= {f"deletion:{f}:drop:{r}": base.clone(), f"deletion:{f}:correct:{r}": torch.ones(n)}
    share = base / 30
    cols |= {"attack:margin:roi": 4 * (1 - share) - margin_effect, "attack:correct:roi": torch.zeros(n)}
    for r in regions:
        cols |= {f"attack:margin:{r}": 4 * (1 - share), f"attack:correct:{r}": torch.zeros(n)}
    return cols


EVERY_REGION = ("shifted", "scattered", *(f"ref:{r}" for r in ("class-layout", "dataset-layout", "centre",
                                                                "intensity", "edges")))


def test_a_positive_mean_is_not_enough_the_ci_must_lie_above_zero():
    from advspatial.statistics.estimates import bootstrap_mean_ci, paired_p

    n = 40
    clear = torch.full((n,), 0.5) + 0.01 * torch.arange(n)
    noisy = torch.tensor([1.0, -1.0] * (n // 2)) + 0.05        # mean 0.05, CI spans 0
    labels = torch.zeros(n, dtype=torch.long)
    cols = synthetic_columns({"zero": clear, "blur": noisy}, clear, EVERY_REGION)
    result = fg.summarize_gate(cols, labels, seed=3, randomization=PASSING_RANDOMIZATION)
    e = result.comparisons["location"].effects["deletion:blur"]
    assert e.estimate.mean == pytest.approx(0.05) and e.estimate.low < 0 < e.estimate.high
    assert result.status == "undecided"
    assert "location x deletion:blur +0.05" in result.reason and "correct images would decide" in result.reason
    assert "deletion:zero" not in result.reason
    diff = cols["deletion:blur:drop:roi"].double() - cols["deletion:blur:drop:shifted"].double()
    assert e.estimate == bootstrap_mean_ci(diff, 3)
    assert e.p == paired_p(diff)
    ok = fg.summarize_gate(synthetic_columns({"zero": clear, "blur": clear}, clear, EVERY_REGION), labels,
                           randomization=PASSING_RANDOMIZATION)
    assert ok.passed, ok.reason
    # the restricted attack reads gradient mass: reported, never counted in the pass rule
    weak_attack = fg.summarize_gate(synthetic_columns({"zero": clear, "blur": clear}, noisy, EVERY_REGION), labels,
                                    randomization=PASSING_RANDOMIZATION)
    assert weak_attack.passed and "attack" not in weak_attack.reason
    location = weak_attack.comparisons["location"]
    assert location.decisions["attack"].outcome == "undecided" and location.outcome == "beats" and location.beats
    assert all(cell.measure != "attack" for cell in weak_attack.cells())
    # a missing reference is a specificity row left out: it does not stop the gate from passing
    faithful_only = ("shifted", "scattered")
    missing = fg.summarize_gate(synthetic_columns({"zero": clear, "blur": clear}, clear, faithful_only), labels,
                                randomization=PASSING_RANDOMIZATION)
    assert missing.passed and not missing.comparisons["class-layout"].checked


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
    regions = deletion.gate_regions(imp, fraction=16 / 144, references={}, blur_control=False)
    cols = deletion.deletion_columns(EdgeCounter(), x, y, regions, fills=("zero", "blur"))
    effect = lambda fill, c: cols[f"deletion:{fill}:drop:roi"] - cols[f"deletion:{fill}:drop:{c}"]  # noqa: E731
    torch.testing.assert_close(effect("zero", "shifted"), torch.zeros(4), atol=1e-4, rtol=0)
    assert bool((effect("zero", "scattered") < 0).all())
    # the blur fill of a flat image changes nothing, so it creates no edges: scatter is judged with it
    torch.testing.assert_close(effect("blur", "scattered"), torch.zeros(4), atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="gate control"):
        deletion.gate_regions(imp, controls=("checkerboard",))


def test_randomization_steps_are_evenly_spaced_and_keep_first_and_last() -> None:
    assert randomization.evaluation_steps(8, None) == set(range(1, 9))
    assert randomization.evaluation_steps(8, 12) == set(range(1, 9))
    steps = randomization.evaluation_steps(100, 12)
    assert len(steps) == 12 and min(steps) == 1 and max(steps) == 100
    assert randomization.evaluation_steps(100, 1) == {100}


@pytest.mark.parametrize(("side", "sigma"), [(16, 1.0), (28, 1.0), (32, 1.0), (64, 2.0), (224, 7.0)])
def test_deletion_blur_sigma_scales_with_the_shorter_side(side, sigma):
    from advspatial.faithfulness.deletion import deletion_blur_sigma

    assert deletion_blur_sigma(side, 2 * side) == sigma == deletion_blur_sigma(2 * side, side)


def test_gate_blur_fill_defaults_to_the_scaled_sigma_and_an_explicit_sigma_wins():
    """At 64 pixels the default blur is sigma 2 (not 1); ``fill_params`` still sets it exactly."""
    from advspatial.regions.fills import fill

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 4))
    x = torch.rand(3, 3, 64, 64)
    y = torch.tensor([0, 1, 2])
    maps = torch.rand(3, 64, 64)
    roi = deletion.roi_mask(maps, 0.2, 0, torch.arange(3))
    cols = deletion.deletion_columns(model, x, y, {"roi": roi}, fills=("zero", "blur"))
    with torch.no_grad():
        clean = model(x)[torch.arange(3), y]
        for sigma, expected_equal in ((2.0, True), (1.0, False)):
            filled = model(fill(x, roi, "blur", sigma=sigma))[torch.arange(3), y]
            assert torch.allclose(clean - filled, cols["deletion:blur:drop:roi"], atol=1e-5) is expected_equal
    explicit = deletion.deletion_columns(model, x, y, {"roi": roi}, fills=("zero", "blur"),
                                   fill_params={"blur": {"sigma": 1.0}})
    with torch.no_grad():
        one = model(fill(x, roi, "blur", sigma=1.0))[torch.arange(3), y]
    assert torch.allclose(clean - one, explicit["deletion:blur:drop:roi"], atol=1e-5)
