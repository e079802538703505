"""Claims: Holm across the primary family, BH across the rest, verdicts from the fixed rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from advspatial.statistics.claims import Claim, failed_gates, judge, sentence_case
from advspatial.statistics.estimates import Estimate


def claim(p: float, mean: float, low: float, high: float, primary: bool, n: int = 100,
          gates: dict[str, bool] | None = None) -> Claim:
    return Claim("the attack acts where the model looks", "pgd", "energy_in_roi", "same-class", 0.3, 0.3 - mean,
                 Estimate(mean, low, high, n), 1.0, p, gates=gates or {"RoI faithfulness": True}, primary=primary)


def test_primary_family_is_holm_and_the_rest_bh() -> None:
    primary = [claim(p, 0.05, 0.02, 0.08, True) for p in (0.01, 0.04, 0.03)]
    rest = [claim(p, 0.05, 0.02, 0.08, False) for p in (0.001, 0.02, 0.04, 0.5)]
    judge(primary + rest, sesoi=0.01)
    holm = multipletests([0.01, 0.04, 0.03], method="holm")[1]
    bh = multipletests([0.001, 0.02, 0.04, 0.5], method="fdr_bh")[1]
    np.testing.assert_allclose([c.p_adjusted for c in primary], holm, atol=1e-12)
    np.testing.assert_allclose([c.p_adjusted for c in rest], bh, atol=1e-12)


def test_verdicts_follow_ci_corrected_p_and_gates() -> None:
    cases = [
        claim(0.001, 0.05, 0.02, 0.08, True),                      # CI above 0, significant
        claim(0.001, -0.05, -0.08, -0.02, True),                   # CI below 0, significant
        claim(0.6, 0.001, -0.004, 0.005, True),                    # CI inside ±sesoi
        claim(0.3, 0.02, -0.01, 0.05, True),                       # undecided
        claim(0.001, 0.05, 0.02, 0.08, True, gates={"RoI faithfulness": False}),
        claim(0.001, 0.05, 0.02, 0.08, True, n=12),
    ]
    judge(cases, sesoi=0.01)
    assert [c.verdict for c in cases] == ["supported", "reversed", "equivalent to null", "not supported",
                                          "not interpretable", "insufficient data"]
    assert failed_gates(cases[4]) == ["RoI faithfulness"] and failed_gates(cases[0]) == []


def test_the_sesoi_follows_the_statistic_and_the_setting_scales_it() -> None:
    # a panel row of a real run: +0.0038 [+0.0003, +0.0073] over a same-class null of 0.27, significant
    row = Claim("c", "pgd: gradcam RoI", "energy_in_roi", "same-class", 0.2738, 0.27,
                Estimate(0.0038, 0.0003, 0.0073, 900), 1.014, 1e-4, gates={"RoI faithfulness": True})
    headline = Claim("c", "pgd", "energy_in_roi", "same-class", 0.2988, 0.2761,
                     Estimate(0.0227, 0.0199, 0.0255, 917), 1.08, 1e-4, gates={"RoI faithfulness": True},
                     primary=True)
    pearson = Claim("c", "pgd", "pearson", "same-class", 0.13, 0.1, Estimate(0.03, 0.02, 0.04, 900), 1.3, 1e-4)
    judge([row, headline, pearson])
    assert (row.verdict, headline.verdict, pearson.verdict) == ("negligible", "supported", "negligible")
    assert row.sesoi == pytest.approx(0.05 * 0.27) and pearson.sesoi == pytest.approx(0.05)
    assert row.as_dict()["sesoi"] == row.sesoi
    judge([row, headline, pearson], sesoi=0.0)  # 0 switches the effect-size rule off
    assert (row.verdict, headline.verdict, pearson.verdict) == ("supported",) * 3
    judge([headline], sesoi=0.1)  # ten times the defaults: 0.138 > 0.0227
    assert headline.verdict == "negligible" and headline.sesoi == pytest.approx(0.5 * 0.2761)
    shares = Claim("c", "x", "suppression share", "same-class", 0.5, 0.3, Estimate(0.2, 0.1, 0.3, 90), 1.6, 1e-4,
                   scale="energy_in_roi")
    judge([shares])
    assert shares.sesoi == pytest.approx(0.015)


def test_a_significant_raw_p_can_lose_its_verdict_after_correction() -> None:
    """Five primary claims at p = 0.02: Holm makes each 0.1, so none is 'supported'."""
    cases = [claim(0.02, 0.05, 0.01, 0.09, True) for _ in range(5)]
    judge(cases, sesoi=0.001)
    assert all(c.p_adjusted == pytest.approx(0.1) for c in cases)
    assert {c.verdict for c in cases} == {"not supported"}


def test_as_dict_is_json_ready_and_nan_safe() -> None:
    import json

    c = claim(math.nan, math.nan, math.nan, math.nan, False, n=0)
    judge([c], sesoi=0.01)
    d = c.as_dict()
    assert json.loads(json.dumps(d))["verdict"] == "insufficient data"
    assert set(d["effect"]) == {"mean", "low", "high", "n"}


def test_sentence_case_keeps_acronyms() -> None:
    assert sentence_case("not interpretable: the RoI failed") == "Not interpretable: the RoI failed"
    assert sentence_case("") == ""


def test_claims_below_the_minimum_n_stay_out_of_the_families() -> None:
    judged = claim(0.01, 0.05, 0.02, 0.08, False)
    small = [claim(0.9, 0.0, -0.1, 0.1, False, n=5) for _ in range(3)]
    judge([judged, *small], sesoi=0.01)
    assert judged.p_adjusted == pytest.approx(0.01)  # a family of one: the three small claims do not count
    assert all(math.isnan(c.p_adjusted) and c.verdict == "insufficient data" for c in small)


def seeded(per_seed: tuple[float, ...], mean: float = 0.05, low: float = 0.02, high: float = 0.08,
           p: float = 0.001) -> Claim:
    """A claim about a training procedure: ``per_seed`` each seed's own effect."""
    c = claim(p, mean, low, high, True)
    c.per_seed = per_seed
    return c


def test_a_claim_about_a_procedure_needs_three_seeds_and_its_sign_in_every_one() -> None:
    agree = seeded((0.04, 0.05, 0.06))
    one_against = seeded((0.09, 0.08, -0.01))
    one_zero = seeded((0.07, 0.08, 0.0))
    reversed_all = seeded((-0.04, -0.05, -0.06), -0.05, -0.08, -0.02)
    reversed_but_one = seeded((-0.09, -0.08, 0.02), -0.05, -0.08, -0.02)
    two_seeds = seeded((0.05, 0.05))
    unseeded = claim(0.001, 0.05, 0.02, 0.08, True)
    judge([agree, one_against, one_zero, reversed_all, reversed_but_one, two_seeds, unseeded], sesoi=0.01)
    assert agree.verdict == "supported" and agree.seeds_text() == "3 of 3 seeds agree"
    assert one_against.verdict == one_zero.verdict == "not supported", "CI above 0, but a seed does not agree"
    assert one_against.seeds_text() == one_zero.seeds_text() == "2 of 3 seeds agree"
    assert reversed_all.verdict == "reversed" and reversed_but_one.verdict == "not supported"
    assert two_seeds.verdict == "insufficient data" and math.isnan(two_seeds.p_adjusted)
    assert unseeded.verdict == "supported" and unseeded.seeds_text() == ""
    # the family: the six claims judged (two seeds stay out), Holm over six equal p-values
    assert agree.p_adjusted == pytest.approx(0.006)
    d = agree.as_dict()
    assert (d["per_seed"], d["seeds_agree"], d["seeds"]) == ([0.04, 0.05, 0.06], 3, 3)
    assert "per_seed" not in unseeded.as_dict()
