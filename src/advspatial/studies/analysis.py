"""The cross-model analysis of a study: per model its effect on each primary endpoint, a random-effects
meta-analysis over the models whose gates passed, paired per-image contrasts between models, a meta-regression
on the models' covariates, and whether different models' attacks (and RoIs) act in the same place.

Endpoints (per attack, METHODS.md §1 and the claim issue): ``beyond``, the co-location beyond layout and image
content (the model RoI's excess over the same-class null minus the best model-free reference's, taken where its CI
is lowest, as the single run's primary claim does), and ``excess``, the plain excess of the energy share over the
same-class null. A model enters a pooled estimate only when the gates its claim rests on passed (its RoI gate
passed, not merely "undecided") and it has at least ``min_n`` images; the others are listed with their reason,
never pooled. A pooled estimate and its verdict need at least :data:`MIN_MODELS` such models: with fewer, the
spread between models (tau2) cannot be estimated, and the paired contrasts compare the models directly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError
from ..experiments.measurement.colocation import BEYOND_CLAIM, CLAIM
from ..experiments.measurement.decomposition import SAME_CLASS
from ..statistics.claims import Claim, judge
from ..statistics.estimates import Estimate, bootstrap_mean_ci, paired_p
from ..statistics.store import PRIMARY_NULL, PRIMARY_STATISTIC
from ..statistics.verdicts import DEFAULT_SESOI, benjamini_hochberg, holm, sesoi_for, verdict
from .meta import MetaAnalysis, MetaRegression, meta_regression, random_effects
from .records import ModelRecord, Values

ENDPOINTS = {"beyond": "co-location beyond layout and image content", "excess": "excess over the same-class null"}
MIN_N = 30
#: the fewest models a pooled estimate and verdict need (the HKSJ interval has k - 1 degrees of freedom)
MIN_MODELS = 3
#: why a model whose RoI gate did not pass is left out, per gate status
GATE_NOT_PASSED = {"failed": "gate failed: RoI faithfulness", "undecided": "gate undecided: RoI faithfulness",
                   "cannot judge": "gate could not judge: RoI faithfulness"}


@dataclass
class ModelEffect:
    """One model's effect on one endpoint of one attack, with the standard error the meta-analysis weighs it by
    (sd of the per-image values / sqrt n) and whether it is pooled (``reason`` says why not)."""

    model: str
    n: int
    effect: Estimate
    se: float
    observed: float
    null: float
    included: bool
    reason: str = ""
    reference: str = ""
    run_verdict: str = ""


@dataclass
class Pooled:
    """The random-effects pooling of the included models' effects and its judged claim (index into the claims)."""

    meta: MetaAnalysis
    claim: int
    heterogeneity: str


@dataclass
class Endpoint:
    """One endpoint of one attack across the models."""

    attack: str
    endpoint: str
    models: list[ModelEffect]
    pooled: Pooled | None
    note: str = ""


@dataclass
class Contrast:
    """Model ``a`` minus model ``b`` on the same images: the mean per-image difference of their excess over the
    same-class null, with a bootstrap CI, a sign-flip p, Holm's correction over every contrast and a verdict."""

    attack: str
    a: str
    b: str
    effect: Estimate
    p: float
    p_adjusted: float = math.nan
    verdict: str = ""
    gates: dict[str, bool] = field(default_factory=dict)


@dataclass
class Agreement:
    """Do two models' regions fall in the same place? Per image, the IoU of model ``a``'s region with model
    ``b``'s on the same image, against the same-class null (``a``'s region of another image of the class with
    ``b``'s of this one; IoU is symmetric)."""

    subject: str
    a: str
    b: str
    n: int
    observed: float
    null: float
    effect: Estimate
    p: float
    p_adjusted: float = math.nan
    verdict: str = ""
    gates: dict[str, bool] = field(default_factory=dict)


@dataclass
class Regression:
    """A meta-regression of one endpoint's model effects on one covariate (exploratory: BH-adjusted, no verdict)."""

    attack: str
    endpoint: str
    fit: MetaRegression
    p_adjusted: float = math.nan


def model_effect(record: ModelRecord, attack: str, endpoint: str, seed: int, min_n: int = MIN_N) -> ModelEffect:
    """``record``'s effect on ``endpoint`` of ``attack`` and whether it can be pooled."""
    if attack not in record.attacks:
        why = record.skipped.get(attack, "not run")
        return ModelEffect(record.label, 0, Estimate(math.nan, math.nan, math.nan, 0), math.nan, math.nan, math.nan,
                           False, f"not compared: {why}")
    rec = record.attacks[attack]
    reference, values = (("", rec.excess) if endpoint == "excess" else
                         worst_reference({**rec.beyond, SAME_CLASS: rec.excess}, seed))
    estimate = bootstrap_mean_ci(values.values, seed)
    se = standard_error(values.values)
    failed = [name for name, ok in rec.gates.items() if not ok]
    reason = (f"gate failed: {', '.join(failed)}" if failed else
              roi_gate_reason(record.roi_status) if record.roi_status != "passed" else
              "no kept image has a same-class partner" if estimate.n == 0 else
              f"{estimate.n} images (fewer than {min_n})" if estimate.n < min_n else
              "no spread in the per-image values (standard error 0)" if not se > 0 else "")
    return ModelEffect(record.label, estimate.n, estimate, se,
                       float(values.observed.mean()) if estimate.n else math.nan,
                       float(values.null.mean()) if estimate.n else math.nan, not reason, reason, reference,
                       rec.verdicts.get(endpoint, ""))


def roi_gate_reason(status: str) -> str:
    """Why a model whose RoI gate did not pass is not pooled (an undecided gate is not a passed one)."""
    return GATE_NOT_PASSED.get(status, f"gate {status or 'unknown'}: RoI faithfulness")


def worst_reference(beyond: Mapping[str, Values], seed: int) -> tuple[str, Values]:
    """The region whose paired difference with the RoI has the lowest CI bound: among the model-free regions of the
    same size (raw shares) and a same-class image's RoI (the excess), as the single run's primary claim weighs
    them."""
    if not beyond:
        raise ConfigError("no model-free reference was computed for this attack")

    def low(item: tuple[str, Values]) -> float:
        e = bootstrap_mean_ci(item[1].values, seed)
        return e.low if e.n else -math.inf

    return min(beyond.items(), key=low)


def standard_error(values: torch.Tensor) -> float:
    """sd / sqrt(n) of per-image values (NaN below 2 values)."""
    v = values.double()
    return float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else math.nan


def endpoint_across(records: Sequence[ModelRecord], attack: str, endpoint: str, seed: int,
                    claims: list[Claim]) -> Endpoint:
    """Every model's effect on one endpoint and, when at least :data:`MIN_MODELS` models can be pooled, the pooled
    claim (appended to ``claims``, judged later with the others)."""
    effects = [model_effect(r, attack, endpoint, seed) for r in records]
    pooled_in = [e for e in effects if e.included]
    if len(pooled_in) < MIN_MODELS:
        return Endpoint(attack, endpoint, effects, None, not_pooled_note(len(pooled_in)))
    meta = random_effects([e.effect.mean for e in pooled_in], [e.se ** 2 for e in pooled_in])
    observed = float(np.mean([e.observed for e in pooled_in]))
    null = float(np.mean([e.null for e in pooled_in]))
    claims.append(Claim(BEYOND_CLAIM if endpoint == "beyond" else CLAIM, f"{attack}: {meta.k} models pooled",
                        PRIMARY_STATISTIC, "every region of the same size" if endpoint == "beyond" else PRIMARY_NULL,
                        observed, null, Estimate(meta.effect, meta.low, meta.high, sum(e.n for e in pooled_in)),
                        observed / null if null else math.nan, meta.p,
                        primary=endpoint == "beyond", scale=PRIMARY_STATISTIC))
    return Endpoint(attack, endpoint, effects, Pooled(meta, len(claims) - 1, ""))


def not_pooled_note(k: int) -> str:
    """Why an endpoint has no pooled verdict, in one sentence."""
    models = "no model" if k == 0 else "only 1 model" if k == 1 else f"only {k} models"
    return (f"not pooled: {models} passed {'its' if k <= 1 else 'their'} gates with at least {MIN_N} images, and a "
            f"pooled verdict needs {MIN_MODELS} (with fewer, the spread between models cannot be estimated)")


def heterogeneity_text(meta: MetaAnalysis, word: str) -> str:
    """How much the models differ, and whether a new model's effect could have the other sign."""
    text = f"I² = {meta.i2:.0%}, τ² = {meta.tau2:.2g}"
    if math.isfinite(meta.prediction_low):
        text += f"; a new model's effect: {meta.level:.0%} prediction interval [{meta.prediction_low:+.3f}, " \
                f"{meta.prediction_high:+.3f}]"
        if word == "supported" and meta.prediction_low <= 0:
            text += " (supported on average, but a new model's effect could be 0 or less)"
    else:
        text += f"; no prediction interval with fewer than {MIN_MODELS} models"
    return text


def contrasts(records: Sequence[ModelRecord], attacks: Sequence[str], seed: int, sesoi: float,
              alpha: float) -> list[Contrast]:
    """Every pair of models, per attack: the paired per-image difference of the excess over the same-class null on
    the images both kept (each image's energy share minus its own partners' mean, so the mean difference is exactly
    the difference of the two models' mean excess on those images; its bootstrap CI resamples images, one-way);
    Holm over all of them; the verdict by the fixed rule (SESOI of the energy share)."""
    out: list[Contrast] = []
    nulls: list[float] = []
    for attack in attacks:
        for a, b in itertools.combinations(records, 2):
            if attack not in a.attacks or attack not in b.attacks:
                continue
            va, vb = a.attacks[attack].excess, b.attacks[attack].excess
            common, ia, ib = np.intersect1d(va.ids.numpy(), vb.ids.numpy(), return_indices=True)
            d = (va.observed[ia] - va.null[ia]) - (vb.observed[ib] - vb.null[ib])
            gates = {f"{r.label}: {g}": ok for r in (a, b) for g, ok in r.attacks[attack].gates.items()}
            out.append(Contrast(attack, a.label, b.label, bootstrap_mean_ci(d, seed),
                                paired_p(d, seed=seed) if common.size else math.nan, gates=gates))
            nulls.append(float((va.null[ia].mean() + vb.null[ib].mean()) / 2) if common.size else math.nan)
    judged = [c for c in out if c.effect.n >= MIN_N]
    for c, p_adj in zip(judged, holm(np.array([c.p for c in judged], dtype=float)), strict=True):
        c.p_adjusted = float(p_adj)
    for c, null in zip(out, nulls, strict=True):
        threshold = sesoi_for(PRIMARY_STATISTIC, null, sesoi / DEFAULT_SESOI.value)
        c.verdict = verdict(c.effect, c.p_adjusted, c.gates, threshold, alpha=alpha, min_n=MIN_N)
    return out


def regressions(endpoints: Sequence[Endpoint], records: Sequence[ModelRecord]) -> list[Regression]:
    """Per endpoint with at least 3 pooled models, the meta-regression on each covariate that varies among them;
    BH across all (exploratory)."""
    by_label = {r.label: r for r in records}
    out: list[Regression] = []
    for ep in endpoints:
        included = [e for e in ep.models if e.included]
        if len(included) < 3:
            continue
        covariates = [by_label[e.model].covariate_values() for e in included]
        for name in dict.fromkeys(k for c in covariates for k in c):
            x = [c.get(name, math.nan) for c in covariates]
            if not all(math.isfinite(v) for v in x) or len(set(x)) < 2:
                continue
            fit = meta_regression([e.effect.mean for e in included], [e.se ** 2 for e in included], x, name)
            out.append(Regression(ep.attack, ep.endpoint, fit))
    for r, p_adj in zip(out, benjamini_hochberg(np.array([r.fit.p for r in out], dtype=float)), strict=True):
        r.p_adjusted = float(p_adj)
    return out


def judge_pooled(endpoints: Sequence[Endpoint], claims: list[Claim], sesoi: float, alpha: float) -> None:
    """Holm over the pooled ``beyond`` claims (one per attack), BH over the ``excess`` ones; verdict words by the
    single runs' rule; then each endpoint's heterogeneity sentence."""
    judge(claims, sesoi=sesoi, alpha=alpha, min_n=MIN_N)
    for ep in endpoints:
        if ep.pooled is not None:
            ep.pooled.heterogeneity = heterogeneity_text(ep.pooled.meta, claims[ep.pooled.claim].verdict)


def correct_agreement(cells: list[Agreement], sesoi: float, alpha: float) -> None:
    """BH across every agreement cell (a secondary family) and the verdict by the fixed rule (SESOI of IoU)."""
    judged = [c for c in cells if c.effect.n >= MIN_N]
    for c, p_adj in zip(judged, benjamini_hochberg(np.array([c.p for c in judged], dtype=float)), strict=True):
        c.p_adjusted = float(p_adj)
    for c in cells:
        threshold = sesoi_for("iou", c.null, sesoi / DEFAULT_SESOI.value)
        c.verdict = verdict(c.effect, c.p_adjusted, c.gates, threshold, alpha=alpha, min_n=MIN_N)
