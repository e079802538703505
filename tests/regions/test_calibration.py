"""Calibration of the engine's p-values and CIs on simulated independent stationary random maps.

Under independence every null of the engine is true (:mod:`random_fields`), so the
share of repetitions with p < 0.05 must be about 0.05 for every statistic and null;
under an image-specific alternative the CI of the mean excess must cover the
truth at least 94% of the time. Few permutations per repetition keep this fast:
a Monte Carlo p = (1 + #{|T_b| >= |T|}) / (1 + B) with T exchangeable with the
T_b is exactly uniform on {1/(B+1), ..., 1} for continuous statistics, so with
B = 39, P(p <= 0.05) = 2/40 = 0.05 exactly (ties make it at most 0.05): a small B
costs power, never size, so the false-positive rate is unbiased.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advspatial.regions import STATISTICS
from advspatial.regions.inference import NULLS, compare_to_nulls

from random_fields import simulate

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


def test_false_positive_rate_of_every_statistic_and_null_is_nominal():
    torch.set_num_threads(1)
    rates = false_positive_rates(REPETITIONS)
    assert set(rates) == {(s, n) for s in STATISTICS for n in NULLS}
    bad = {k: v for k, v in rates.items() if not 0.03 <= v <= 0.07}
    assert not bad, f"false-positive rates outside [0.03, 0.07]: {bad}"
