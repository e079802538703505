"""Where the promotion–suppression group types fall relative to class activation maps (METHODS.md §5).

:func:`pse_vs_cam` asks, for each group type, which share of its perturbation
energy lies inside the top region of ``CAM_t0(x)`` and of ``CAM_t(x')`` (the
shared top-fraction rule), against the exact partner null of the one inference
engine (:mod:`advspatial.regions.inference`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError, ShapeError, check_range
from ..regions import top_fraction_mask
from ..regions.inference import NullComparison, excess_test
from .pse_types import TYPE_NAMES, PSEResult, group_type_map


@dataclass
class CamOverlap:
    """Where each group type falls relative to one CAM's top region.

    Attributes (type axis in ``TYPE_NAMES`` order):
        per_image: (N,4) share of the type's weight inside the region (NaN where the
            image has none of that type, or no partner to be compared with).
        observed: (4,) mean of ``per_image`` over the images that enter the test.
        baseline_mean: (4,) the exact null: per image, the mean share over its
            partners' CAM regions (:func:`~advspatial.regions.inference.partner_null`),
            averaged over the same images.
        baseline_std: (4,) spread of the mean excess under random within-stratum permutations.
        p_value: (4,) two-sided permutation p of the mean excess
            (:func:`~advspatial.regions.inference.excess_test`).
        comparisons: the four engine results (excess with its bootstrap CI, ratio, z, n).
    """

    per_image: torch.Tensor
    observed: torch.Tensor
    baseline_mean: torch.Tensor
    baseline_std: torch.Tensor
    p_value: torch.Tensor
    comparisons: tuple[NullComparison, ...] = ()

    def as_dict(self) -> dict[str, dict[str, object]]:
        """``{type: {observed, baseline_mean, baseline_std, p_value, n, excess, ratio, z}}`` as plain values."""
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

    def as_dict(self) -> dict[str, object]:
        return {
            "true_cam": self.true_cam.as_dict(), "target_cam": self.target_cam.as_dict(),
            "top_fraction": self.top_fraction, "weight": self.weight, "n_perm": self.n_perm,
            "alternative": "two-sided",
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
) -> PSECamResult:
    """Share of each group type inside the top-``top_fraction`` region of two CAMs, against chance.

    ``cam_true`` is CAM_t0(x) and ``cam_target`` CAM_t(x'), both (N,H,W) ≥ 0, computed
    by the caller (``advspatial.maps``). For type k and image i the statistic is
    ``Σ_{pixels of type k in region} w / Σ_{pixels of type k} w`` with ``w`` the
    pixel energy ``Σ_c δ²`` (``weight="energy"``, default) or 1 (``"pixels"``);
    images without type k are left out of its mean.

    Top region: the shared rule :func:`advspatial.regions.top_fraction_mask`
    (strictly positive pixels only, ties at the cut broken by a random order seeded
    by (``seed``, ``sample_ids[i]``); default ids 0..N-1). Null: the type map of
    image i with the CAM region of its partners -- the other images of its stratum
    (``strata``, e.g. the true class; default all images) -- through the one
    inference engine: exact per-image null, mean excess with a bootstrap CI and a
    two-sided p from ``n_perm`` random within-stratum permutations
    (:func:`advspatial.regions.inference.excess_test`). Images alone in their
    stratum have no partner and are left out (NaN in ``per_image``).
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
    if strata is not None and tuple(strata.shape) != (n,):
        raise ShapeError(f"strata must be ({n},), got {tuple(strata.shape)}")
    groups = torch.zeros(n, dtype=torch.int64) if strata is None else torch.as_tensor(strata).cpu().long()
    null = "any-class" if strata is None else "same-stratum"

    type_map = group_type_map(result).flatten(1).cpu()
    base = result.pixel_energy.flatten(1).cpu().double() if weight == "energy" else torch.ones(n, h * w).double()
    weights = torch.stack([base * (type_map == k) for k in range(len(TYPE_NAMES))])  # (4,N,HW)
    overlaps = []
    for cam in (cam_true, cam_target):
        region = top_fraction_mask(cam.detach().cpu().float(), top_fraction, seed, sample_ids).mask
        pairs = _type_pairs(weights, region.flatten(1).double())
        overlaps.append(_overlap(pairs, groups, n_perm, seed, null))
    return PSECamResult(overlaps[0], overlaps[1], float(top_fraction), weight, n_perm)


def _type_pairs(weights: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(4,N,N) pair matrices, entry [k, j, i]: share of image i's type-k weight inside image j's region.

    The engine's convention (row = the image whose region is used, column = the
    image whose map is measured); NaN columns for images without type k.
    """
    total = weights.sum(-1)  # (4,N)
    inside = torch.einsum("jp,kip->kji", region, weights)
    return torch.where(total[:, None, :] > 0, inside / total[:, None, :].clamp_min(1e-300), torch.nan)


def _overlap(pairs: torch.Tensor, groups: torch.Tensor, n_perm: int, seed: int, null: str) -> CamOverlap:
    """Each type's observed share against its exact partner null, by :func:`excess_test`."""
    comparisons = tuple(excess_test(pairs[k], groups, n_perm, seed, statistic=name, null=null)
                        for k, name in enumerate(TYPE_NAMES))
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    has_partner = counts[inverse] >= 2
    diagonal = pairs.diagonal(dim1=1, dim2=2)  # (4,N)
    per_image = torch.where(has_partner[None, :], diagonal, torch.nan).T.contiguous()

    def field(name: str) -> torch.Tensor:
        return torch.tensor([float(getattr(c, name)) for c in comparisons], dtype=torch.float64)

    return CamOverlap(per_image, field("observed"), field("null_mean"), field("null_std"), field("p"), comparisons)
