"""Where the promotion–suppression group types fall relative to class activation maps (METHODS.md §5).

:func:`pse_vs_cam` asks, for each group type, which share of its perturbation
energy lies inside the top region of ``CAM_t0(x)`` and of ``CAM_t(x')`` (the
shared top-fraction rule), against the hierarchy of nulls of the one inference
engine (:func:`advspatial.statistics.inference.compare_to_nulls`, the function the
spatial experiment's co-location claims use): uniform placement of the CAM
region's own shape, any-class and same-class partners, and object-conditioned
partners where a composition is given. The statistic is ``energy_in_roi`` with
the type's weight map as the attack map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import ConfigError, ShapeError, check_range
from ..regions import top_fraction_mask
from ..statistics.nulls import NULLS
from ..statistics.inference import NullComparison, compare_to_nulls
from ..statistics.nulls import null_groups
from .pse_types import TYPE_NAMES, PSEResult, group_type_map


@dataclass
class CamOverlap:
    """Where each group type falls relative to one CAM's top region.

    Attributes (type axis in ``TYPE_NAMES`` order):
        per_image: (N,4) share of the type's weight inside the region (NaN where the
            image has none of that type, or no partner to be compared with).
        observed: (4,) mean of ``per_image`` over the images that enter the test.
        baseline_mean: (4,) the exact null: per image, the mean share over its
            partners' CAM regions (:func:`~advspatial.statistics.inference.partner_null`),
            averaged over the same images.
        baseline_std: (4,) spread of the mean excess under random within-stratum permutations.
        p_value: (4,) two-sided permutation p of the mean excess
            (:func:`~advspatial.statistics.inference.compare_to_nulls`).
        comparisons: the four engine results against the primary null (excess with its bootstrap CI, ratio, z, n).
        by_null: ``{null: four engine results}`` for every null of the hierarchy computed (the primary one
            included); the fields above are the primary null's.
    """

    per_image: torch.Tensor
    observed: torch.Tensor
    baseline_mean: torch.Tensor
    baseline_std: torch.Tensor
    p_value: torch.Tensor
    comparisons: tuple[NullComparison, ...] = ()
    by_null: dict[str, tuple[NullComparison, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, object]]:
        """``{type: {observed, baseline_mean, baseline_std, p_value, n, excess, ratio, z, null, nulls}}`` as plain
        values (``nulls``: ``{null: the engine's comparison as a dict}`` for every null computed)."""
        out: dict[str, dict[str, object]] = {}
        for k, name in enumerate(TYPE_NAMES):
            row: dict[str, object] = {
                "observed": float(self.observed[k]),
                "baseline_mean": float(self.baseline_mean[k]),
                "baseline_std": float(self.baseline_std[k]),
                "p_value": float(self.p_value[k]),
            }
            if self.comparisons:
                c = self.comparisons[k]
                row.update(n=c.n, excess=c.excess.as_dict(), ratio=c.ratio, z=c.z, null=c.null)
            if self.by_null:
                row["nulls"] = {null: comps[k].as_dict() for null, comps in self.by_null.items()}
            out[name] = row
        return out


@dataclass
class PSECamResult:
    """:func:`pse_vs_cam` output: overlap with ``CAM_t0(x)`` and with ``CAM_t(x')``."""

    true_cam: CamOverlap
    target_cam: CamOverlap
    top_fraction: float
    weight: str
    n_perm: int
    primary_null: str = "any-class"

    def as_dict(self) -> dict[str, object]:
        return {
            "true_cam": self.true_cam.as_dict(), "target_cam": self.target_cam.as_dict(),
            "top_fraction": self.top_fraction, "weight": self.weight, "n_perm": self.n_perm,
            "alternative": "two-sided", "primary_null": self.primary_null,
            "nulls": list(self.true_cam.by_null),
        }


WEIGHTS = ("energy", "pixels")


def pse_vs_cam(
    result: PSEResult,
    cam_true: torch.Tensor,
    cam_target: torch.Tensor,
    top_fraction: float = 0.2,
    n_perm: int = 100,
    seed: int = 0,
    *,
    weight: str = "energy",
    strata: torch.Tensor | None = None,
    sample_ids: torch.Tensor | None = None,
    composition: torch.Tensor | None = None,
    primary_null: str | None = None,
) -> PSECamResult:
    """Share of each group type inside the top-``top_fraction`` region of two CAMs, against the nulls.

    ``cam_true`` is CAM_t0(x) and ``cam_target`` CAM_t(x'), both (N,H,W) ≥ 0, computed
    by the caller (``advspatial.maps``). For type k and image i the statistic is
    ``Σ_{pixels of type k in region} w / Σ_{pixels of type k} w`` with ``w`` the
    pixel energy ``Σ_c δ²`` (``weight="energy"``, default) or 1 (``"pixels"``):
    the engine's ``energy_in_roi`` of the type's weight map; images without type k
    are left out of its mean.

    Top region: the shared rule :func:`advspatial.regions.top_fraction_mask`
    (strictly positive pixels only, ties at the cut broken by a random order seeded
    by (``seed``, ``sample_ids[i]``); default ids 0..N-1). Nulls: every null of the
    engine's hierarchy (:func:`advspatial.statistics.inference.compare_to_nulls`, as for
    spatial's co-location claims) -- ``uniform`` (the image's own CAM region at random
    cyclic shifts), ``any-class`` and ``same-class`` (partners: the other images of
    its stratum, ``strata``, e.g. the true class; default one stratum) and
    ``object-conditioned`` when ``composition`` (N,) is given -- each with the exact
    per-image null, the mean excess with a bootstrap CI and a two-sided p from
    ``n_perm`` random within-group permutations or placements. ``primary_null``
    (default ``same-class`` with strata, else ``any-class``) fills the summary fields
    of :class:`CamOverlap`. Images alone in their stratum have no same-class partner
    and are left out of that null (NaN in ``per_image`` when it is the primary).
    """
    check_range("top_fraction", top_fraction, 0.0, 1.0, low_inclusive=False)
    if n_perm < 1:
        raise ConfigError(f"n_perm={n_perm} is out of range; valid: >= 1")
    if weight not in WEIGHTS:
        raise ConfigError(f"unknown weight {weight!r}; valid: {', '.join(WEIGHTS)}")
    n, h, w = result.labels.shape
    for name, cam in (("cam_true", cam_true), ("cam_target", cam_target)):
        if tuple(cam.shape) != (n, h, w):
            raise ShapeError(f"{name} must be ({n},{h},{w}) like the group map, got {tuple(cam.shape)}")
    for name, values in (("strata", strata), ("composition", composition)):
        if values is not None and tuple(values.shape) != (n,):
            raise ShapeError(f"{name} must be ({n},), got {tuple(values.shape)}")
    primary = primary_null or ("any-class" if strata is None else "same-class")
    if primary not in NULLS or (primary == "object-conditioned" and composition is None):
        raise ConfigError(f"primary_null {primary!r} is not one of the nulls computed; valid: "
                          f"{', '.join(x for x in NULLS if x != 'object-conditioned' or composition is not None)}")
    labels = torch.zeros(n, dtype=torch.int64) if strata is None else torch.as_tensor(strata).cpu().long()

    type_map = group_type_map(result).flatten(1).cpu()
    base = result.pixel_energy.flatten(1).cpu().double() if weight == "energy" else torch.ones(n, h * w).double()
    weights = torch.stack([base * (type_map == k) for k in range(len(TYPE_NAMES))]).reshape(-1, n, h, w)
    overlaps = []
    for cam in (cam_true, cam_target):
        cam = cam.detach().cpu().float()
        region = top_fraction_mask(cam, top_fraction, seed, sample_ids).mask
        by_null = _engine(cam, region, weights, labels, composition, n_perm, seed, sample_ids)
        overlaps.append(_overlap(region, weights, labels, composition, by_null, primary))
    return PSECamResult(overlaps[0], overlaps[1], float(top_fraction), weight, n_perm, primary)


def _engine(cam: torch.Tensor, region: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor,
            composition: torch.Tensor | None, n_perm: int, seed: int,
            sample_ids: torch.Tensor | None) -> dict[str, tuple[NullComparison, ...]]:
    """``{null: four comparisons}``: each type's weight map as the attack map, the CAM region as the RoI."""
    out: dict[str, list[NullComparison]] = {}
    for k, name in enumerate(TYPE_NAMES):
        attack = weights[k].float()
        res = compare_to_nulls(cam.clamp_min(0), attack, region, attack > 0, labels, composition=composition,
                               statistics=("energy_in_roi",), n_permutations=n_perm, seed=seed,
                               sample_ids=sample_ids)["energy_in_roi"]
        for null, c in res.items():
            out.setdefault(null, []).append(NullComparison(**{**c.__dict__, "statistic": name}))
    return {null: tuple(out[null]) for null in NULLS if null in out}


def _type_shares(weights: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(4,N): share of image i's type-k weight inside its own region (NaN for images without type k)."""
    total = weights.sum(-1)
    inside = (weights * region[None]).sum(-1)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.nan)


def _overlap(region: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor, composition: torch.Tensor | None,
             by_null: dict[str, tuple[NullComparison, ...]], primary: str) -> CamOverlap:
    """The primary null's summary fields; ``per_image`` NaN for images without a partner under it."""
    comparisons = by_null[primary]
    if primary == "uniform":
        has_partner = torch.ones(labels.numel(), dtype=torch.bool)
    else:
        groups = null_groups(primary, labels, composition)
        _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
        has_partner = counts[inverse] >= 2
    diagonal = _type_shares(weights.flatten(2), region.flatten(1).double())  # (4,N)
    per_image = torch.where(has_partner[None, :], diagonal, torch.nan).T.contiguous()

    def values(name: str) -> torch.Tensor:
        return torch.tensor([float(getattr(c, name)) for c in comparisons], dtype=torch.float64)

    return CamOverlap(per_image, values("observed"), values("null_mean"), values("null_std"), values("p"),
                      comparisons, dict(by_null))
