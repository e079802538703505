"""Calibration of the engine's p-values and CIs on simulated independent stationary random maps.

Under independence every null of the engine is true (:mod:`random_fields`), so the
share of repetitions with p <= 0.05 must be about 0.05 for every statistic and null;
under an image-specific alternative the CI of the mean excess must cover the
truth at least 94% of the time. Few permutations per repetition keep this fast:
a Monte Carlo p = (1 + #{|T_b| >= |T|}) / (1 + B) with T exchangeable with the
T_b is exactly uniform on {1/(B+1), ..., 1} for continuous statistics, so with
B = 39, P(p <= 0.05) = 2/40 = 0.05 exactly (ties make it at most 0.05): a small B
costs power, never size, so the false-positive rate is unbiased.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from advspatial.regions import STATISTICS, binarize
from advspatial.statistics.nulls import NULLS
from advspatial.statistics.inference import compare_to_nulls

# -- independent stationary random maps on a torus: every null of the engine is true in mean ----------

def blob_maps(rng: np.random.Generator, n: int, size: int = 12, blobs: int = 4, width: float = 1.5) -> np.ndarray:
    """(n, size, size) sums of ``blobs`` Gaussian blobs with random centres and amplitudes (torus distance)."""
    grid = np.arange(size)
    centres = rng.uniform(0, size, size=(n, blobs, 2))
    amplitude = rng.uniform(0.5, 1.5, size=(n, blobs, 1, 1))
    dy = np.abs(grid[None, None, :] - centres[..., 0:1])
    dx = np.abs(grid[None, None, :] - centres[..., 1:2])
    dy, dx = np.minimum(dy, size - dy), np.minimum(dx, size - dx)
    d2 = dy[..., :, None] ** 2 + dx[..., None, :] ** 2
    return (amplitude * np.exp(-d2 / (2 * width ** 2))).sum(1)


def simulate(rng: np.random.Generator, n: int = 200, size: int = 12, signal: float = 0.0) -> dict[str, torch.Tensor]:
    """One data set: importance and attack maps, their top-20% regions, labels (10 classes) and a composition.

    ``signal`` > 0 adds ``signal * importance * U^3`` to the attack map: an image-specific alternative (the
    attack leans towards this image's own important pixels).
    """
    importance = blob_maps(rng, n, size)
    attack = blob_maps(rng, n, size) * rng.uniform(size=(n, size, size)) ** 6
    if signal:
        attack = attack + signal * importance * rng.uniform(size=(n, size, size)) ** 3
    foreground = blob_maps(rng, n, size)
    imp, att = torch.from_numpy(importance), torch.from_numpy(attack)
    ids = torch.arange(n)
    roi = binarize(imp, fraction=0.2, seed=0, sample_ids=ids).mask
    roa = binarize(att, fraction=0.2, seed=1, sample_ids=ids).mask
    fg = torch.from_numpy(foreground > np.quantile(foreground, 0.6, axis=(1, 2), keepdims=True))
    composition = (roa & fg).flatten(1).sum(1).double() / roa.flatten(1).sum(1).double()
    return {"importance": imp, "attack": att, "roi": roi, "roa": roa, "labels": ids % 10,
            "composition": composition}


REPETITIONS = 500
PERMUTATIONS = 39  # (B + 1) * 0.05 = 2: the size of the test at 0.05 is exact


def false_positive_rates(repetitions: int, seed: int = 0) -> dict[tuple[str, str], float]:
    """Share of p < 0.05 per (statistic, null) over ``repetitions`` independent simulations (n = 200, 10 classes)."""
    rng = np.random.default_rng(seed)
    hits: dict[tuple[str, str], list[bool]] = {}
    for rep in range(repetitions):
        d = simulate(rng)
        res = compare_to_nulls(d["importance"], d["attack"], d["roi"], d["roa"], d["labels"], d["composition"],
                               n_permutations=PERMUTATIONS, seed=rep)
        for s, by_null in res.items():
            for null, c in by_null.items():
                hits.setdefault((s, null), []).append(c.p <= 0.05)
    return {k: float(np.mean(v)) for k, v in hits.items()}


def test_false_positive_rates_are_nominal_per_null_and_never_liberal():
    """Fast version (500 data sets, ~45 s): 24 rates of 500 draws each have a binomial SE of 0.0097, so [0.03, 0.07]
    per cell would fail by chance alone in about half of the seeds; here the rate pooled over the statistics of each
    null must lie in [0.03, 0.07] and no cell may exceed 0.07 (the old uniform null's failure: 0.17 to 0.93)."""
    torch.set_num_threads(1)
    rates = false_positive_rates(REPETITIONS)
    assert set(rates) == {(s, n) for s in STATISTICS for n in NULLS}
    liberal = {k: v for k, v in rates.items() if v > 0.07}
    assert not liberal, f"false-positive rates above 0.07: {liberal}"
    for null in NULLS:
        pooled = float(np.mean([rates[(s, null)] for s in STATISTICS]))
        assert 0.03 <= pooled <= 0.07, (null, pooled)


@pytest.mark.skipif(not os.environ.get("ADVSPATIAL_CALIBRATION"), reason="opt-in: ADVSPATIAL_CALIBRATION=1 (2 min)")
def test_false_positive_rate_of_every_statistic_and_null_is_in_the_band():
    """The full requirement (2,000 data sets, ~2 min; SE 0.0049 per cell): every rate in [0.03, 0.07]."""
    torch.set_num_threads(1)
    rates = false_positive_rates(2000, seed=1)
    bad = {k: v for k, v in rates.items() if not 0.03 <= v <= 0.07}
    assert not bad, f"false-positive rates outside [0.03, 0.07]: {bad}"
