"""The randomization row read with CIs over its images (faithfulness/sanity.py): passes, fails or undecided."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advspatial.faithfulness.gate import summarize_gate
from advspatial.faithfulness.sanity import (
    cascade_reading, check_projection, efficient_reading, randomization_comparison, randomization_passed,
    smooth_reading,
)
from advspatial.statistics.estimates import Estimate, bootstrap_median_ci


def values(mean: float, sd: float, n: int = 16, seed: int = 0) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, sd, n))


@pytest.mark.parametrize(("per_image", "outcome"), [
    ([1.0] * 16, "fails"),                 # a model-free map: rank agreement 1 on every image
    (values(0.05, 0.2), "passes"),
    (values(0.5, 0.3), "undecided"),       # a mean near the bound on 16 images decides nothing
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
    ([0.0] * 16, "fails"),                 # the complexity did not change at all
    (values(0.0, 0.01), "fails"),          # tightly unchanged: equivalent to no change
    (values(-0.04, 0.05), "undecided"),    # a median a hair inside the bound, on 16 images
    (values(0.3, 0.1), "passes"),
    (values(-0.3, 0.1), "passes"),         # a fall counts: a CAM on a randomized network is a smooth blob
])
def test_efficient_mprt_is_read_with_the_ci_of_its_median(per_image: list[float], outcome: str) -> None:
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
            "efficient_mprt": {"rise": -0.04, "bound": 0.05, "per_image": values(-0.04, 0.05, seed=3)}}
    gate = summarize_gate(cols, torch.zeros(n, dtype=torch.long), randomization=cascade, mprt=mprt)
    row = gate.comparisons["randomization"]
    assert gate.status == "undecided" and row.outcome == "undecided" and not row.failed
    assert "randomization undecided: efficient MPRT complexity change -0.0" in gate.reason
    assert randomization_comparison(cascade, mprt).undecided == row.undecided


def test_the_median_ci_holds_the_median_and_narrows_with_more_images() -> None:
    small, large = values(0.1, 1.0, 20), values(0.1, 1.0, 2000)
    e, f = bootstrap_median_ci(small), bootstrap_median_ci(large)
    assert e.low <= float(np.median(small)) <= e.high and e.n == 20
    assert f.high - f.low < e.high - e.low
    assert bootstrap_median_ci([]).n == 0 and bootstrap_median_ci([2.0]).low == 2.0


# -- the check images that would decide an undecided check --------------------------------------------------------

def test_an_undecided_efficient_mprt_projects_the_check_images_by_the_normal_formula() -> None:
    # the default run's reading: median change -0.09 [-0.12, -0.03] on 16 images, undecided against +-0.05
    e = Estimate(-0.09, -0.12, -0.03, 16)
    sd = 0.045 / 1.959964 * 4
    expected = math.ceil(((1.959964 + 0.841621) * sd / 0.04) ** 2)
    p = check_projection("efficient MPRT rise", e)
    assert (p.outcome, p.images) == ("passes", expected)


@pytest.mark.parametrize(("name", "estimate", "leans"), [
    ("efficient MPRT rise", Estimate(0.01, -0.03, 0.06, 16), "fails"),      # no change so far: leans "did not change"
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
    per_image = values(-0.09, 0.12, seed=2)  # median -0.11 [-0.14, -0.03] on 16 images
    reading = efficient_reading({"rise": float(np.median(per_image)), "per_image": per_image})
    assert reading.outcome == "undecided"
    assert "check images would decide it" in reading.text and "--randomization-images" in reading.text
