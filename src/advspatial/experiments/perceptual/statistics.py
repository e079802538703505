"""The perceptual experiment's inference (METHODS §3, with §1's engine and gate).

Every statistic of the 1 − SSIM map against the CAM goes through the one statistics engine
(:func:`advspatial.regions.inference.compare_to_nulls`): per-image excess over the uniform, any-class,
same-class and object-conditioned nulls (composition = the image's foreground share), a bootstrap CI and a
two-sided p. Claims (:mod:`advspatial.regions.claims`): two primaries per attack (energy in CAM vs the
same-class null, and vs the geometry null, paired per image), one for the minimal-distortion comparison of
the two attacks (not RoI-dependent), Holm across them; every other statistic x null secondary
(Benjamini-Hochberg), all gated on the RoI's faithfulness; a failed gate makes them "not interpretable".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ...regions.claims import Claim, claim_from, judge
from ...regions.inference import NullComparison, uniform_comparison
from .. import colocation
from ..gate import gate_stage, roi_label
from .config import ATTACKS, ENGINE_STATS, PRIMARY_STATISTIC, PerceptualConfig
from .curves import Curves
from .maps_stage import AttackStore
from .stages import Context, clean_batch

CLAIM = "the attack lowers SSIM where the model looks"
GEOMETRY_CLAIM = "the attack lowers SSIM where the model looks more than a random feasible perturbation of equal SSIM"
DISTORTION_CLAIM = "the SSIM-ball attack fools images at a higher SSIM than L-inf PGD"


def compare_attack(store: AttackStore, config: PerceptualConfig) -> dict[str, dict[str, NullComparison]]:
    """Every reported statistic (engine names, :data:`ENGINE_STATS`) against every null; {} with < 3 images."""
    if store.images() < 3:
        return {}
    return colocation.compare_store(store.store(), config.permutations, config.seed, config.strata,
                                    statistics=ENGINE_STATS)


def attack_claims(subject: str, comparisons: Mapping[str, Mapping[str, NullComparison]],
                  gates: Mapping[str, bool]) -> list[Claim]:
    """The claims of one attack: energy in CAM vs the same-class null first (primary), then every other row."""
    return colocation.attack_claims(subject, comparisons, gates, primary=True, claim=CLAIM)


def run_gates(ctx: Context, eps: float) -> dict[str, dict[str, Any]]:
    """The faithfulness gate of the CAM on the run's own cached clean maps, with L-inf PGD at budget ``eps``."""
    cfg = ctx.config
    return {ctx.method: gate_stage(ctx, ctx.method, cfg.fraction, eps, target="true",
                                   maps=lambda b: clean_batch(ctx, b)["cam"])}


def measure(ctx: Context, stores: Mapping[str, AttackStore], metrics: dict[str, Any],
            gates: dict[str, dict[str, Any]], rows: list[dict[str, Any]] | None = None,
            curves: Curves | None = None) -> list[Claim]:
    """Engine results, claims, corrections and verdicts, written into ``metrics`` (which holds ``attacks``).

    Every RoI-dependent number carries ``interpretation``: "interpretable", or
    :data:`~advspatial.regions.claims.NOT_INTERPRETABLE_ROI` when the CAM failed the gate.
    """
    cfg = ctx.config
    roi_gate = gates[ctx.method]
    label = roi_label(roi_gate) or "interpretable"
    metrics["faithfulness"] = gates
    metrics["roi"] = {"method": ctx.method, "why": ctx.importance_reason or "chosen in the config",
                      "faithful": bool(roi_gate["passed"]), "interpretation": label}
    gate_set = {"RoI faithfulness": bool(roi_gate["passed"])}
    metrics["inference"], claims = {}, []
    for name in ATTACKS:
        metrics["attacks"][name]["maps"]["interpretation"] = label
        comparisons = compare_attack(stores[name], cfg)
        if not comparisons:
            continue
        metrics["inference"][name] = {stat: {null: {**c, "interpretation": label} for null, c in by_null.items()}
                                      for stat, by_null in colocation.comparisons_dict(comparisons).items()}
        claims += attack_claims(name, comparisons, gate_set)
    for name in ATTACKS:
        if rows is not None:
            claims += geometry_claims(rows, name, gate_set, cfg.seed)
    if curves is not None:
        claims.append(minimal_distortion_claim(curves, metrics, cfg.seed))
    judge(claims, sesoi=cfg.sesoi, alpha=cfg.significance)
    metrics["claims"] = [c.as_dict() for c in claims]
    return claims


def geometry_claims(rows: list[dict[str, Any]], name: str, gates: Mapping[str, bool], seed: int) -> list[Claim]:
    """Energy in CAM of the attack vs its geometry null, paired per successful image (primary; gated)."""
    ok = [r for r in rows if r["attack"] == name and r["correct"] and r["success"]]
    if len(ok) < 3:
        return []
    comparison = uniform_comparison([r["energy_in_cam"] for r in ok], [r["geometry_energy_in_cam"] for r in ok],
                                    seed, statistic=PRIMARY_STATISTIC, null="geometry")
    return [claim_from(comparison, GEOMETRY_CLAIM, name, gates, primary=True)]


def minimal_distortion_claim(curves: Curves, metrics: dict[str, Any], seed: int) -> Claim:
    """Per image fooled by both attacks at some budget: SSIM-ball's highest fooling SSIM minus PGD's (primary;
    it does not rest on the RoI). Writes ``metrics["minimal_distortion"]``."""
    best = curves.minimal_distortion()
    ball, pgd = best["ssim-ball"], best["pgd"]
    both = torch.isfinite(ball) & torch.isfinite(pgd)
    comparison = uniform_comparison(ball[both], pgd[both], seed, statistic="highest fooling SSIM", null="pgd")
    ceilings = {name: max(p["mean_ssim"] for p in points) for name, points in curves.points.items()}
    metrics["minimal_distortion"] = {
        "images_both": int(both.sum()), "only_ssim_ball": int((torch.isfinite(ball) & ~torch.isfinite(pgd)).sum()),
        "only_pgd": int((~torch.isfinite(ball) & torch.isfinite(pgd)).sum()), "ceilings": ceilings,
        **comparison.as_dict()}
    return claim_from(comparison, DISTORTION_CLAIM, "ssim-ball vs pgd", {}, primary=True)
