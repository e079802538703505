"""The pre-declared claims of experiment ``propagation``, judged by the project's one engine
(:func:`advspatial.statistics.claims.judge`). The primary family (Holm) is the source's own claim: propagation per se
-- the last layer's peak PMmax of a *random* one-pixel change, against 0 and against ``reach_fraction`` of the
layer's largest clean activation -- and, per k, the r = min(radii) success share minus the context-matched
control's (locality). Secondary (Benjamini-Hochberg): the same two per-se claims at every other layer, the attack
against each random control of the same |Δ| at every layer (DE selects the pixel for its effect on the logits,
so "the attack moves the last layer more than a random pixel" is close to true by construction), and every other
locality comparison."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...analysis.propagation import CONTROL_MODES
from ...statistics.claims import Claim, judge
from ..paired import paired_claim
from .config import PropagationConfig
from .findings import per_image_shares
from .stages import KSummary, RandomReach

#: the nulls of the claims: the two random propagation controls, the two locality controls
CONTROL_NULLS = {"position": "random pixel elsewhere, same |Δ|", "colour": "same pixel, random colour, same |Δ|"}
MATCHED_NULL = "context-matched random placement"
UNIFORM_NULL = "uniform random placement (secondary view)"
CONTROL_CLAIMS = {"position": "a random change of the same size elsewhere",
                  "colour": "a random colour of the same size at its place"}
#: the per-layer statistics compared with the controls, and their names in the claims
PM_STATISTICS = {"peak": "peak PMmax", "spread": "spread"}
#: the subject, statistic and nulls of the propagation-per-se claims
PER_SE_SUBJECT = "random one-pixel change"
PER_SE_STATISTIC = "random-pixel peak PMmax"
PER_SE_ZERO_NULL = "0 (no propagation)"


def per_se_fraction_null(fraction: float) -> str:
    """The null of the per-se claim against a fraction of the layer's largest clean activation, in words."""
    return f"{fraction:g} x the layer's largest clean activation"


def per_se_claims(reach: RandomReach, fraction: float, seed: int) -> list[Claim]:
    """Per recorded layer, two claims on the per-image peak PMmax of a random one-pixel change: it is above 0 (the
    change reaches the layer at all) and above ``fraction`` of the layer's largest clean activation. The last
    layer's two are primary; every other layer's are secondary (one BH family with the rest). With no layer (no
    image) the two primary rows stay, with no data."""
    layers = reach.layers or ["last layer"]
    peak = reach.peak if reach.layers else torch.zeros(0, 1, dtype=torch.float64)
    out = []
    for depth, layer in enumerate(layers):
        values = peak[:, depth]
        primary = depth == len(layers) - 1
        statistic = f"{PER_SE_STATISTIC} @ {layer}"
        out.append(paired_claim(f"a random one-pixel change reaches {layer}", PER_SE_SUBJECT, statistic,
                                PER_SE_ZERO_NULL, values, torch.zeros_like(values), seed, primary))
        out.append(paired_claim(f"a random one-pixel change moves {layer} by more than {fraction:g} of its largest "
                                "clean activation", PER_SE_SUBJECT, statistic, per_se_fraction_null(fraction), values,
                                torch.full_like(values, fraction), seed, primary))
    return out


def propagation_claims(summary: KSummary, seed: int) -> list[Claim]:
    """Per control mode and layer: the attack's peak PMmax and spread minus the control's, per image; all secondary
    (the attack's pixel is selected for its effect on the logits, so beating a random pixel there is expected)."""
    layers = summary.totals.layers
    attack = summary.paired.get("attack")
    subject = f"{summary.k}-pixel attack"
    if not layers or attack is None:  # no successful attack: the last-layer rows stay, with no data
        return [paired_claim(f"the attack's pixel moves the last layer more than {CONTROL_CLAIMS[mode]}", subject,
                             f"{PM_STATISTICS['peak']} @ last layer", CONTROL_NULLS[mode], [], [], seed, False)
                for mode in CONTROL_MODES]
    out = []
    for mode in CONTROL_MODES:
        control = summary.paired[mode]
        for depth, layer in enumerate(layers):
            for stat, label in PM_STATISTICS.items():
                what = "moves layer {} more" if stat == "peak" else "reaches more of layer {}"
                out.append(paired_claim(f"the attack's pixel {what.format(layer)} than {CONTROL_CLAIMS[mode]}",
                                        subject, f"{label} @ {layer}", CONTROL_NULLS[mode],
                                        attack[stat][:, depth], control[stat][:, depth], seed, False))
    return out


def locality_claims(rows: list[dict[str, Any]], k: int, radii: Sequence[int], seed: int) -> list[Claim]:
    """Per radius: the per-image share of ring placements that fool minus that of the context-matched control
    (r = smallest radius primary), and minus the uniform control (secondary view)."""
    ok = [r for r in rows if r["k"] == k and r["correct"] and r["analysed"]]
    subject = f"{k}-pixel attack"
    out = []
    for i, radius in enumerate(radii):
        ring = per_image_shares(ok, f"ring{radius}")
        claim = f"the attack's colour moved by {radius} px still fools more often than elsewhere"
        out.append(paired_claim(claim, subject, f"success share at r = {radius}", MATCHED_NULL, ring,
                                per_image_shares(ok, f"matched{radius}"), seed, primary=i == 0, shares=True))
        out.append(paired_claim(claim, subject, f"success share at r = {radius}", UNIFORM_NULL, ring,
                                per_image_shares(ok, "random"), seed, primary=False, shares=True))
    return out


def build_claims(config: PropagationConfig, reach: RandomReach, summaries: Sequence[KSummary],
                 rows: list[dict[str, Any]]) -> list[Claim]:
    """Every pre-declared claim, judged together: propagation per se at the last layer (against 0 and against
    ``reach_fraction``) and, per k, the r = min(radii) locality vs the context-matched control are the primary
    family (Holm); the rest BH."""
    claims: list[Claim] = per_se_claims(reach, config.reach_fraction, config.seed)
    for s in summaries:
        claims += propagation_claims(s, config.seed)
        claims += locality_claims(rows, s.k, config.radii, config.seed)
    claims.sort(key=lambda c: not c.primary)
    return judge(claims, sesoi=config.sesoi, alpha=config.significance)

