"""The cross-model analysis on synthetic records: per-model effects, who is pooled, the pooled numbers against
statsmodels, contrasts, meta-regression and the findings' round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from study_records import model
from statsmodels.stats.meta_analysis import combine_effects

from advspatial.statistics.estimates import bootstrap_mean_ci
from advspatial.studies.meta import meta_regression
from advspatial.studies.analysis import (
    MIN_N, contrasts, endpoint_across, judge_pooled, model_effect, regressions, standard_error,
)
from advspatial.studies.findings import StudyFindings


def test_model_effect_is_the_mean_of_the_per_image_values_with_their_standard_error() -> None:
    record = model("a", shift=0.05)
    effect = model_effect(record, "pgd", "excess", seed=0)
    v = record.attacks["pgd"].excess.values
    assert effect.effect == bootstrap_mean_ci(v, 0)
    assert effect.se == pytest.approx(float(v.std()) / math.sqrt(len(v)))
    assert effect.included and effect.reason == "" and effect.n == 60
    assert effect.null == pytest.approx(0.3) and effect.run_verdict == "supported"


def test_beyond_takes_the_reference_with_the_lowest_ci_bound() -> None:
    effect = model_effect(model("a"), "pgd", "beyond", seed=0)
    assert effect.reference == "edges"
    assert effect.effect == bootstrap_mean_ci(model("a").attacks["pgd"].beyond["edges"].values, 0)


@pytest.mark.parametrize(("record", "reason"), [
    (model("a", faithful=False), "gate failed: RoI faithfulness"),
    (model("a", roi_status="undecided"), "gate undecided: RoI faithfulness"),
    (model("a", roi_status="cannot judge"), "gate could not judge: RoI faithfulness"),
    (model("a", n=20), f"20 images (fewer than {MIN_N})"),
    (model("a", attacks=("fgsm",)), "not compared: not run"),
])
def test_a_model_that_cannot_be_pooled_says_why(record, reason) -> None:
    effect = model_effect(record, "pgd", "excess", seed=0)
    assert not effect.included and effect.reason == reason


def test_pooling_equals_statsmodels_combine_effects_with_the_hksj_interval() -> None:
    records = [model("a", 0.02, 1), model("b", 0.08, 2), model("c", 0.05, 3), model("d", 0.2, 4, faithful=False),
               model("e", 0.3, 5, roi_status="undecided")]
    claims = []
    ep = endpoint_across(records, "pgd", "excess", 0, claims)
    assert ep.pooled is not None and ep.pooled.meta.k == 3  # failed and undecided gates are never pooled
    included = [e for e in ep.models if e.included]
    assert [e.model for e in included] == ["a", "b", "c"]
    reference = combine_effects(np.array([e.effect.mean for e in included]), np.array([e.se ** 2 for e in included]),
                                method_re="dl", use_t=True)
    meta = ep.pooled.meta
    assert reference.tau2 > 0 and meta.hk_scale >= 1  # heterogeneous: statsmodels' HKSJ row is the one compared
    low, high = reference.conf_int(alpha=0.05, use_t=True)[3]
    assert meta.effect == pytest.approx(reference.mean_effect_re, rel=1e-6)
    assert (meta.low, meta.high) == pytest.approx((low, high), rel=1e-6)
    assert meta.tau2 == pytest.approx(reference.tau2, rel=1e-6)
    assert meta.i2 == pytest.approx(reference.i2, rel=1e-6)
    assert meta.q == pytest.approx(reference.q, rel=1e-6)
    claim = claims[ep.pooled.claim]
    assert (claim.effect.mean, claim.effect.low, claim.effect.high, claim.p) == (meta.effect, meta.low, meta.high,
                                                                                 meta.p)
    assert claim.effect.n == 180 and claim.primary is False


@pytest.mark.parametrize("poolable", [0, 1, 2])
def test_fewer_than_three_poolable_models_pool_nothing_and_say_why(poolable: int) -> None:
    records = [model(x, 0.1, i, faithful=i < poolable) for i, x in enumerate("abcd")]
    claims = []
    ep = endpoint_across(records, "pgd", "beyond", 0, claims)
    assert ep.pooled is None and claims == []
    assert ep.note.startswith("not pooled: ") and "a pooled verdict needs 3" in ep.note
    said = {0: "no model passed its", 1: "only 1 model passed its", 2: "only 2 models passed their"}[poolable]
    assert said in ep.note
    assert "\n" not in ep.note


def test_pooled_verdicts_follow_the_single_run_rule() -> None:
    claims = []
    strong = [model(x, 0.1, i) for i, x in enumerate("abc")]
    eps = [endpoint_across(strong, "pgd", e, 0, claims) for e in ("beyond", "excess")]
    judge_pooled(eps, claims, sesoi=0.01, alpha=0.05)
    assert [c.verdict for c in claims] == ["supported", "supported"]
    assert claims[0].primary and not claims[1].primary
    assert "I² =" in eps[0].pooled.heterogeneity and "prediction interval" in eps[0].pooled.heterogeneity
    null = []
    flat = [model(x, 0.0, i) for i, x in enumerate("abc")]
    eps = [endpoint_across(flat, "pgd", "excess", 0, null)]
    judge_pooled(eps, null, sesoi=0.01, alpha=0.05)
    assert null[0].verdict in ("equivalent to null", "not supported")


def test_contrasts_are_paired_on_the_same_images_and_holm_corrected() -> None:
    a, b, c = model("a", 0.1, 1), model("b", 0.1, 1), model("c", 0.0, 2)
    out = contrasts([a, b, c], ["pgd"], seed=0, sesoi=0.01, alpha=0.05)
    assert [(x.a, x.b) for x in out] == [("a", "b"), ("a", "c"), ("b", "c")]
    same = out[0]
    assert same.effect.mean == 0.0 and same.verdict != "supported"  # the same values: no difference
    assert out[1].effect.mean == pytest.approx(float((a.attacks["pgd"].excess.values
                                                      - c.attacks["pgd"].excess.values).mean()))
    assert out[1].verdict == "supported" and out[1].p_adjusted >= out[1].p
    unfaithful = contrasts([a, model("d", 0.0, 2, faithful=False)], ["pgd"], 0, 0.01, 0.05)[0]
    assert unfaithful.verdict == "not interpretable"


def test_contrasts_use_only_the_images_both_models_kept() -> None:
    a, b = model("a", 0.1, 1), model("b", 0.0, 2, n=40)
    out = contrasts([a, b], ["pgd"], seed=0, sesoi=0.01, alpha=0.05)[0]
    assert out.effect.n == 40


def test_meta_regression_runs_on_covariates_that_vary() -> None:
    records = [model(x, 0.02 * (i + 1), i, parameters=10 ** (i + 3), depth=4) for i, x in enumerate("abcd")]
    claims = []
    eps = [endpoint_across(records, "pgd", "excess", 0, claims)]
    fits = regressions(eps, records)
    assert {f.fit.covariate for f in fits} == {"log10_parameters"}  # depth, accuracies are constant here
    included = eps[0].models
    direct = meta_regression([e.effect.mean for e in included], [e.se ** 2 for e in included], [3, 4, 5, 6])
    assert fits[0].fit.slope == pytest.approx(direct.slope) and fits[0].fit.slope > 0
    assert fits[0].p_adjusted == pytest.approx(fits[0].fit.p)  # one regression: BH leaves it


def test_standard_error_needs_two_values() -> None:
    assert math.isnan(standard_error(torch.tensor([1.0])))


def test_findings_round_trip_through_metrics_json() -> None:
    from advspatial.studies.findings import study_findings
    from advspatial.experiments.maps.config import MapsConfig

    config = MapsConfig(attacks=["pgd"], permutations=50)
    findings = study_findings([model("a", 0.1, 1), model("b", 0.05, 2), model("c", 0.0, 3)], {"d": "broke"}, config)
    metrics = findings.to_metrics()
    again = StudyFindings.from_metrics(json.loads(json.dumps(metrics))).to_metrics()
    assert json.dumps(again, sort_keys=True) == json.dumps(metrics, sort_keys=True)
    assert metrics["failed"] == {"d": "broke"} and len(metrics["claims"]) == 2


def test_a_model_without_spread_is_excluded_not_fatal() -> None:
    flat = model("flat")
    excess = flat.attacks["pgd"].excess
    excess.values = torch.full_like(excess.values, 0.02)
    effect = model_effect(flat, "pgd", "excess", seed=0)
    assert not effect.included and effect.reason == "no spread in the per-image values (standard error 0)"
    claims = []
    ep = endpoint_across([flat, model("a", 0.1, 1), model("b", 0.1, 2), model("c", 0.1, 3)], "pgd", "excess", 0,
                         claims)
    assert ep.pooled is not None and ep.pooled.meta.k == 3
