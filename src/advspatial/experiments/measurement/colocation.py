"""Co-location claims: does an attack act where the model looks? (METHODS.md §1, "Inference").

For each attack and attack map, the successful images kept by the experiment
(maps, regions, labels, the image's foreground share) go through the one
statistics engine in one call per store (:func:`compare_store`, from
:mod:`advspatial.statistics.store`): every statistic against the hierarchy of
nulls, and the same on model-free **reference RoIs** of the same size
(:mod:`advspatial.regions.references`: class and dataset layout, the centre, the
image's intensity and edges), because an image's own content is image-specific
too and the same-class null does not remove it. They become claims:

- **primary** (one per attack, Holm across attacks): *beyond layout and image
  content* -- the attack map's share inside the model's RoI against its share
  inside every other region of the same pixel count, paired per image: each
  model-free reference region (the fixed centre, class and dataset layouts; the
  image's intensity and edges: raw shares, :mod:`.decomposition`) and a
  same-class image's RoI (the image-specific part, the excess over the same-class
  null). Supported only when the RoI beats every one of them (an
  intersection-union test: the claim takes the largest p and the weakest
  difference, so no region can be picked after looking);
- **secondary** (Benjamini-Hochberg): the plain excess over the same-class null,
  every other statistic x null, every reference's co-location, and the
  explainer/fraction sensitivity panel.

Region statistics that are degenerate for a one-pixel RoA (IoU, Dice, and the
rank correlations of a map that is zero but for one pixel) are not computed
for L0 attacks: those get the exact "pixel in RoI" test instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ...statistics.claims import WEAKEST, Claim, claim_from
from ...statistics.estimates import Estimate
from ...statistics.inference import NullComparison, compare_to_nulls
from ...statistics.store import PRIMARY_NULL, PRIMARY_STATISTIC, Store, StoreComparison
from .decomposition import REGION_NOUNS, SAME_CLASS, Decomposition, clears_margin, compared_share

CLAIM = "the attack acts where the model looks"
BEYOND_CLAIM = "the attack acts where the model looks, beyond layout and image content"
#: the null every layout step is compared along (uniform placement, then ever closer partners)
LAYOUT_STEPS = ("uniform", "any-class", "same-class")
#: foreground pixels (any channel above this) define an image's composition for the object-conditioned null
FOREGROUND_LEVEL = 0.05


def composition(images: torch.Tensor) -> torch.Tensor:
    """(N,) foreground share of each image: the covariate the object-conditioned null matches partners on."""
    return (images.amax(1) > FOREGROUND_LEVEL).flatten(1).double().mean(1)


def pixel_claims(store: Store, subject: str, gates: Mapping[str, bool], permutations: int,
                 seed: int) -> list[Claim]:
    """The L0 claims: is the attacked pixel inside the RoI more often than chance?

    Primary: against the same-class partner null (P(pixel_i in RoI_j), j of the
    same class: the class layout alone puts pixels in RoIs) with the engine's
    permutation p; secondary: against uniform placement of the RoI's own shape.
    The statistic is the share of the attacked pixels inside the RoI (0/1 for one pixel).
    """
    roa = store.roa
    result = compare_to_nulls(store.importance, roa.float(), store.roi, roa, store.labels,
                              statistics=(PRIMARY_STATISTIC,), n_permutations=permutations, seed=seed,
                              nulls=("uniform", PRIMARY_NULL), sample_ids=store.ids)[PRIMARY_STATISTIC]
    out = []
    for null, primary in ((PRIMARY_NULL, True), ("uniform", False)):
        claim = claim_from(result[null], CLAIM, subject, gates, primary=primary)
        claim.statistic = "attacked pixel in RoI"
        claim.scale = PRIMARY_STATISTIC
        out.append(claim)
    return out


def headline_claim(subject: str, result: StoreComparison, decomposition: Decomposition,
                   gates: Mapping[str, bool]) -> Claim:
    """The primary claim: the model's RoI catches more of the attack map than every other region of the same size
    (:mod:`.decomposition`'s rows), an intersection-union test.

    Its effect is the weakest row (the lowest CI bound among the rows the RoI does not beat by the margin, or among
    all where it beats every one; named "weakest" in the null, not "closest": a row with a wider CI can be weaker
    than the region with the largest share), its observed and null values that row's two mean shares (so observed
    minus null is the effect) and its p the largest p of all rows: it is supported only when every row is, and no
    region is picked after looking.
    """
    p_values = {SAME_CLASS: result.primary.p, **{r: d.p for r, d in result.beyond.items()}}
    worst = min(decomposition.rows, key=lambda r: (clears_margin(r.difference) and r.difference.low > 0,
                                                   r.difference.low if r.difference.n else -math.inf))
    values = result.values.excess if worst.region == SAME_CLASS else result.values.beyond[worst.region]
    observed, null = compared_share(values.observed), compared_share(values.null)
    d = worst.difference
    named = WEAKEST if d.n else "undecidable here"  # a row no image entered (no same-class partner) has no estimate
    return Claim(BEYOND_CLAIM, subject, PRIMARY_STATISTIC,
                 f"every region of the same size; {named}: {REGION_NOUNS[worst.region]}", observed, null,
                 Estimate(d.mean, d.low, d.high, d.n), observed / null if null else math.nan,
                 max((p_values[r.region] for r in decomposition.rows), default=math.nan),
                 gates=dict(gates), primary=True, scale=PRIMARY_STATISTIC)


def layout_steps(comparisons: Mapping[str, NullComparison]) -> dict[str, float]:
    """The primary statistic from chance to observed: uniform, any-class, same-class null means and the observed."""
    steps = {null: float(comparisons[null].null_mean) for null in LAYOUT_STEPS if null in comparisons}
    if PRIMARY_NULL in comparisons:
        steps["observed"] = float(comparisons[PRIMARY_NULL].observed)
    return steps


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
