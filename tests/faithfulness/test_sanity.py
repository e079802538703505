"""The randomization row read with CIs over its draws and images (faithfulness/sanity.py): passes, fails or
undecided."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from advspatial.faithfulness.draws import draws_to_decide
from advspatial.faithfulness.gate import summarize_gate
from advspatial.faithfulness.sanity import (
    cascade_reading, check_projection, efficient_reading, randomization_comparison, randomization_passed,
    smooth_reading,
)
from advspatial.statistics.estimates import Estimate, bootstrap_median_ci


def values(mean: float, sd: float, n: int = 64, seed: int = 0) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, sd, n))


@pytest.mark.parametrize(("per_image", "outcome"), [
    ([1.0] * 64, "fails"),                 # a model-free map: rank agreement 1 on every image
    (values(0.05, 0.2), "passes"),
    (values(0.5, 0.3), "undecided"),       # a mean near the bound decides nothing
    (values(-0.9, 0.05), "fails"),         # ranks flipped, still the same map up to sign
])
def test_the_cascade_is_read_with_the_ci_of_its_mean_spearman(per_image: list[float], outcome: str) -> None:
    rows = [{"step": 1, "spearman": float(np.mean(per_image)), "per_image": per_image}]
    assert cascade_reading(rows).outcome == outcome
    assert randomization_passed(rows) is {"passes": True, "fails": False, "undecided": None}[outcome]


def test_smooth_mprt_without_per_image_values_is_read_by_its_point_value() -> None:
    assert smooth_reading({"spearman": 0.8, "bound": 0.5, "passed": False}).outcome == "fails"
    assert smooth_reading({"spearman": 0.1, "passed": True}).outcome == "passes"
    assert smooth_reading({"spearman": 0.42, "per_image": values(0.5, 0.3)}).outcome == "undecided"


@pytest.mark.parametrize(("per_image", "outcome"), [
    ([0.0] * 64, "fails"),                 # the complexity did not change at all
    (values(0.0, 0.01), "fails"),          # tightly unchanged
    (values(0.05, 0.1), "undecided"),      # a median on the bound
    (values(0.3, 0.1), "passes"),
    (values(-0.3, 0.1), "fails"),          # one-sided: a fall (a CAM turned into a smooth blob) is not a pass
])
def test_efficient_mprt_is_read_one_sided_with_the_ci_of_its_median(per_image: list[float], outcome: str) -> None:
    reading = efficient_reading({"rise": float(np.median(per_image)), "bound": 0.05, "per_image": per_image})
    assert reading.outcome == outcome and reading.text.startswith("efficient MPRT complexity change ")


def test_an_undecided_check_leaves_the_gate_undecided_and_is_named() -> None:
    n = 60
    gen = torch.Generator().manual_seed(0)
    cols = {"clean:correct": torch.ones(n), "attack:margin_clean": torch.full((n,), 4.0)}
    for fill in ("road", "blur"):
        cols[f"deletion:{fill}:drop:roi"] = 2.0 + 0.2 * torch.randn(n, generator=gen)
        for region in ("shifted", "scattered"):
            cols[f"deletion:{fill}:drop:{region}"] = 0.5 + 0.2 * torch.randn(n, generator=gen)
    cascade = [{"spearman": 0.02, "per_image": values(0.02, 0.2)}]
    mprt = {"smooth_mprt": {"spearman": 0.1, "per_image": values(0.1, 0.2)},
            "efficient_mprt": {"rise": 0.05, "bound": 0.05, "per_image": values(0.05, 0.05, seed=3)}}
    gate = summarize_gate(cols, torch.zeros(n, dtype=torch.long), randomization=cascade, mprt=mprt)
    row = gate.comparisons["randomization"]
    assert gate.status == "undecided" and row.outcome == "undecided" and not row.failed
    assert "randomization undecided: efficient MPRT complexity change +0.0" in gate.reason
    assert randomization_comparison(cascade, mprt).undecided == row.undecided


def test_the_median_ci_holds_the_median_and_narrows_with_more_images() -> None:
    small, large = values(0.1, 1.0, 20), values(0.1, 1.0, 2000)
    e, f = bootstrap_median_ci(small), bootstrap_median_ci(large)
    assert e.low <= float(np.median(small)) <= e.high and e.n == 20
    assert f.high - f.low < e.high - e.low
    assert bootstrap_median_ci([]).n == 0 and bootstrap_median_ci([2.0]).low == 2.0


# -- the check images that would decide an undecided check --------------------------------------------------------

def test_an_undecided_efficient_mprt_projects_the_check_images_by_the_normal_formula() -> None:
    # a median change of +0.09 [+0.03, +0.12] on 64 images, undecided against +0.05
    e = Estimate(0.09, 0.03, 0.12, 64)
    sd = 0.045 / 1.959964 * 8
    expected = math.ceil(((1.959964 + 0.841621) * sd / 0.04) ** 2)
    p = check_projection("efficient MPRT rise", e)
    assert (p.outcome, p.images) == ("passes", expected)


@pytest.mark.parametrize(("name", "estimate", "leans"), [
    ("efficient MPRT rise", Estimate(0.01, -0.03, 0.06, 16), "fails"),      # no rise so far
    ("efficient MPRT rise", Estimate(-0.40, -0.60, 0.10, 16), "fails"),     # a fall leans fails too
    ("cascade spearman", Estimate(0.40, 0.20, 0.60, 16), "passes"),          # inside +-0.5
    ("cascade spearman", Estimate(-0.60, -0.80, -0.40, 16), "fails"),        # beyond -0.5: the map up to sign
    ("smooth MPRT spearman", Estimate(0.55, 0.40, 0.70, 16), "fails"),
])
def test_a_check_leans_to_the_side_its_value_lies_on(name: str, estimate: Estimate, leans: str) -> None:
    p = check_projection(name, estimate)
    assert p.outcome == leans and 2 <= p.images < math.inf


def test_a_value_nearer_its_bound_needs_more_check_images() -> None:
    far, near = Estimate(0.30, 0.10, 0.50, 16), Estimate(0.45, 0.25, 0.65, 16)
    assert check_projection("cascade spearman", near).images > check_projection("cascade spearman", far).images


def test_an_undecided_check_names_the_images_that_would_decide_it() -> None:
    per_image = values(0.06, 0.12, seed=2)
    reading = efficient_reading({"rise": float(np.median(per_image)), "per_image": per_image})
    assert reading.outcome == "undecided"
    assert "check images would decide it" in reading.text and "--randomization-images" in reading.text
    # the projected outcome reads as one, not as a label of the options ("would decide it, fails: --randomization-...")
    assert re.search(r"would decide it, as '(passes|fails)'; --randomization-images sets them\)$", reading.text)


def test_an_undecided_check_of_several_draws_names_draws_and_images_in_words() -> None:
    per_draw = [values(0.03 * d, 0.12, seed=d) for d in range(5)]   # draws spread around the bound +0.05
    reading = efficient_reading({"rise": 0.06, "per_draw": per_draw})
    assert reading.outcome == "undecided"
    assert re.search(r"\(about [\d,]+ re-initializations? at these 64 check images, or about [\d,]+ check images at "
                     r"these 5 re-initializations, would decide it, as '(passes|fails)'; --randomization-draws and "
                     r"--randomization-images set them\)$", reading.text), reading.text


# -- too few check images, collapsed maps ---------------------------------------------------------------------------

def test_one_check_image_reads_insufficient_data_and_never_passes() -> None:
    """Like every row of the gate, a check below the gate's minimum of images is undecided, whatever its value."""
    cascade = [{"spearman": 0.02, "per_draw": [[0.02]] * 5}]
    mprt = {"smooth_mprt": {"spearman": 0.1, "per_draw": [[0.1]] * 5},
            "efficient_mprt": {"rise": 0.4, "per_draw": [[0.4]] * 5}}
    row = randomization_comparison(cascade, mprt, min_n=30)
    assert not row.beats and not row.failed and len(row.undecided) == 3
    assert all("insufficient data (1 check image < 30)" in t for t in row.undecided)
    assert all("check images would decide it" in t for t in row.undecided)
    assert check_projection("efficient MPRT rise", Estimate(0.4, 0.4, 0.4, 1)).images == 30


def test_collapsed_maps_are_shown_in_the_checks_words() -> None:
    per_draw = [values(0.1, 0.2, seed=d) for d in range(5)]
    reading = cascade_reading([{"spearman": 0.1, "per_draw": per_draw, "n_collapsed": 3, "maps": 320}])
    assert "3 of 320 randomized maps collapsed to constants (counted as Spearman 0)" in reading.text
    eff = efficient_reading({"rise": 0.1, "per_draw": per_draw, "n_collapsed": 3, "maps": 320, "n_undefined": 2})
    assert "counted as a fall to entropy 0" in eff.text and "2 trained-model maps constant, left out" in eff.text


def test_the_checks_minimum_is_the_gates() -> None:
    from advspatial.faithfulness.gate import MIN_N
    from advspatial.faithfulness.sanity import MIN_CHECK_IMAGES

    assert MIN_CHECK_IMAGES == MIN_N


def test_plan_lists_randomization_checks_short_of_images_as_undecided() -> None:
    """`advspatial plan` lists a check read on one image, with at least the gate's minimum as the images needed."""
    from advspatial.report.planning import randomization_rows

    row = randomization_comparison([{"spearman": 0.02, "per_draw": [[0.02]] * 5}],
                                   {"smooth_mprt": {"spearman": 0.1, "per_draw": [[0.1]] * 5},
                                    "efficient_mprt": {"rise": 0.4, "per_draw": [[0.4]] * 5}})
    rows = randomization_rows("gradcam", row)
    assert [r.subject for r in rows] == [
        "gate gradcam: randomization: cascade |Spearman|", "gate gradcam: randomization: smooth MPRT Spearman",
        "gate gradcam: randomization: efficient MPRT complexity change"]
    assert all(r.n == 1 and r.images >= 30 and r.leans == "passes" for r in rows)


def test_draws_that_differ_more_than_the_images_project_the_reinitializations_that_would_decide() -> None:
    """Five draws far apart (medians -0.45 ... +0.15) on 128 images whose noise is small: the CI spans the bound for
    the draws' sake, and the text names the re-initializations (--randomization-draws) beside the check images."""
    rng = np.random.default_rng(5)
    table = [list(center + rng.normal(0, 0.02, 128)) for center in (-0.45, -0.30, -0.15, 0.0, 0.15)]
    reading = efficient_reading({"rise": -0.15, "per_draw": table})
    assert reading.outcome == "undecided"
    assert "re-initializations at these 128 check images" in reading.text
    assert "--randomization-draws" in reading.text


def test_the_projected_reinitializations_fall_as_the_value_moves_from_its_bound() -> None:
    table = [[0.0, 0.2], [0.4, 0.6], [0.2, 0.4]]
    near, far = draws_to_decide(table, "mean", 0.2), draws_to_decide(table, "mean", 0.6)
    assert far < near < math.inf
    assert draws_to_decide([[0.1, 0.2]], "mean", 0.5) == math.inf          # one draw: no spread between draws
    assert draws_to_decide([[0.3], [0.3]], "mean", 0.5) == math.inf         # no spread at all
