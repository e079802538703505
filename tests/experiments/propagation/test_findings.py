"""The propagation experiment's findings from the per-image rows, and their parts' serialization
(:mod:`advspatial.experiments.propagation.findings`), with the paired claim and the locality columns they read."""

from __future__ import annotations

import json
import math

import pytest
import torch

from advspatial.analysis.locality import locality_analysis
from advspatial.experiments.propagation.totals import PropagationTotals
from advspatial.experiments.paired import paired_claim
from advspatial.experiments.findings import to_json
from advspatial.experiments.propagation.findings import (
    ContextBalance, ControlOutcome, Locality, clustered_rate, k_findings, rate_with_ci,
)
from advspatial.experiments.propagation.stages import KSummary, LocalityCounts, add_locality_columns
from advspatial.statistics.accuracy import wilson_interval


# -- metrics from the rows --------------------------------------------------------------------

def _row(k, correct, analysed, **loc):
    row = {"k": k, "correct": correct, "analysed": analysed, "queries": 10, "l0": k, "pm_peak_last": 0.5}
    blank = {"original_fooled": "", "ring1_n": "", "ring1_fooled": "", "random_n": "", "random_fooled": ""}
    return {**row, **(loc if analysed else blank)}


def _wilson(successes: int, trials: int) -> tuple[float, float]:
    share = wilson_interval(successes, trials)
    return share.low, share.high


def test_rate_with_ci_is_the_wilson_interval_by_hand_and_against_scipy():
    from scipy.stats import binomtest

    z = 1.959963984540054  # two-sided 95% normal quantile
    z2 = z**2

    def ci(successes: int, trials: int) -> tuple[float, float]:
        entry = rate_with_ci(successes, trials)
        return entry.ci_low, entry.ci_high

    assert ci(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))  # 0.2775
    assert ci(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    # s=5, n=10: centre 0.5, half = z * sqrt(0.025 + z2/400) / (1 + z2/10)
    half = z * (0.025 + z2 / 400) ** 0.5 / (1 + z2 / 10)
    assert ci(5, 10) == pytest.approx((0.5 - half, 0.5 + half))
    assert ci(0, 72)[0] == 0.0 and ci(48, 48)[1] == 1.0  # exact, no rounding residue
    for s, n in ((3, 17), (40, 41), (1, 600), (250, 500)):
        ref = binomtest(s, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert ci(s, n) == pytest.approx((ref.low, ref.high), abs=1e-9)
        assert rate_with_ci(s, n).rate == s / n
    none = rate_with_ci(0, 0)  # no trial: no rate, the interval the whole of [0, 1]
    assert math.isnan(none.rate) and ci(0, 0) == (0.0, 1.0)


def _no_maps(k: int) -> KSummary:
    """The summary of a k with no propagation maps (the rows alone make its success and locality)."""
    return KSummary(k, PropagationTotals(), None, torch.zeros(0, k, 2, dtype=torch.long))


def test_k_findings_known_answer():
    rows = [
        _row(1, True, True, original_fooled=True, ring1_n=8, ring1_fooled=2, random_n=10, random_fooled=1),
        _row(1, True, True, original_fooled=True, ring1_n=5, ring1_fooled=5, random_n=10, random_fooled=0),
        _row(1, True, False),
        _row(1, False, False),
        _row(3, True, False),
    ]
    m = k_findings(rows, _no_maps(1), radii=[1])
    assert (m.images, m.correct) == (4, 3)
    assert m.success.rate == pytest.approx(2 / 3)
    assert (m.success.ci_low, m.success.ci_high) == pytest.approx(_wilson(2, 3))
    assert m.locality.rings[1].rate == pytest.approx(7 / 13)
    assert m.locality.random.rate == pytest.approx(1 / 20)
    assert m.locality.original.rate == 1.0
    none = k_findings(rows, _no_maps(3), radii=[1])
    assert none.success.rate == 0.0 and none.locality.rings[1].trials == 0
    assert math.isnan(none.locality.rings[1].rate)
    assert none.depth == [] and all(c.attacks == 0 for c in none.controls.values())
    # locality CIs are cluster bootstraps over images (2 images: 2/8 and 5/5), never a binomial over 13 placements
    r1 = m.locality.rings[1]
    assert r1.images == 2 and r1.ci == "cluster bootstrap over images"
    assert r1.ci_low >= 2 / 8 - 1e-12 and r1.ci_high <= 1.0
    assert r1.per_image_mean.mean == pytest.approx((2 / 8 + 5 / 5) / 2)
    # metrics.json keeps its flat locality keys
    assert list(m.locality.as_dict()) == ["original", "r1", "random", "matched_r1"]


def test_paired_claim_known_answer_and_missing_pairs():
    from advspatial.statistics.estimates import bootstrap_mean_ci, paired_p

    a = [0.5, 0.7, math.nan, 0.9, 0.2]
    b = [0.1, 0.2, 0.3, math.nan, 0.4]
    c = paired_claim("x", "s", "stat", "null", a, b, seed=3, primary=True)
    diff = [0.4, 0.5, -0.2]  # only images with both values
    ref = bootstrap_mean_ci(diff, seed=3)
    assert c.effect.n == ref.n and [c.effect.mean, c.effect.low, c.effect.high] == pytest.approx(
        [ref.mean, ref.low, ref.high])
    assert c.p == pytest.approx(paired_p(diff))
    assert (c.observed, c.null_value) == pytest.approx(((0.5 + 0.7 + 0.2) / 3, (0.1 + 0.2 + 0.4) / 3))
    empty = paired_claim("x", "s", "stat", "null", [], [], seed=0, primary=True)
    assert empty.effect.n == 0 and math.isnan(empty.p)


def test_locality_columns_match_locality_analysis(tiny_cnn):
    model = tiny_cnn(size=10)
    x = torch.rand(3, 1, 10, 10, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2])
    pixels = torch.tensor([[[0, 0]], [[5, 5]], [[9, 3]]])
    colours = torch.tensor([[[1.0]], [[0.0]], [[1.0]]])
    res = locality_analysis(model, x, y, pixels, colours, radii=(1, 2), n_random=5, seed=0)
    loc = LocalityCounts(res.ring_counts, res.ring_successes, res.random_counts, res.random_successes,
                         res.original_success, res.matched_counts, res.matched_successes, {})
    rows = [{"index": i, "analysed": i != 7} for i in (4, 7, 9, 2)]
    add_locality_columns(rows, torch.tensor([4, 9, 2]), loc, radii=(1, 2))
    assert rows[1]["ring1_n"] == ""  # not analysed
    assert rows[0]["ring1_n"] == 3 and rows[2]["ring1_n"] == 8  # a corner has 3 neighbours at r = 1
    assert [rows[j]["ring2_n"] for j in (0, 2, 3)] == res.ring_counts[:, 1].tolist()
    assert sum(rows[j]["random_fooled"] for j in (0, 2, 3)) == res.rows[-1].successes


def test_findings_parts_serialize_to_the_flat_keys_and_back():
    balance = ContextBalance({1: 0.5, 2: math.nan}, 0.25, {1: 0.75, 2: 0.125})
    data = balance.as_dict()
    assert list(data) == ["ring_1", "ring_2", "random", "matched_1", "matched_2"]
    back = ContextBalance.from_dict(data)
    assert back.ring[1] == 0.5 and math.isnan(back.ring[2]) and back.matched == {1: 0.75, 2: 0.125}
    wilson = ControlOutcome(3, 4, rate_with_ci(1, 3))
    pooled = ControlOutcome(0, 0, clustered_rate([], []))
    for outcome in (wilson, pooled):
        again = ControlOutcome.from_dict(json.loads(json.dumps(to_json(outcome))))
        assert type(again.fooled) is type(outcome.fooled) and json.dumps(to_json(again)) == json.dumps(to_json(outcome))
    locality = k_findings([_row(1, True, False)], _no_maps(1), radii=[1, 3]).locality
    assert Locality.from_dict(json.loads(json.dumps(locality.as_dict()))).as_dict().keys() == locality.as_dict().keys()
