"""How stable the promotion–suppression typing is (METHODS.md §5).

A group type is a choice-laden label: it depends on the dominance factor κ, on
the pixel groups (2×2 or 4×4 blocks, superpixels) and on how a group is
measured (δ_G alone on x, or δ_G removed from x'). This module compares two
typings of the same perturbations by their agreement fraction and Cohen's
kappa (agreement corrected for what the two label frequencies would give by
chance), over the elements both typings type (codes >= 0).

Typings over different group geometries are compared pixel by pixel
(:func:`advspatial.analysis.pse_types.group_type_map`), restricted to perturbed pixels.

Superpixels come from SLIC (scikit-image), an optional dependency:
:func:`superpixel_labels` says how to install it when it is missing.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ...analysis.pse import promotion_suppression
from ...analysis.pse_types import PSEResult, group_type_map
from ...errors import ConfigError, ShapeError, check_range


@dataclass(frozen=True)
class TypingAgreement:
    """Agreement of two typings over the ``n`` elements both type.

    ``fraction``: share of those elements with the same type (``agreement`` in a run's metrics.json); ``kappa``:
    Cohen's kappa (1 = perfect, 0 = chance level; NaN when n = 0 or both typings use one and the same single type,
    where chance agreement is already 1).
    """

    n: int
    fraction: float = field(metadata={"key": "agreement"})
    kappa: float


def confusion(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None, types: int = 4) -> torch.Tensor:
    """(types, types) int64 counts of (type in ``a``, type in ``b``) where both are typed (>= 0) and ``keep`` holds.

    Confusion matrices of batches add up, so agreement can be streamed.
    """
    a, b = torch.as_tensor(a).cpu().long(), torch.as_tensor(b).cpu().long()
    if a.shape != b.shape:
        raise ShapeError(f"typings must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    both = (a >= 0) & (b >= 0)
    if keep is not None:
        both &= torch.as_tensor(keep).cpu().bool().expand_as(both)
    if both.any() and max(int(a[both].max()), int(b[both].max())) >= types:
        raise ConfigError(f"type codes must lie in 0..{types - 1}")
    index = a[both] * types + b[both]
    return torch.bincount(index, minlength=types * types).view(types, types)


def agreement_from_confusion(counts: torch.Tensor) -> TypingAgreement:
    """Agreement fraction and Cohen's kappa from a confusion matrix (rows: typing a, columns: typing b)."""
    c = torch.as_tensor(counts).double()
    n = float(c.sum())
    if n == 0:
        return TypingAgreement(0, math.nan, math.nan)
    observed = float(c.diagonal().sum()) / n
    chance = float((c.sum(1) / n) @ (c.sum(0) / n))
    kappa = math.nan if chance >= 1.0 - 1e-12 else (observed - chance) / (1.0 - chance)
    return TypingAgreement(int(n), observed, kappa)


def summed_agreements(parts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, TypingAgreement]:
    """The agreement of each comparison from the confusion matrices of several batches added up (a comparison a
    batch lacks counts nothing there), in order of first appearance."""
    names = dict.fromkeys(k for part in parts for k in part)
    # each sum is a tensor: every name comes from some part
    return {name: agreement_from_confusion(cast(torch.Tensor, sum(part[name] for part in parts if name in part)))
            for name in names}


def group_spec(spec: str) -> int:
    """The block side of a pixel-group choice ``"BxB"``, or 0 for ``"superpixels"`` (the ``sides`` of
    :func:`group_confusions`); ConfigError otherwise."""
    if spec == "superpixels":
        return 0
    side, _, again = spec.partition("x")
    if not (side.isdigit() and side == again and int(side) >= 1):
        raise ConfigError(f"stability group {spec!r} is not valid; valid: BxB blocks (e.g. 4x4) or superpixels")
    return int(side)


def group_confusions(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
                     primary: PSEResult, sides: Mapping[str, int], segments: int = 50,
                     **measure: Any) -> dict[str, torch.Tensor]:
    """Confusion matrices of the ``primary`` typing of some images against their typing over other pixel groups,
    pixel by pixel over their perturbed pixels: per name, ``sides[name]`` x ``sides[name]`` blocks, or SLIC
    superpixels (``segments`` of them) for side 0. ``measure``: the other settings of the measurement
    (:func:`~advspatial.analysis.pse.promotion_suppression`: method, kappa, noise floor, batch size)."""
    primary_map, perturbed = group_type_map(primary), primary.pixel_energy > 0
    out = {}
    for name, side in sides.items():
        groups = superpixel_labels(x, segments).to(x.device) if side == 0 else None
        other = promotion_suppression(model, x, x_adv, y, t, groups=groups, block=max(side, 1), **measure)
        out[name] = confusion(primary_map, group_type_map(other).cpu(), perturbed)
    return out


def cohen_kappa(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cohen's kappa of two equal-length vectors of type codes (0..3)."""
    return typing_agreement(a, b).kappa


def typing_agreement(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> TypingAgreement:
    """Agreement of type codes ``a`` and ``b`` (same shape) where both are typed (>= 0) and ``keep`` holds."""
    return agreement_from_confusion(confusion(a, b, keep))


def superpixels_available() -> bool:
    """True when scikit-image (SLIC superpixels) can be imported."""
    return importlib.util.find_spec("skimage") is not None


def superpixel_labels(x: torch.Tensor, segments: int = 50, compactness: float | None = None) -> torch.Tensor:
    """(N,H,W) int64 SLIC superpixel labels (0..G−1 per image) of images (N,C,H,W) in [0,1].

    Deterministic (SLIC starts from a regular grid). ``compactness`` trades colour
    similarity against squareness; default 10 for colour images (SLIC works in Lab,
    0..100) and 0.1 for grey ones (values 0..1), which give about ``segments``
    superpixels on both.
    """
    check_range("segments", segments, 1)
    if compactness is None:
        compactness = 10.0 if x.ndim == 4 and x.shape[1] == 3 else 0.1
    check_range("compactness", compactness, 0.0, low_inclusive=False)
    if x.ndim != 4:
        raise ShapeError(f"superpixels need images (N,C,H,W), got {tuple(x.shape)}")
    try:
        from skimage.segmentation import slic
    except ImportError as exc:
        raise ConfigError("superpixel groups need scikit-image, which is not installed: pip install scikit-image "
                          "(or leave superpixels out of the stability groups)") from exc
    images = x.detach().cpu().double().numpy()
    out = []
    for img in images:
        channels_last = np.moveaxis(img, 0, -1)
        labels = slic(channels_last, n_segments=int(segments), compactness=float(compactness), start_label=0,
                      channel_axis=-1, enforce_connectivity=True)
        out.append(np.unique(labels, return_inverse=True)[1].reshape(labels.shape))
    return torch.from_numpy(np.stack(out)).long()
