"""Co-location claims: does an attack act where the model looks? (METHODS.md §1, "Inference").

For each attack and attack map, the successful images kept by the experiment
(maps, regions, labels, the image's foreground share) go through the one
statistics engine in one call per store (:func:`compare_store`, from
:mod:`advspatial.statistics.store`): every statistic against the hierarchy of
nulls, and the same on model-free **reference RoIs** of the same size
(:mod:`advspatial.regions.references`: class and dataset layout, the centre, the
image's intensity and edges), because an image's own content is image-specific
too and the same-class null does not remove it. They become claims:

- **primary** (one per attack, Holm across attacks): *beyond image content* --
  per image, the model RoI's energy excess over the same-class null minus each
  reference RoI's; supported only when every difference is above 0 (an
  intersection-union test: the claim takes the largest p and the lowest CI of
  the differences, so no reference can be picked after looking);
- **secondary** (Benjamini-Hochberg): the plain excess over the same-class null,
  every other statistic x null, every reference's co-location, and the
  explainer/fraction sensitivity panel.

Region statistics that are degenerate for a one-pixel RoA (IoU, Dice, and the
rank correlations of a map that is zero but for one pixel) are not computed
for L0 attacks: those get the exact "pixel in RoI" test instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..regions.references import REFERENCE_WORDS
from ..statistics.claims import Claim, claim_from
from ..statistics.inference import ExcessDifference, NullComparison, compare_to_nulls
from ..statistics.store import PRIMARY_NULL, PRIMARY_STATISTIC

CLAIM = "the attack acts where the model looks"
BEYOND_CLAIM = "the attack acts where the model looks, beyond image content"
#: the null every layout step is compared along (uniform placement, then ever closer partners)
LAYOUT_STEPS = ("uniform", "any-class", "same-class")
#: foreground pixels (any channel above this) define an image's composition for the object-conditioned null
FOREGROUND_LEVEL = 0.05


def composition(images: torch.Tensor) -> torch.Tensor:
    """(N,) foreground share of each image: the covariate the object-conditioned null matches partners on."""
    return (images.amax(1) > FOREGROUND_LEVEL).flatten(1).double().mean(1)


def pixel_claims(store: Mapping[str, torch.Tensor], subject: str, gates: Mapping[str, bool], permutations: int,
                 seed: int) -> list[Claim]:
    """The L0 claims: is the attacked pixel inside the RoI more often than chance?

    Primary: against the same-class partner null (P(pixel_i in RoI_j), j of the
    same class: the class layout alone puts pixels in RoIs) with the engine's
    permutation p; secondary: against uniform placement of the RoI's own shape.
    The statistic is the share of the attacked pixels inside the RoI (0/1 for one pixel).
    """
    roa = store["roa"]
    result = compare_to_nulls(store["importance"], roa.float(), store["roi"], roa, store["labels"],
                              statistics=(PRIMARY_STATISTIC,), n_permutations=permutations, seed=seed,
                              nulls=("uniform", PRIMARY_NULL), sample_ids=store.get("ids"))[PRIMARY_STATISTIC]
    out = []
    for null, primary in ((PRIMARY_NULL, True), ("uniform", False)):
        claim = claim_from(result[null], CLAIM, subject, gates, primary=primary)
        claim.statistic = "attacked pixel in RoI"
        claim.scale = PRIMARY_STATISTIC
        out.append(claim)
    return out


def beyond_claim(subject: str, differences: Mapping[str, ExcessDifference], same_class: NullComparison,
                 gates: Mapping[str, bool]) -> Claim:
    """The primary claim: the model's RoI beats every reference (intersection-union test).

    Its effect is the difference with the lowest CI bound and its p the largest
    p, so it is supported only when every difference is; the SESOI is the
    energy share's (5% of the same-class null).
    """
    worst = min(differences.values(), key=lambda d: (d.effect.low if d.effect.n else -math.inf))
    p = max((d.p for d in differences.values()), default=math.nan)
    return Claim(BEYOND_CLAIM, subject, PRIMARY_STATISTIC, "same-class, beyond every reference",
                 float(same_class.observed), float(same_class.null_mean), worst.effect, math.nan, p,
                 gates=dict(gates), primary=True, scale=PRIMARY_STATISTIC)


def explained_by(differences: Mapping[str, ExcessDifference]) -> list[str]:
    """The references the model's RoI does not beat (CI of the difference not above 0), in words."""
    return [REFERENCE_WORDS[name] for name, d in differences.items() if not (d.effect.n and d.effect.low > 0)]


def layout_steps(comparisons: Mapping[str, NullComparison]) -> dict[str, float]:
    """The primary statistic from chance to observed: uniform, any-class, same-class null means and the observed."""
    steps = {null: float(comparisons[null].null_mean) for null in LAYOUT_STEPS if null in comparisons}
    if PRIMARY_NULL in comparisons:
        steps["observed"] = float(comparisons[PRIMARY_NULL].observed)
    return steps


def layout_sentence(kind: str, steps: Mapping[str, float], same_class: NullComparison,
                    differences: Mapping[str, ExcessDifference], inseparable: Sequence[str] = ()) -> str:
    """One plain sentence: how much of the attack map's mass the RoI catches beyond a same-class RoI, how much of
    the concentration above chance is layout, and which image-content references account for as much. A reference
    that accounts for as much *and* that the RoI is equivalent to in importance (``inseparable``: the gate's
    specificity rows, :func:`~advspatial.faithfulness.specificity.inseparable`) cannot be separated from the RoI on
    this model: the sentence says the co-location is that reference."""
    excess = same_class.excess.mean
    text = (f"{100 * excess:.1f} of every 100 units of the {kind} map fall in this image's RoI beyond what a "
            f"same-class image's RoI catches (ratio {same_class.ratio:.2f})")
    if all(k in steps for k in ("uniform", "any-class", "same-class", "observed")):
        above = steps["observed"] - steps["uniform"]
        layout = steps["same-class"] - steps["uniform"]
        if above > 0:
            share = min(max(layout / above, 0.0), 1.0)
            text += (f"; {share:.0%} of the concentration above chance ({steps['uniform']:.3f} → "
                     f"{steps['observed']:.3f}) is layout (dataset {steps['any-class'] - steps['uniform']:+.3f}, "
                     f"class {steps['same-class'] - steps['any-class']:+.3f}), "
                     f"{1 - share:.0%} specific to the image")
    same = [REFERENCE_WORDS[name] for name, d in differences.items()
            if name in inseparable and not (d.effect.n and d.effect.low > 0)]
    if same:
        text += (f"; on this model the RoI and {' and '.join(same)} cannot be separated: the co-location is "
                 f"{' and '.join(same)}")
    missed = [w for w in explained_by(differences) if w not in same]
    if missed:
        text += f"; {', '.join(missed)} account for as much as the model's RoI"
    elif differences:
        text += "; the model's RoI catches more than every model-free reference"
    return text + "."


def attack_claims(subject: str, comparisons: Mapping[str, Mapping[str, NullComparison]], gates: Mapping[str, bool],
                  primary: bool, claim: str = CLAIM) -> list[Claim]:
    """Claims of one attack map: the primary endpoint first (when ``primary``), then every other row.

    ``claim`` words what is claimed (the perceptual experiment's RoA is where SSIM drops).
    """
    out = []
    for stat, by_null in comparisons.items():
        for null, comparison in by_null.items():
            is_primary = primary and stat == PRIMARY_STATISTIC and null == PRIMARY_NULL
            out.append(claim_from(comparison, claim, subject, gates, primary=is_primary))
    out.sort(key=lambda c: not c.primary)
    return out


def comparisons_dict(comparisons: Mapping[str, Mapping[str, NullComparison]]) -> dict[str, Any]:
    """JSON-ready ``{statistic: {null: comparison}}``."""
    return {s: {n: c.as_dict() for n, c in by_null.items()} for s, by_null in comparisons.items()}
