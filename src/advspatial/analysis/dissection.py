"""Network dissection (Bau et al. 2017), METHODS.md §5: which concept each unit detects.

For unit u of a layer (a channel of its output):

1. its activation map on each image is upsampled bilinearly to input resolution;
2. threshold ``T_u`` = the ``quantile`` (default 0.995, i.e. the top 0.5%) of the
   unit's activations over the *whole* image set (linear interpolation, as
   ``torch.quantile``). **Choice:** by default over the upsampled values
   (``quantile_on="upsampled"``), so the unit's region covers about 0.5% of all
   pixels; ``quantile_on="raw"`` takes it over the low-resolution activations,
   as in Bau et al.'s paper;
3. the unit's region is ``a > T_u`` (strict, as in NetDissect: a ReLU unit that
   is zero on more than 99.5% of pixels gets ``T_u = 0`` and its region is where
   it fires);
4. ``IoU(u, c) = Σ_images |region ∩ concept| / Σ_images |region ∪ concept|`` —
   summed over the set, not averaged per image.

Two streaming passes over batches: thresholds, then intersections and unions.
The exact quantile keeps, per unit, only the largest ``M − ⌊q(M−1)⌋`` values seen
so far (M = number of values per unit), about 0.5% of the data, so it is exact at
a fraction of the memory of concatenating everything. When even that exceeds
``max_exact_elements``, a histogram over ``bins`` equal-width bins between each
unit's min and max (one extra pass) approximates it to within one bin width.

:func:`sensitivity_vs_interpretability` correlates per-unit sensitivity
(``units.unit_activation_change``) with the dissection IoU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import ImageDataset
from ..errors import ConfigError, ModelError, ShapeError, check_range
from ..models.hooks import frozen_eval
from ..runtime import batch_slices, model_device
from ..statistics.inference import excess_test
from .units import Layer, capture

QUANTILE_ON = ("upsampled", "raw")
QUANTILE_METHODS = ("auto", "exact", "histogram")


@dataclass
class DissectionResult:
    """Per-unit thresholds and unit × concept IoUs.

    Attributes:
        concept_names: K concept names, the column order of the (U,K) tensors.
        thresholds: (U,) activation threshold T_u.
        intersection, union: (U,K) pixel counts summed over the image set.
        iou: (U,K) ``intersection / union`` (0 where the union is empty).
        best_concept: (U,) column of the best concept; best_iou: (U,) its IoU.
        unit_area: (U,) pixels in each unit's region over the set.
        quantile, quantile_on, exact: the threshold settings used.
    """

    concept_names: tuple[str, ...]
    thresholds: torch.Tensor
    intersection: torch.Tensor
    union: torch.Tensor
    iou: torch.Tensor
    best_concept: torch.Tensor
    best_iou: torch.Tensor
    unit_area: torch.Tensor
    quantile: float
    quantile_on: str
    exact: bool

    @property
    def best_names(self) -> list[str]:
        """Name of each unit's best concept."""
        return [self.concept_names[int(k)] for k in self.best_concept]


def dissect(
    model: nn.Module,
    layer: Layer,
    images: torch.Tensor | ImageDataset,
    concepts: dict[str, torch.Tensor] | None = None,
    *,
    quantile: float = 0.995,
    quantile_on: str = "upsampled",
    method: str = "auto",
    batch_size: int = 64,
    max_exact_elements: int = 2**26,
    bins: int = 4096,
) -> DissectionResult:
    """Dissect ``layer``: IoU of each unit's top-activation region with each concept mask.

    Args:
        images: (N,C,H,W) float images in [0,1], or an :class:`ImageDataset` (streamed
            batch by batch; its ``concepts`` are used when ``concepts`` is None).
        concepts: name -> (N,H,W) bool masks at input resolution.
        quantile: threshold quantile per unit (0.995 = top 0.5%).
        quantile_on: ``"upsampled"`` (default) or ``"raw"`` activations (see module doc).
        method: ``"exact"``, ``"histogram"`` or ``"auto"`` (exact when the kept top
            values fit in ``max_exact_elements``).
    """
    check_range("quantile", quantile, 0.0, 1.0)
    if quantile_on not in QUANTILE_ON:
        raise ConfigError(f"unknown quantile_on {quantile_on!r}; valid: {', '.join(QUANTILE_ON)}")
    if method not in QUANTILE_METHODS:
        raise ConfigError(f"unknown method {method!r}; valid: {', '.join(QUANTILE_METHODS)}")
    n, size = _image_count_and_size(images)
    names, stacked = _check_concepts(images, concepts, n, size)

    def activations() -> Generator[tuple[slice, torch.Tensor, torch.Tensor], None, None]:
        """(slice, raw activation, upsampled activation) per batch."""
        yield from _activations(model, layer, images, n, size, batch_size)

    thresholds, exact = _thresholds(activations, n, quantile, quantile_on, method, max_exact_elements, bins)
    # float64 zeros (0-d): the first batch's sums come out unchanged; _thresholds has seen at least one batch
    inter = unit_area = concept_area = torch.zeros((), dtype=torch.float64)
    for sl, _, up in activations():
        region = (up > thresholds.to(up.device)[None, :, None, None]).flatten(2).float()  # (B,U,HW)
        masks = stacked[sl].to(up.device).flatten(2).float()  # (B,K,HW)
        inter = inter + torch.einsum("buq,bkq->uk", region, masks).double().cpu()
        unit_area = unit_area + region.sum((0, 2)).double().cpu()
        concept_area = concept_area + masks.sum((0, 2)).double().cpu()
    union = unit_area[:, None] + concept_area[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(union))
    best_iou, best = iou.max(1)
    return DissectionResult(
        concept_names=names, thresholds=thresholds.cpu(), intersection=inter, union=union, iou=iou,
        best_concept=best, best_iou=best_iou, unit_area=unit_area,
        quantile=float(quantile), quantile_on=quantile_on, exact=exact,
    )


@dataclass
class Correlation:
    """Spearman correlation with a two-sided permutation p from the inference engine.

    ``z`` is the excess of ρ over its exact partner null in units of its
    permutation spread (NaN when ρ is NaN or the spread is 0).
    """

    rho: float
    p_value: float
    n: int
    n_perm: int
    z: float = math.nan


def sensitivity_vs_interpretability(
    unit_change: torch.Tensor, unit_iou: torch.Tensor, n_perm: int = 10_000, seed: int = 0
) -> Correlation:
    """Spearman ρ between per-unit sensitivity (e.g. ``UnitChange.mean_abs``) and
    interpretability (e.g. ``DissectionResult.best_iou``), both (U,).

    Ranks average ties. The test is the project's one null model
    (:func:`advspatial.statistics.inference.excess_test`): with centred ranks a, b the
    pair matrix ``[j, i] = U·a_i·b_j / (‖a‖‖b‖)`` has diagonal mean ρ; each unit's
    exact null is the mean over its partners (``-ρ/(U-1)`` on average), the excess
    is recomputed under ``n_perm`` seeded random permutations of the units, and p
    is two-sided:
    ``(1 + #{|T_b| >= |T|}) / (1 + n_perm)``. ρ and p are NaN when either input is constant.
    """
    a = torch.as_tensor(unit_change, dtype=torch.float64).flatten().cpu()
    b = torch.as_tensor(unit_iou, dtype=torch.float64).flatten().cpu()
    if a.shape != b.shape:
        raise ShapeError(f"unit_change and unit_iou must have the same length, got {a.numel()} and {b.numel()}")
    if a.numel() < 3:
        raise ShapeError(f"need at least 3 units to correlate, got {a.numel()}")
    if n_perm < 1:
        raise ConfigError(f"n_perm={n_perm} is out of range; valid: >= 1")
    ra, rb = _centered_ranks(a), _centered_ranks(b)
    if ra.norm() == 0 or rb.norm() == 0:
        return Correlation(math.nan, math.nan, int(a.numel()), n_perm)
    scale = ra.norm() * rb.norm()
    rho = float(ra @ rb / scale)
    pairs = a.numel() * torch.outer(rb, ra) / scale  # [j, i]: IoU rank of unit j with sensitivity rank of unit i
    test = excess_test(pairs, torch.zeros(a.numel(), dtype=torch.int64), n_perm, seed,
                       statistic="spearman", null="any-unit")
    return Correlation(rho, test.p, int(a.numel()), n_perm, test.z)


# ----------------------------------------------------------------------------- internals


def _image_count_and_size(images: torch.Tensor | ImageDataset) -> tuple[int, tuple[int, int]]:
    if isinstance(images, ImageDataset):
        _, h, w = images.image_shape
        return len(images), (h, w)
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ShapeError(f"images must be (N,C,H,W) or an ImageDataset, got {getattr(images, 'shape', type(images))}")
    return int(images.shape[0]), (int(images.shape[2]), int(images.shape[3]))


def _check_concepts(
    images: torch.Tensor | ImageDataset, concepts: dict[str, torch.Tensor] | None, n: int, size: tuple[int, int]
) -> tuple[tuple[str, ...], torch.Tensor]:
    """Concept names and a (N,K,H,W) bool stack."""
    if concepts is None and isinstance(images, ImageDataset):
        concepts = images.concepts
    if not concepts:
        raise ConfigError("dissection needs concept masks: pass concepts={name: (N,H,W) bool} or a dataset with "
                          "concepts")
    for name, mask in concepts.items():
        if tuple(mask.shape) != (n, *size):
            raise ShapeError(f"concept {name!r} must be ({n},{size[0]},{size[1]}), got {tuple(mask.shape)}")
    names = tuple(concepts)
    return names, torch.stack([concepts[k].bool() for k in names], dim=1)


def _activations(
    model: nn.Module, layer: Layer, images: torch.Tensor | ImageDataset, n: int, size: tuple[int, int], batch_size: int
) -> Generator[tuple[slice, torch.Tensor, torch.Tensor], None, None]:
    device = model_device(model)
    with frozen_eval(model), torch.no_grad(), capture(model, layer) as outs:
        for sl in batch_slices(n, batch_size):
            x = images.images(sl) if isinstance(images, ImageDataset) else images[sl]
            model(x.to(device))
            act = outs.pop()
            outs.clear()
            if act.ndim != 4:
                raise ModelError(f"dissection needs a layer with (N,C,H,W) feature maps, got {tuple(act.shape)}")
            up = F.interpolate(act.float(), size=size, mode="bilinear", align_corners=False)
            yield sl, act, up


ActivationStream = Callable[[], Generator[tuple[slice, torch.Tensor, torch.Tensor], None, None]]


def _thresholds(
    activations: ActivationStream, n: int, q: float, quantile_on: str, method: str, max_exact: int, bins: int
) -> tuple[torch.Tensor, bool]:
    """Per-unit q-quantile over the whole set; exact (streaming top-k) or histogram."""

    def values() -> Generator[tuple[int, torch.Tensor], None, None]:
        """(images in batch, (U, B·h·w) values) per batch."""
        batches = activations()
        try:
            for sl, raw, up in batches:
                a = up if quantile_on == "upsampled" else raw
                yield sl.stop - sl.start, a.transpose(0, 1).flatten(1)
        finally:
            batches.close()  # releases the hook even when the stream is left early

    stream = values()
    count, first = next(stream)
    units, total = first.shape[0], n * (first.shape[1] // count)
    keep = total - math.floor(q * (total - 1))  # the largest values the q-quantile can need
    if method == "exact" or (method == "auto" and units * keep <= max_exact):
        top = first.topk(min(keep, first.shape[1]), dim=1).values
        for _, vals in stream:
            both = torch.cat([top, vals], 1)
            top = both.topk(min(keep, both.shape[1]), dim=1).values
        return _quantile_from_top(top, total, q), True
    stream.close()
    return _histogram_quantile(lambda: (v for _, v in values()), units, total, q, bins), False


def _quantile_from_top(top: torch.Tensor, total: int, q: float) -> torch.Tensor:
    """Linear-interpolated q-quantile of ``total`` values per row, from the row's
    largest values sorted descending (``top``), as ``torch.quantile`` defines it."""
    pos = q * (total - 1)  # 0-based position in ascending order
    lo, hi = math.floor(pos), math.ceil(pos)
    lo_val = top[:, total - 1 - lo]
    hi_val = top[:, total - 1 - hi]
    return lo_val + (pos - lo) * (hi_val - lo_val)


def _histogram_quantile(make_stream: Callable[[], Iterator[torch.Tensor]], units: int, total: int, q: float,
                        bins: int) -> torch.Tensor:
    """Approximate q-quantile per unit from equal-width histograms: one pass for each
    unit's min and max, one for the counts; values are taken as spread evenly inside
    their bin, so the error is at most one bin width ``(max − min) / bins``."""
    if bins < 1:
        raise ConfigError(f"bins={bins} is out of range; valid: >= 1")
    lo = torch.full((units,), math.inf, dtype=torch.float64)
    hi = torch.full((units,), -math.inf, dtype=torch.float64)
    for vals in make_stream():
        lo = torch.minimum(lo, vals.amin(1).double().cpu())
        hi = torch.maximum(hi, vals.amax(1).double().cpu())
    width = ((hi - lo) / bins).clamp_min(1e-300)
    counts = torch.zeros(units, bins, dtype=torch.float64)
    for vals in make_stream():
        idx = ((vals.double().cpu() - lo[:, None]) / width[:, None]).floor().long().clamp(0, bins - 1)
        counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
    pos = q * (total - 1)
    cum = counts.cumsum(1)
    b = (cum <= math.floor(pos)).sum(1).clamp(max=bins - 1)
    before = torch.where(b > 0, cum.gather(1, (b - 1).clamp(min=0)[:, None]).squeeze(1), torch.zeros_like(lo))
    inside = counts.gather(1, b[:, None]).squeeze(1).clamp_min(1)
    value = lo + width * (b + (pos - before + 0.5) / inside)
    return torch.where(hi > lo, torch.minimum(torch.maximum(value, lo), hi), lo).float()


def _centered_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks (ties get their average rank, as Spearman needs), minus their mean."""
    from scipy.stats import rankdata  # on first use: scipy.stats costs a third of a second to import

    ranks = torch.from_numpy(rankdata(values.numpy())).to(torch.float64)
    return ranks - ranks.mean()
