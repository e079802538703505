"""Co-location claims: does an attack act where the model looks? (METHODS.md §1, "Inference").

For each attack and attack map, the successful images kept by the experiment
(maps, regions, labels, the image's foreground share) go through the one
statistics engine (:func:`advspatial.regions.inference.compare_to_nulls`):
every statistic against the hierarchy of nulls. They become claims:

- **primary** (one per attack, Holm across attacks): energy-in-RoI against the
  same-class null of the main attack map ("the attack acts where the model
  looks, beyond the class layout");
- **secondary** (Benjamini-Hochberg): every other statistic x null, and the
  explainer/fraction sensitivity panel.

Region statistics that are degenerate for a one-pixel RoA (IoU, Dice, and the
rank correlations of a map that is zero but for one pixel) are not computed
for L0 attacks: those get the exact "pixel in RoI" test instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from scipy.stats import hypergeom

from ..regions import STATISTICS
from ..regions.claims import Claim, claim_from
from ..regions.inference import NullComparison, compare_to_nulls, pixel_in_roi_test

PRIMARY_STATISTIC = "energy_in_roi"
PRIMARY_NULL = "same-class"
CLAIM = "the attack acts where the model looks"
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


def pixel_claim(store: Mapping[str, torch.Tensor], subject: str, gates: Mapping[str, bool], seed: int) -> Claim:
    """The L0 claim: do the attacked pixels fall inside the RoI more often than chance?"""
    roi, roa = store["roi"], store["roa"]
    pixels = roi[0].numel()
    k = roa.flatten(1).sum(1)
    r = roi.flatten(1).sum(1)
    hits = (roi & roa).flatten(1).any(1)
    chance = torch.tensor([1.0 - hypergeom.pmf(0, pixels, int(ri), int(ki)) for ri, ki in zip(r, k)],
                          dtype=torch.float64)
    test = pixel_in_roi_test(hits, chance, seed=seed)
    n = test["n"]
    return Claim(CLAIM, subject, "attacked pixel in RoI", "uniform", test["observed"] / n if n else float("nan"),
                 test["expected"] / n if n else float("nan"), test["excess"], test["ratio"], test["p"],
                 gates=dict(gates), primary=True)


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
