"""The perceptual experiment's inference (METHODS §3, with §1's engine and gate), and its findings.

Every statistic of the 1 − SSIM map against the CAM goes through the one statistics engine
(:func:`advspatial.statistics.inference.compare_to_nulls`): per-image excess over the uniform, any-class,
same-class and object-conditioned nulls (composition = the image's foreground share), a bootstrap CI and a
two-sided p. Claims (:mod:`advspatial.statistics.claims`): two primaries per attack (energy in CAM vs the
same-class null, and vs the geometry null, paired per image), one for the minimal-distortion comparison of
the two attacks (not RoI-dependent), Holm across them; every other statistic x null secondary
(Benjamini-Hochberg), all gated on the RoI's faithfulness; a failed gate makes them "not interpretable".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from ...faithfulness.record import GateResult
from ...statistics.claims import Claim, claim_from, judge
from ...statistics.inference import NullComparison, uniform_comparison
from ...statistics.verdicts import same_conclusion, verdict
from ...statistics.store import compare_store
from ..measurement import colocation
from ..measurement.gate import gate_stage
from ..measurement.roi import Roi, with_roi_caveat
from .config import ATTACKS, ENGINE_STATS, PRIMARY_STATISTIC, PerceptualConfig
from .findings import CurveBound, LabelledComparison, MinimalDistortion, PerceptualFindings, attack_outcomes
from .ssim_matching import Calibration
from .stages import AttackStore, Context, Curves, clean_cam

CLAIM = "the attack lowers SSIM where the model looks"
GEOMETRY_CLAIM = "the attack lowers SSIM where the model looks more than a random feasible perturbation of equal SSIM"
DISTORTION_CLAIM = "the SSIM-ball attack fools images at a higher SSIM than L-inf PGD"
DISTORTION_SUBJECT = "ssim-ball vs pgd"
DISTORTION_STATISTIC = "highest fooling SSIM"
#: the minimal-distortion claim's gate: whatever value the grid leaves open to the images its curves cap (fooled
#: already at an attack's least distorting budget), the claim reads the same verdict
CURVE_RANGE_GATE = "curve range"

#: the engine's comparisons of every attack with >= 3 successful images: attack -> statistic -> null
Inference = dict[str, dict[str, dict[str, LabelledComparison]]]


def run_gates(ctx: Context, eps: float) -> dict[str, GateResult]:
    """The faithfulness gate of the CAM on the run's own cached clean maps, with L-inf PGD at budget ``eps``."""
    return {ctx.method: gate_stage(ctx, ctx.method, ctx.config.fraction, eps, target="true",
                                   maps=lambda b: clean_cam(ctx, b))}


def roi_of(method: str, why: str, gates: Mapping[str, GateResult]) -> Roi:
    """The RoI of the run: the CAM ``method`` (``why``: the reason ``auto`` chose it) and its gate."""
    return Roi.judged(method, why or "chosen in the config", gates[method])


def compare_attack(store: AttackStore, config: PerceptualConfig) -> dict[str, dict[str, NullComparison]]:
    """Every reported statistic (engine names, :data:`ENGINE_STATS`) against every null, in one engine call (no
    model-free references: the SSIM map's claims do not rest on them); {} with < 3 images."""
    if store.images() < 3:
        return {}
    return compare_store(store.store(), config.permutations, config.seed, config.strata,
                                    statistics=ENGINE_STATS, references=False).comparisons


def attack_claims(subject: str, comparisons: Mapping[str, Mapping[str, NullComparison]],
                  gates: Mapping[str, bool]) -> list[Claim]:
    """The claims of one attack: energy in CAM vs the same-class null first (primary), then every other row."""
    return colocation.attack_claims(subject, comparisons, gates, primary=True, claim=CLAIM)


def measure(config: PerceptualConfig, roi: Roi, stores: Mapping[str, AttackStore],
            rows: list[dict[str, Any]] | None = None,
            curves: Curves | None = None) -> tuple[Inference, MinimalDistortion | None, list[Claim]]:
    """The engine's comparisons, the minimal-distortion comparison (with ``curves``) and every claim, corrected
    and judged. Every RoI-dependent comparison reads as ``roi.interpretation`` (the CAM's gate)."""
    gate_set = {"RoI faithfulness": roi.usable}
    inference: Inference = {}
    claims: list[Claim] = []
    for name in ATTACKS:
        comparisons = compare_attack(stores[name], config)
        if not comparisons:
            continue
        inference[name] = {stat: {null: LabelledComparison.of(c, roi.interpretation) for null, c in by_null.items()}
                           for stat, by_null in comparisons.items()}
        claims += attack_claims(name, comparisons, gate_set)
    for name in ATTACKS:
        if rows is not None:
            claims += geometry_claims(rows, name, gate_set, config.seed)
    distortion: MinimalDistortion | None = None
    ends: dict[str, NullComparison] = {}
    if curves is not None:
        distortion, distortion_claim, ends = minimal_distortion_claim(curves, config.seed)
        claims.append(distortion_claim)
    judge(with_roi_caveat(claims, roi.caveat), sesoi=config.sesoi, alpha=config.significance)
    if distortion is not None:
        distortion.bounds = settle_curve_range(claims, distortion_claim, ends, sesoi=config.sesoi,
                                               alpha=config.significance)
    return inference, distortion, claims


def geometry_claims(rows: list[dict[str, Any]], name: str, gates: Mapping[str, bool], seed: int) -> list[Claim]:
    """Energy in CAM of the attack vs its geometry null, paired per successful image (primary; gated)."""
    ok = [r for r in rows if r["attack"] == name and r["correct"] and r["success"]]
    if len(ok) < 3:
        return []
    comparison = uniform_comparison([r["energy_in_cam"] for r in ok], [r["geometry_energy_in_cam"] for r in ok],
                                    seed, statistic=PRIMARY_STATISTIC, null="geometry")
    return [claim_from(comparison, GEOMETRY_CLAIM, name, gates, primary=True)]


def minimal_distortion_claim(curves: Curves, seed: int) -> tuple[MinimalDistortion, Claim, dict[str, NullComparison]]:
    """Per image fooled by both attacks at some budget: SSIM-ball's highest SSIM at which it succeeds minus
    PGD's (primary; it does not rest on the RoI), its distortion record, and per attack whose curve caps any of
    those images the same comparison at that curve's end (:func:`curve_ends`). The curve-range gate is open until
    the family is judged and :func:`settle_curve_range` reads the ends."""
    best = curves.minimal_distortion()
    ball, pgd = best["ssim-ball"], best["pgd"]
    both = torch.isfinite(ball) & torch.isfinite(pgd)
    images = int(both.sum())
    # the statistic's name is metrics.json's, kept as it was (docs/architecture.md, "One word per concept")
    comparison = uniform_comparison(ball[both], pgd[both], seed, statistic=DISTORTION_STATISTIC, null="pgd")
    capped = {name: flags & both for name, flags in curves.capped().items()}
    ceilings = {name: max(p.mean_ssim for p in points) for name, points in curves.points.items()}
    distortion = MinimalDistortion(
        images, int((torch.isfinite(ball) & ~torch.isfinite(pgd)).sum()),
        int((~torch.isfinite(ball) & torch.isfinite(pgd)).sum()), ceilings, comparison,
        {name: int(flags.sum()) for name, flags in capped.items()}, curve_reach(best, capped, images))
    claim = claim_from(comparison, DISTORTION_CLAIM, DISTORTION_SUBJECT, {CURVE_RANGE_GATE: True}, primary=True)
    return distortion, claim, curve_ends(best, capped, both, seed)


def curve_ends(best: Mapping[str, torch.Tensor], capped: Mapping[str, torch.Tensor], both: torch.Tensor,
               seed: int) -> dict[str, NullComparison]:
    """Per attack whose curve caps some of the ``both`` images, the minimal-distortion comparison with each of its
    capped images at 1, the highest fooling SSIM the grid leaves open for it: the SSIM-ball attack's end is the
    largest the difference can be, PGD's the smallest (same images, same bootstrap seed)."""
    ends = {}
    for name in best:
        if bool(capped[name].any()):
            at_end = {other: torch.where(capped[other], 1.0, values) if other == name else values
                      for other, values in best.items()}
            ends[name] = uniform_comparison(at_end["ssim-ball"][both], at_end["pgd"][both], seed,
                                            statistic=DISTORTION_STATISTIC, null="pgd")
    return ends


def settle_curve_range(claims: list[Claim], claim: Claim, ends: Mapping[str, NullComparison], *, sesoi: float,
                       alpha: float) -> dict[str, CurveBound]:
    """The curve-range gate of the judged minimal-distortion ``claim`` (one of the judged ``claims``): the verdict
    the claim would read at each curve's end (``ends``, :func:`curve_ends`; the whole family judged again with the
    claim's comparison replaced by the end's, so Holm sees the end's p) must draw the conclusion of the verdict it
    reads itself, gate aside (:func:`curve_range_holds`); else the gate fails and the claim reads "not
    interpretable". Sets the gate, judges ``claims`` again and returns each end's :class:`~.findings.CurveBound`."""
    own = verdict(claim.effect, claim.p_adjusted, {}, sesoi=claim.sesoi, alpha=alpha)
    bounds = {}
    for name, comparison in ends.items():
        stand_in = claim_from(comparison, claim.claim, claim.subject, {}, primary=True)
        judge([dataclasses.replace(c) for c in claims if c is not claim] + [stand_in], sesoi=sesoi, alpha=alpha)
        bounds[name] = CurveBound(stand_in.effect, stand_in.p_adjusted, stand_in.verdict)
    claim.gates[CURVE_RANGE_GATE] = curve_range_holds(own, bounds)
    judge(claims, sesoi=sesoi, alpha=alpha)
    return bounds


def curve_range_holds(own: str, bounds: Mapping[str, CurveBound]) -> bool:
    """Whether every curve's end reads the conclusion of the claim's own verdict ``own`` (gate aside): the same word,
    or both within the smallest effect of interest (:func:`~advspatial.statistics.verdicts.same_conclusion`); then
    neither extreme the grid leaves open to the capped images changes what the claim concludes (nothing capped:
    nothing to doubt)."""
    return all(same_conclusion(b.verdict, own) for b in bounds.values())


def curve_reach(best: Mapping[str, torch.Tensor], capped: Mapping[str, torch.Tensor], images: int) -> dict[str, float]:
    """Per attack, how far its capped images could move the mean difference of highest fooling SSIMs over
    ``images``: each capped image's true value lies between the curve's and 1, so by at most (1 − value) / images
    each (SSIM-ball's upward, PGD's downward). 0 without images."""
    return {name: float(((1.0 - best[name]) * capped[name]).nan_to_num().sum()) / images if images else 0.0
            for name in best}


def analyse(config: PerceptualConfig, roi: Roi, rows: list[dict[str, Any]], calibration: Calibration,
            curves: Curves, gates: dict[str, GateResult], stores: Mapping[str, AttackStore]) -> PerceptualFindings:
    """The findings of a run: each attack's outcome from its rows, then the inference and the claims."""
    attacks = attack_outcomes(rows, roi.interpretation)
    inference, distortion, claims = measure(config, roi, stores, rows, curves)
    return PerceptualFindings(
        n=attacks["ssim-ball"].images, clean_accuracy=attacks["ssim-ball"].clean_accuracy, calibration=calibration,
        pgd_eps=calibration.eps, ssim_gap=attacks["pgd"].mean_ssim - attacks["ssim-ball"].mean_ssim,
        attacks=attacks, curves=curves.points, faithfulness=gates, roi=roi, inference=inference,
        minimal_distortion=distortion, claims=claims)
