"""The claims of ``pse``: one per (CAM, group type) share and null, judged with the CAM explainer's faithfulness gate.

Each share of :func:`advspatial.analysis.pse_cam.pse_vs_cam` is compared with the
engine's hierarchy of nulls (uniform placement, any-class, same-class,
object-conditioned where the images' composition is informative), as spatial's
co-location claims are. One primary per pre-declared claim: the type that acts
on the CAM's own class against the primary null (``baseline``, same-class by
default), corrected by Holm; every other (CAM, type, null) row is secondary,
corrected by Benjamini-Hochberg; each gets a verdict word
(:mod:`advspatial.statistics.claims`).

The typing itself is a claim too (:func:`typing_claims`): per attack variant, the
share of the perturbation's energy in suppression-dominated (and in
promotion-dominated) groups against the random-sign control of the same
per-group energy (:mod:`advspatial.experiments.pse.control`), primary; the balanced
share, secondary; and the secondary claim that the typing does not explain most
of the perturbation, judged on the untyped energy share against one half. They
rest on no CAM, so they carry no gate, and enter the same Holm and BH families.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...analysis.pse_cam import PSECamResult
from ...analysis.pse_types import TYPE_NAMES
from ...faithfulness.record import GateResult
from ...statistics.claims import Claim, claim_from, judge
from ..measurement.roi import with_roi_caveat
from ..paired import paired_claim
from .config import PSEConfig
from .control import CONTROL
from .rows import CAM_KEYS, energy_shares_of

CAM_LABELS = {"true_cam": "CAM_t0(x)", "target_cam": "CAM_t(x')"}
CAM_REGIONS = {"true_cam": "the true-class CAM region", "target_cam": "the CAM region of t on x'"}
#: the primary claim of each CAM: the group type that acts on the CAM's own class
PRIMARY_TYPE = {"true_cam": "suppression", "target_cam": "promotion"}
#: how the claims name the groups of each type
GROUP_NAMES = {"suppression": "suppression-dominated groups", "promotion": "promotion-dominated groups",
               "balanced": "balanced groups", "opposing": "opposing groups"}
#: the gate every CAM claim carries
ROI_GATE = "RoI faithfulness"


def claim_text(key: str, type_name: str) -> str:
    """The claim of one (CAM, group type) share.

    E.g. "suppression-dominated groups fall in the true-class CAM region".
    """
    return f"{GROUP_NAMES[type_name]} fall in {CAM_REGIONS[key]}"


def cam_claims(variant: str, cam_test: PSECamResult, gates: dict[str, bool], null: str) -> list[Claim]:
    """One claim per (CAM, group type, null) from the engine's comparisons of a :class:`PSECamResult`.

    Primary: suppression in CAM_t0(x) and promotion in CAM_t(x') (the type that acts on the CAM's own class)
    against ``null``, the pre-declared primary null; every other type and null is secondary. A result without
    ``by_null`` (one null only) gives its comparisons under ``null``.
    """
    out = []
    for key in CAM_KEYS:
        overlap = getattr(cam_test, key)
        by_null = overlap.by_null or {null: overlap.comparisons}
        for k, name in enumerate(TYPE_NAMES):
            for null_name, comparisons in by_null.items():
                claim = claim_from(comparisons[k], claim_text(key, name), variant, gates,
                                   primary=name == PRIMARY_TYPE[key] and null_name == null)
                claim.statistic = f"{name} share in {CAM_LABELS[key]}"
                claim.null = null_name
                claim.scale = "energy_in_roi"  # a share of the group energy inside a region: 5% of the null share
                out.append(claim)
    return out


#: the typing claims against the random-sign control, and whether each is primary
TYPING_PRIMARY = {"suppression": True, "promotion": True, "balanced": False}
#: the null of the typing claims
TYPING_NULL = f"{CONTROL}, same per-group energy"
#: the claim that fires when most of the perturbation's energy is untyped
UNEXPLAINED = "the typing does not explain most of the perturbation (untyped energy share above one half)"
#: the untyped energy share above which the typing does not explain most of the perturbation
UNEXPLAINED_SHARE = 0.5


def typing_claim_text(type_name: str) -> str:
    """E.g. "suppression-dominated groups carry more of the perturbation's energy than under random signs"."""
    return f"{GROUP_NAMES[type_name]} carry more of the perturbation's energy than under {CONTROL}"


def typing_claims(variant: str, observed: Mapping[str, Sequence[float]], control: Mapping[str, Sequence[float]],
                  seed: int) -> list[Claim]:
    """The typing's claims of one variant from per-image energy shares (NaN: image left out).

    ``observed`` and ``control`` map each name of
    :data:`~advspatial.experiments.pse.control.SHARE_NAMES` to the per-image shares of the attack and of its
    random-sign control. Each type's claim: mean of observed minus control per image, bootstrap CI, sign-flip p
    (:func:`~advspatial.experiments.paired.paired_claim`). The unexplained claim: the untyped share minus
    :data:`UNEXPLAINED_SHARE` per image, so "supported" means the untyped share is above one half beyond
    chance, by the engine's fixed rule.
    """
    out = [paired_claim(typing_claim_text(name), variant, f"{name} energy share", TYPING_NULL, observed[name],
                        control[name], seed, primary) for name, primary in TYPING_PRIMARY.items()]
    untyped = list(observed["untyped"])
    out.append(paired_claim(UNEXPLAINED, variant, "untyped energy share", "one half", untyped,
                            [UNEXPLAINED_SHARE] * len(untyped), seed, primary=False))
    return out


def judged_claims(config: PSEConfig, cam_tests: Mapping[str, PSECamResult | None], rows: Sequence[Mapping[str, Any]],
                  gate: GateResult) -> list[Claim]:
    """Every claim of the run, corrected and given its verdict: per variant (in ``cam_tests`` order) its CAM claims
    (when it has an image-level test; gated by the CAM explainer's faithfulness ``gate``) and its typing claims.

    A failed gate makes every CAM-dependent verdict "not interpretable" (through the claims' gate); an undecided
    one puts its caveat on them (:func:`~advspatial.experiments.measurement.roi.with_roi_caveat`).
    """
    gates = {ROI_GATE: not gate.failed}
    claims: list[Claim] = []
    for variant, cam_test in cam_tests.items():
        if cam_test is not None:
            claims += with_roi_caveat(cam_claims(variant, cam_test, gates, config.baseline), gate)
        ok = [r for r in rows if r["variant"] == variant and r["successful"]]
        claims += typing_claims(variant, energy_shares_of(ok, ""), energy_shares_of(ok, "control:"), config.seed)
    return judge(claims, sesoi=config.sesoi, alpha=config.significance)


def is_typing_claim(claim: Claim) -> bool:
    """True for the typing's claims (against random signs, or the untyped share against one half)."""
    return claim.null in (TYPING_NULL, "one half")


def typing_verdicts(claims: Sequence[Claim], variant: str) -> dict[str, str]:
    """The verdict word of each typing claim of ``variant``, by statistic."""
    return {c.statistic: c.verdict for c in claims if c.subject == variant and is_typing_claim(c)}


def forest_claims(claims: Sequence[Claim], null: str) -> dict[str, list[Claim]]:
    """The CAM claims against the primary ``null``, per variant that has any (none: no forest plot)."""
    groups: dict[str, list[Claim]] = {}
    for c in claims:
        if c.null == null:
            groups.setdefault(c.subject, []).append(c)
    return groups
