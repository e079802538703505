"""Co-location claims: does an attack act where the model looks? (METHODS.md §1, "Inference").

For each attack and attack map, the successful images kept by the experiment
(maps, regions, labels, the image's foreground share) go through the one
statistics engine (:func:`advspatial.statistics.inference.compare_to_nulls`):
every statistic against the hierarchy of nulls. The same engine runs on
model-free **reference RoIs** of the same size (:mod:`advspatial.regions.references`:
class and dataset layout, the centre, the image's intensity and edges), because
an image's own content is image-specific too and the same-class null does not
remove it. They become claims:

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

from ..regions import STATISTICS
from ..statistics.claims import Claim, claim_from
from ..statistics.inference import (
    ExcessDifference, NullComparison, PerImage, compare_to_nulls, difference_influence, difference_of, excess_influence,
)
from ..statistics.nulls import null_groups
from ..regions.overlap import energy_in_roi_pairs
from ..regions.references import REFERENCE_MAPS, REFERENCE_WORDS, LayoutSums, top_count_mask

PRIMARY_STATISTIC = "energy_in_roi"
PRIMARY_NULL = "same-class"
CLAIM = "the attack acts where the model looks"
BEYOND_CLAIM = "the attack acts where the model looks, beyond image content"
#: the null every layout step is compared along (uniform placement, then ever closer partners)
LAYOUT_STEPS = ("uniform", "any-class", "same-class")
#: foreground pixels (any channel above this) define an image's composition for the object-conditioned null
FOREGROUND_LEVEL = 0.05


def composition(images: torch.Tensor) -> torch.Tensor:
    """(N,) foreground share of each image: the covariate the object-conditioned null matches partners on."""
    return (images.amax(1) > FOREGROUND_LEVEL).flatten(1).double().mean(1)


def informative(composition: torch.Tensor) -> bool:
    """Can partners be matched on this composition? Not when most images share one value.

    On natural images nearly every pixel is "foreground" (share 1.0 for most
    CIFAR-10 images), so strata would split tied images by their order: the
    object-conditioned null is then left out rather than reported as if matched.
    """
    if composition.numel() == 0:
        return False
    _, counts = torch.unique(composition, return_counts=True)
    return int(counts.max()) <= composition.numel() // 2


def compare_store(store: Mapping[str, torch.Tensor], permutations: int, seed: int, strata: int,
                  statistics: tuple[str, ...] = STATISTICS) -> dict[str, dict[str, NullComparison]]:
    """Every statistic x null for the kept images of one attack map (needs >= 3 images).

    The object-conditioned null is computed only where the composition is informative.
    """
    composition = store["composition"] if informative(store["composition"]) else None
    return compare_to_nulls(store["importance"], store["attack"], store["roi"], store["roa"], store["labels"],
                            composition=composition, statistics=statistics, n_permutations=permutations,
                            seed=seed, strata=strata)


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


# -- model-free references -------------------------------------------------------------------

def reference_rois(store: Mapping[str, torch.Tensor], seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{reference: (map, RoI)} for the kept images: RoIs of exactly the model RoI's pixel count per image.

    The image references (centre, intensity, edges) come from the store (``ref:NAME``, kept by the
    experiment); the class and dataset layouts are the mean RoI maps of the *other* kept images.
    """
    imp, labels, ids = store["importance"], store["labels"], store.get("ids")
    counts = store["roi"].flatten(1).sum(1)
    sums = LayoutSums()
    sums.add(imp, labels)
    class_layout, dataset_layout = sums.leave_one_out(imp, labels)
    maps = {"class-layout": class_layout, "dataset-layout": dataset_layout,
            **{r: store[f"ref:{r}"] for r in REFERENCE_MAPS if f"ref:{r}" in store}}
    out = {}
    for name in REFERENCE_MAPS:
        if name in maps:
            ref = maps[name].to(imp.dtype)
            out[name] = (ref.nan_to_num(0.0).clamp_min(0), top_count_mask(ref, counts, seed, ids))
    return out


def reference_comparisons(store: Mapping[str, torch.Tensor],
                          references: Mapping[str, tuple[torch.Tensor, torch.Tensor]], permutations: int, seed: int,
                          strata: int) -> dict[str, dict[str, NullComparison]]:
    """The primary statistic of every reference RoI against the same nulls as the model's: {reference: {null: ...}}."""
    composition = store["composition"] if informative(store["composition"]) else None
    return {name: compare_to_nulls(ref, store["attack"], roi, store["roa"], store["labels"], composition=composition,
                                   statistics=(PRIMARY_STATISTIC,), n_permutations=permutations, seed=seed,
                                   strata=strata, sample_ids=store.get("ids"))[PRIMARY_STATISTIC]
            for name, (ref, roi) in references.items()}


def beyond_references(store: Mapping[str, torch.Tensor], references: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                      seed: int) -> dict[str, ExcessDifference]:
    """Per reference, the model RoI's excess over the same-class null minus the reference RoI's (> 0: the model's
    RoI catches more of the attack than that reference does, beyond the class layout)."""
    return {name: difference_of(values, seed) for name, values in beyond_values(store, references).items()}


def beyond_values(store: Mapping[str, torch.Tensor],
                  references: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, PerImage]:
    """Per reference, the per-image values behind :func:`beyond_references` (a study compares them across models)."""
    groups = null_groups(PRIMARY_NULL, store["labels"])
    model = energy_in_roi_pairs(store["roi"], store["attack"])
    return {name: difference_influence(model, energy_in_roi_pairs(roi, store["attack"]), groups)
            for name, (_, roi) in references.items()}


def excess_values(store: Mapping[str, torch.Tensor]) -> PerImage:
    """The per-image values behind the primary statistic's excess over the same-class null (its mean and CI are the
    ``energy_in_roi`` x ``same-class`` comparison of :func:`compare_store`)."""
    return excess_influence(energy_in_roi_pairs(store["roi"], store["attack"]),
                            null_groups(PRIMARY_NULL, store["labels"]))


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
