"""The pre-declared claims of experiment ``propagation``, judged by the project's one engine
(:func:`advspatial.regions.claims.judge`): per k the primary family (Holm) is the last layer's peak PMmax, attack
minus each random control, and the r = min(radii) success share minus the context-matched control's; every other
layer x statistic x control and every other locality comparison is secondary (Benjamini-Hochberg)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...analysis.propagation import CONTROL_MODES
from ...regions.claims import Claim, judge
from ..paired import paired_claim
from .config import PropagationConfig
from .metrics import per_image_shares
from .stages import KSummary

#: the nulls of the claims: the two random propagation controls, the two locality controls
CONTROL_NULLS = {"position": "random pixel elsewhere, same |Δ|", "colour": "same pixel, random colour, same |Δ|"}
MATCHED_NULL = "context-matched random placement"
UNIFORM_NULL = "uniform random placement (secondary view)"
CONTROL_CLAIMS = {"position": "a random change of the same size elsewhere",
                  "colour": "a random colour of the same size at its place"}
#: the per-layer statistics compared with the controls, and their names in the claims
PM_STATISTICS = {"peak": "peak PMmax", "spread": "spread"}


def propagation_claims(summary: KSummary, seed: int) -> list[Claim]:
    """Per control mode and layer: the attack's peak PMmax and spread minus the control's, per image.

    Primary: the peak PMmax at the last recorded layer (the claim "the perturbation reaches the last layer"
    beyond a random change of the same size). Secondary: every other (layer, statistic)."""
    layers = summary.totals.layers
    attack = summary.paired.get("attack")
    subject = f"{summary.k}-pixel attack"
    if not layers or attack is None:  # no successful attack: the primary rows stay, with no data
        return [paired_claim(f"the attack's pixel moves the last layer more than {CONTROL_CLAIMS[mode]}", subject,
                             f"{PM_STATISTICS['peak']} @ last layer", CONTROL_NULLS[mode], [], [], seed, True)
                for mode in CONTROL_MODES]
    out = []
    for mode in CONTROL_MODES:
        control = summary.paired[mode]
        for depth, layer in enumerate(layers):
            for stat, label in PM_STATISTICS.items():
                primary = stat == "peak" and depth == len(layers) - 1
                what = "moves layer {} more" if stat == "peak" else "reaches more of layer {}"
                out.append(paired_claim(f"the attack's pixel {what.format(layer)} than {CONTROL_CLAIMS[mode]}",
                                        subject, f"{label} @ {layer}", CONTROL_NULLS[mode],
                                        attack[stat][:, depth], control[stat][:, depth], seed, primary))
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


def build_claims(config: PropagationConfig, summaries: Sequence[KSummary], rows: list[dict[str, Any]]) -> list[Claim]:
    """Every pre-declared claim, judged together: per k, the last-layer peak vs each propagation control and the
    r = min(radii) locality vs the context-matched control are the primary family (Holm); the rest BH."""
    claims: list[Claim] = []
    for s in summaries:
        claims += propagation_claims(s, config.seed)
        claims += locality_claims(rows, s.k, config.radii, config.seed)
    claims.sort(key=lambda c: not c.primary)
    return judge(claims, sesoi=config.sesoi, alpha=config.significance)

