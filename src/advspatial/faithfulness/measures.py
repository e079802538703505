"""The gate's measures, read from its per-image columns: what one region does that another does not.

A gate's columns (:func:`~advspatial.faithfulness.deletion.deletion_columns`,
:func:`~advspatial.faithfulness.deletion.restricted_attack_columns`) hold, per image and region, the true-class logit
drop after a deletion fill and the true-label margin after the restricted attack. Two measures come from them:

- ``deletion:FILL``: the region's logit drop (``deletion:FILL:drop:REGION``);
- ``attack``: the **margin the restricted attack removes**, ``m_clean - m_region`` (the true-label logit margin
  before minus after the attack confined to the region), on a correctly classified image (``m_clean > 0``). The
  restricted attack's budget is calibrated so that the unrestricted attack flips about half of the images
  (:mod:`.calibration`), so the regions' attacks do not saturate and the drop measures how far towards the decision
  boundary each gets. Measured on the real per-image columns of Fashion-MNIST and the CIFAR-10 ResNet-20
  (``benchmarks/restricted_outcome.py``; docs/methods.md, "The restricted attack"), this raw drop held its error
  under the null and had more power than the share of the clean margin removed, capped at the flip (which divides
  by small clean margins and, at a saturated budget, collapses to ties at 1).

A comparison's per-image differences (:func:`differences`) are the first region's measure minus the other's (> 0:
the first region does more damage). The margin of a comparison (:func:`margins`) is a stated share of the first
region's own mean damage on that measure: "within 10% of the RoI's own damage" is the same damage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .deletion import ROI

#: fills that create no edges where they delete: the only ones the scattered control is judged with
#: (zero-filling scattered pixels creates edges that hurt a model on natural images whatever the pixels show)
EDGE_FREE_FILLS = ("road", "blur", "inpaint")
#: the restricted attack's measure
ATTACK = "attack"


def fills_in(columns: Mapping[str, torch.Tensor], region: str = ROI) -> list[str]:
    """The deletion fills whose columns of ``region`` (default the RoI) are present, in column order."""
    found = []
    for key in columns:
        parts = key.split(":")
        if len(parts) == 4 and parts[0] == "deletion" and parts[2] == "drop" and parts[3] == region \
                and parts[1] not in found:
            found.append(parts[1])
    return found


def margin_drop(columns: Mapping[str, torch.Tensor], region: str) -> torch.Tensor | None:
    """(N,) true-label margin the restricted attack inside ``region`` removes (clean minus attacked); NaN where the
    image was not correctly classified; None without the columns."""
    clean, attacked = columns.get("attack:margin_clean"), columns.get(f"attack:margin:{region}")
    if clean is None or attacked is None:
        return None
    clean, attacked = clean.double(), attacked.double()
    return torch.where(clean > 0, clean - attacked, torch.full_like(clean, float("nan")))


def damage(columns: Mapping[str, torch.Tensor], fills: Sequence[str], region: str,
           measures: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """(N,) damage ``region`` does per measure whose columns are present (``measures``: only these)."""
    out = {}
    for f in fills:
        drop = columns.get(f"deletion:{f}:drop:{region}")
        if drop is not None:
            out[f"deletion:{f}"] = drop.double()
    drop = margin_drop(columns, region)
    if drop is not None:
        out[ATTACK] = drop
    return {k: v for k, v in out.items() if measures is None or k in measures}


def differences(columns: Mapping[str, torch.Tensor], fills: Sequence[str], mine: str, other: str,
                edge_free_only: bool = False, measures: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Per-image differences of region ``mine`` against region ``other`` (> 0: ``mine`` does more damage), per
    measure both have columns for; ``edge_free_only`` keeps the deletion fills of :data:`EDGE_FREE_FILLS` only."""
    kept = [f for f in fills if not edge_free_only or f in EDGE_FREE_FILLS]
    a, b = damage(columns, kept, mine, measures), damage(columns, kept, other, measures)
    return {k: a[k] - b[k] for k in a if k in b}


def margins(columns: Mapping[str, torch.Tensor], fills: Sequence[str], region: str, share: float
            ) -> dict[str, float]:
    """Per measure, the margin of a comparison of ``region``: ``share`` of its own mean damage (0 when it does no
    damage on average, so that nothing can be equivalent to a region that does nothing)."""
    out = {}
    for measure, values in damage(columns, fills, region).items():
        finite = values[torch.isfinite(values)]
        mean = float(finite.mean()) if finite.numel() else 0.0
        out[measure] = max(0.0, share * mean)
    return out
