"""The measurements of the faithfulness gate, per batch: the RoI and its control region, the deletion fills,
the deletion and restricted-attack columns, the deletion curve.

Part of the faithfulness checks (:mod:`advspatial.faithfulness.gate` documents
the gate and names everything here too).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from ..attacks.base import margin
from ..errors import ConfigError, ShapeError, check_range, unknown_name
from ..models.hooks import frozen_eval
from ..stacked_runs import RowChunks, forward_stacked, run_rows, stack_elements
# sample_ids_or_range takes a sequence of ids too, which its annotation (Tensor | None) does not say: hence the
# ignored arg-type where it is given this module's sample_ids (Tensor | Sequence[int] | None)
from ..runtime import (batch_slices, model_device, per_sample_noise, sample_ids_or_range, scaled_batch, stream_seed,
                       to_host)
from ..regions.checks import check_maps
from ..regions.binarization import top_fraction_mask
from ..regions.controls import random_region_like, shifted_region_like
from ..regions.fills import gaussian_blur, list_fills, make_fill
from ..regions.references import top_count_masks

#: the ``noise`` fill's default standard deviation (in [0,1] intensity units)
NOISE_SIGMA = 0.3
#: images (28x28 equivalents, :func:`advspatial.runtime.scaled_batch`) per pass of the restricted attack when the
#: caller gives no bound: its regions x images stack is ~9 batches (32 images at 224x224; an experiment's gate
#: passes its own batch size)
RESTRICTED_ATTACK_IMAGES = 2048
#: the ``blur`` fill's default sigma is the shorter image side over this, at least 1 (:func:`deletion_blur_sigma`)
BLUR_SIDE_PER_SIGMA = 32

#: the fills :func:`deletion_columns` accepts
DELETION_FILLS = tuple(sorted({*list_fills(), "noise"}))

# seed streams: the RoI tie-break uses ``seed`` itself (top_fraction_mask); the
# random region and the noise fill draw from derived seeds so the three are independent
_STREAM_NOISE_FILL = 2
_STREAM_ROAD_FILL = 3


# -- inputs -------------------------------------------------------------------------

def _check_inputs(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | Sequence[int], importance: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ShapeError(f"images must be a float (N,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")
    check_maps(importance, "importance")
    n, _, h, w = x.shape
    if tuple(importance.shape) != (n, h, w):
        raise ShapeError(f"importance must have shape {(n, h, w)} for images {tuple(x.shape)}, "
                         f"got {tuple(importance.shape)}")
    device = model_device(model)
    y = torch.as_tensor(y, device=device).long()
    if y.shape != (n,):
        raise ShapeError(f"labels must have shape ({n},), got {tuple(y.shape)}")
    return x.detach().to(device), y, device


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _true(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, y[:, None]).squeeze(1)


def _col(t: torch.Tensor) -> torch.Tensor:
    """A column kept on its device until the batch's columns are read back together (:func:`to_host`)."""
    return t.detach()


# -- regions ------------------------------------------------------------------------

def roi_mask(
    importance: torch.Tensor, fraction: float = 0.2, seed: int = 0, sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N,H,W) bool RoI: the shared top-``fraction`` rule (positive pixels only, seeded ties)."""
    return top_fraction_mask(importance, fraction, seed, sample_ids).mask


#: control regions of the gate: ``shifted`` (default; the RoI's own shape at a random place) or ``scattered``
CONTROLS = ("shifted", "scattered")


def control_region(roi: torch.Tensor, control: str = "shifted", seed: int = 0,
                   sample_ids: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
    """(N,H,W) bool control of the same pixel count as ``roi``: shifted (shape kept) or scattered pixels.

    The shifted control is the default because deleting scattered pixels creates
    many edges: on natural images that alone hurts the model more than deleting
    any contiguous region, so a scattered control rejects every coherent
    explainer (measured on a CIFAR-10 ResNet-20: Grad-CAM's zero-fill deletion
    effect -2.5 against scattered pixels, +5.6 against the shifted RoI).
    """
    ids = sample_ids_or_range(roi.shape[0], sample_ids)  # type: ignore[arg-type]
    if control == "shifted":
        return shifted_region_like(roi, seed, sample_ids=ids)
    if control == "scattered":
        return random_region_like(roi, seed, sample_ids=ids)
    raise unknown_name("gate control", control, CONTROLS)


# -- fills --------------------------------------------------------------------------

FillFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_deletion_fill(
    name: str, params: Mapping[str, Any], x: torch.Tensor, seed: int, ids: torch.Tensor,
) -> FillFn:
    """``(x, region) -> filled x`` for one batch (the noise fill binds the batch's per-image noise)."""
    if name == "noise":
        unknown = set(params) - {"sigma"}
        if unknown:
            raise ConfigError(f"fill 'noise' has no parameter(s) {sorted(unknown)}; valid: ['sigma']")
        sigma = float(params.get("sigma", NOISE_SIGMA))
        check_range("sigma", sigma, 0.0, None)
        eps = per_sample_noise(x.shape, stream_seed(seed, _STREAM_NOISE_FILL), ids, "normal", x.device, x.dtype)
        noisy = (x + sigma * eps).clamp(0.0, 1.0)

        def noise_fill(images: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
            return torch.where(region.to(images.device)[:, None], noisy, images)

        return noise_fill
    if name not in DELETION_FILLS:
        raise unknown_name("deletion fill", name, DELETION_FILLS)
    if name == "road":  # its imputation noise is keyed by the images' sample ids, in a stream of its own
        return RoadFill(make_fill("road", **{"seed": stream_seed(seed, _STREAM_ROAD_FILL), **params}), ids)
    if name == "blur" and "sigma" not in params:
        params = {**params, "sigma": deletion_blur_sigma(x.shape[-2], x.shape[-1])}
    return make_fill(name, **params)


@dataclass(frozen=True)
class RoadFill:
    """ROAD's fill of one batch: ``road`` (:func:`~advspatial.regions.fills.make_fill`'s) with the batch's sample
    ``ids``, which key its noise."""

    road: Callable[..., torch.Tensor]
    ids: torch.Tensor

    def __call__(self, images: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        return self.road(images, region, sample_ids=self.ids)

    def stacked(self, images: torch.Tensor, regions: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``[self(images, r) for r in regions]`` as one fill of the images repeated once per region: on a device
        one conjugate-gradient loop instead of one per region (each a few dozen launches a step). Each image gets
        the fill it gets alone: every (image, channel) system stops on its own residual, and the noise is keyed by
        the image's sample id, not by its place in the stack."""
        k = len(regions)
        stack = self.road(images.repeat(k, 1, 1, 1), torch.cat(list(regions)), sample_ids=self.ids.repeat(k))
        return list(stack.split(images.shape[0]))


def filled_images(fill: FillFn, x: torch.Tensor, regions: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
    """``fill(x, region)`` for each of ``regions``, in order and one at a time. ROAD's fill on a device is solved
    for as many regions at once as a stacked call holds (:func:`~advspatial.stacked_runs.stack_elements`: input
    elements of the repeated images); on a CPU, whose LU solves a region at a time anyway, one region a fill."""
    road = fill if isinstance(fill, RoadFill) else None
    per_solve = 1 if road is None else max(1, stack_elements(x) // max(1, x.numel()))
    for start in range(0, len(regions), per_solve):
        group = regions[start:start + per_solve]
        if road is None or len(group) == 1:
            yield fill(x, group[0])
        else:
            yield from road.stacked(x, group)


def deletion_blur_sigma(height: int, width: int) -> float:
    """Default sigma (pixels) of the gate's blur fill: one pixel per :data:`BLUR_SIDE_PER_SIGMA` pixels of the
    shorter side, at least 1.

    A deletion fill must remove what the region shows. A fixed 1-pixel blur does so on a 28- or 32-pixel image
    but leaves a 224-pixel image almost unchanged, so on ImageNet-sized inputs both the RoI and its control
    survive the blur and the gate's blur check fails for lack of a deletion, not for an unfaithful map (seen on
    EfficientNet-Lite0: blur effect +0.16 [-0.11, +0.43] while zero fill gave +2.7). Scaling with the side
    keeps the removed detail the same fraction of the image: 1 at 28-32 pixels, 2 at 64, 7 at 224.
    """
    return max(1.0, min(int(height), int(width)) / BLUR_SIDE_PER_SIGMA)


def _fill_params(fills: Sequence[str], fill_params: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict]:
    for f in fills:
        if f not in DELETION_FILLS:
            raise unknown_name("deletion fill", f, DELETION_FILLS)
    if len(set(fills)) != len(fills):
        raise ConfigError(f"fills must not repeat, got {list(fills)}")
    params = dict(fill_params or {})
    for key in params:
        if key not in DELETION_FILLS:
            raise unknown_name("fill in fill_params", key, DELETION_FILLS)
    return {f: dict(params.get(f, {})) for f in fills}


# -- the regions a gate compares ------------------------------------------------------

#: the region of the map under test in the column names; every other region is a comparison
ROI = "roi"
#: the region of the Gaussian-blurred copy of the map (the blur control of the gate)
BLURRED = "blurred"
#: prefix of a model-free reference region's name (``ref:edges``, ...)
REFERENCE_PREFIX = "ref:"
#: the blurred copy's sigma is the shorter side over this (3.5 px at 28, 4 at 32, 28 at 224)
MAP_BLUR_SIDE_PER_SIGMA = 8


def blurred_map(importance: torch.Tensor) -> torch.Tensor:
    """The importance maps blurred by a Gaussian of sigma = shorter side / :data:`MAP_BLUR_SIDE_PER_SIGMA`.

    A map that passes only because it is smooth (deletion metrics reward blurrier maps) is matched by this copy.
    """
    h, w = importance.shape[-2:]
    return gaussian_blur(importance[:, None], max(1.0, min(h, w) / MAP_BLUR_SIDE_PER_SIGMA))[:, 0]


def gate_regions(
    importance: torch.Tensor,
    fraction: float = 0.2,
    seed: int = 0,
    sample_ids: torch.Tensor | Sequence[int] | None = None,
    *,
    controls: Sequence[str] = CONTROLS,
    references: Mapping[str, torch.Tensor] | None = None,
    blur_control: bool = True,
) -> dict[str, torch.Tensor]:
    """Every (N,H,W) bool region a gate compares, all with the RoI's pixel count per image.

    ``roi``: the map's top ``fraction``; one region per control (``shifted``,
    ``scattered``: :func:`control_region`); ``ref:NAME`` for each reference map
    (:mod:`advspatial.regions.references`: its top pixels, as many as the RoI's);
    ``blurred``: the same of the map's blurred copy (:func:`blurred_map`).
    """
    ids = sample_ids_or_range(importance.shape[0], sample_ids)  # type: ignore[arg-type]
    roi = roi_mask(importance, fraction, seed, ids)
    counts = roi.flatten(1).sum(1)
    regions = {ROI: roi}
    for control in controls:
        regions[control] = control_region(roi, control, seed, ids)
    sized = {REFERENCE_PREFIX + name: ref.to(roi.device) for name, ref in (references or {}).items()}
    if blur_control:
        sized[BLURRED] = blurred_map(importance)
    regions.update(top_count_masks(sized, counts, seed, ids))  # one tie-break order for all of them
    return regions


def _empty_to_nan(values: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """NaN where the region is empty (a reference that does not exist for the image): left out, not faked."""
    return torch.where(region.flatten(1).any(1).to(values.device), values, torch.full_like(values, float("nan")))


# -- per-batch columns ----------------------------------------------------------------

def deletion_columns(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    regions: Mapping[str, torch.Tensor],
    fills: Sequence[str] = ("zero", "blur"),
    seed: int = 0,
    sample_ids: torch.Tensor | Sequence[int] | None = None,
    fill_params: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, torch.Tensor]:
    """Deletion check on one batch: per-image columns, each an (N,) CPU tensor.

    ``regions`` are named (N,H,W) bool regions (:func:`gate_regions`). For each
    fill ``f`` and region ``r``: ``deletion:f:drop:r`` = true-class logit of the
    clean image minus that after filling ``r`` (positive = the score fell; NaN
    where ``r`` is empty), ``deletion:f:correct:r`` = 1.0 when the filled image
    is still classified as ``y``. Also ``clean:logit``, ``clean:correct`` and
    ``roi:pixels`` (the pixel count of ``regions["roi"]`` when present). One
    forward pass per (fill, region), model in eval mode, no gradients, all of
    them one round (:func:`~advspatial.stacked_runs.forward_stacked`: one call per
    region on a CPU, stacked calls on a GPU).
    """
    x, y, _ = _check_inputs(model, x, y, next(iter(regions.values())).float())
    params = _fill_params(fills, fill_params)
    ids = sample_ids_or_range(x.shape[0], sample_ids)  # type: ignore[arg-type]
    cols: dict[str, torch.Tensor] = {}
    with frozen_eval(model):
        clean = _logits(model, x)
        clean_true = _true(clean, y)
        cols["clean:logit"] = _col(clean_true)
        cols["clean:correct"] = _col((clean.argmax(1) == y).float())
        if ROI in regions:
            cols["roi:pixels"] = _col(regions[ROI].flatten(1).sum(1))
        on_device = {tag: region.to(x.device) for tag, region in regions.items()}
        fill_fns = {name: make_deletion_fill(name, params[name], x, seed, ids) for name in fills}
        jobs = [(name, tag) for name in fills for tag in on_device]
        filled = itertools.chain.from_iterable(filled_images(fill_fns[name], x, list(on_device.values()))
                                               for name in fills)
        for (name, tag), logits in zip(jobs, forward_stacked(partial(_logits, model), filled), strict=True):
            region = on_device[tag]
            cols[f"deletion:{name}:drop:{tag}"] = _col(_empty_to_nan(clean_true - _true(logits, y), region))
            cols[f"deletion:{name}:correct:{tag}"] = _col(
                _empty_to_nan((logits.argmax(1) == y).to(clean.dtype), region))
    return to_host(cols)


def restricted_attack_columns(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    regions: Mapping[str, torch.Tensor],
    attack: Any,
    sample_ids: torch.Tensor | Sequence[int] | None = None,
    *,
    max_images: int | None = None,
) -> dict[str, torch.Tensor]:
    """Attack check on one batch: ``attack`` confined to each named region (:func:`gate_regions`).

    ``attack`` is the experiment's attack (anything with ``run(x, y, mask=,
    sample_ids=)`` returning a result with ``x_adv``; its perturbation outside
    the mask must be zero, as every :mod:`advspatial.attacks` attack's is). The
    images are stacked region by region (an image keeps its sample id, so its
    random start is the same in every region: common random numbers) and
    attacked as one run of up to :func:`~advspatial.stacked_runs.run_rows` rows (so memory does not grow with the
    region count), whose model calls take ``max_images`` images at a time (default
    :data:`RESTRICTED_ATTACK_IMAGES` scaled to the image size; :class:`~advspatial.stacked_runs.RowChunks`): each step
    of the run is one round, on a CPU as on a device.
    Columns (N,) CPU: ``attack:margin_clean``; ``attack:margin:r`` = the
    true-label margin ``z_y - max_{j!=y} z_j`` of the image attacked inside
    region ``r`` (NaN where ``r`` is empty); ``attack:correct:r`` = 1.0 when it
    is still classified as ``y``.
    """
    x, y, _ = _check_inputs(model, x, y, next(iter(regions.values())).float())
    n = x.shape[0]
    ids = sample_ids_or_range(n, sample_ids)  # type: ignore[arg-type]
    names = list(regions)
    per_pass = scaled_batch(RESTRICTED_ATTACK_IMAGES, *x.shape[2:]) if max_images is None else max_images
    check_range("max_images", per_pass, 1)
    per_run = run_rows(per_pass, x, model)
    chunked = RowChunks(model, per_pass) if per_run > per_pass else model
    region_stack = torch.stack([regions[r].to(x.device) for r in names])  # (R, N, H, W) bool
    cols: dict[str, torch.Tensor] = {}
    with frozen_eval(model):
        cols["attack:margin_clean"] = _col(margin(_logits(model, x), y))
    parts = []
    for sl in batch_slices(len(names) * n, per_run):  # row r * n + i: image i inside region r, made run by run
        rows = torch.arange(sl.start, sl.stop)  # the sample ids stay on the host, the rest goes to x's device
        region, image = rows // n, rows % n
        on_device = image.to(x.device)
        mask = region_stack[region.to(x.device), on_device][:, None].to(x.dtype)
        result = attack.on(chunked).run(x[on_device], y[on_device], mask=mask, sample_ids=ids[image])
        with frozen_eval(model):
            parts.append(_logits(chunked, result.x_adv.to(x.device)))
    logits = torch.cat(parts)
    for k, tag in enumerate(names):
        part, region = logits[k * n:(k + 1) * n], regions[tag].to(x.device)
        cols[f"attack:margin:{tag}"] = _col(_empty_to_nan(margin(part, y), region))
        cols[f"attack:correct:{tag}"] = _col(_empty_to_nan((part.argmax(1) == y).to(part.dtype), region))
    return to_host(cols)


def concat_columns(batches: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate per-batch column dicts (same keys in every batch) in order."""
    if not batches:
        return {}
    keys = list(batches[0])
    for b in batches[1:]:
        if set(b) != set(keys):
            raise ConfigError(f"column sets differ between batches: {sorted(keys)} vs {sorted(b)}")
    return {k: torch.cat([torch.as_tensor(b[k]).cpu() for b in batches]) for k in keys}


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    importance: torch.Tensor,
    fractions: Sequence[float],
    fill: str = "zero",
    *,
    score: str = "logit",
    seed: int = 0,
    sample_ids: torch.Tensor | Sequence[int] | None = None,
    fill_params: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """(N, len(fractions)) true-class score after filling the top-``f`` RoI, for each ``f``.

    ``score`` is ``logit`` or ``probability`` (softmax). Each point deletes the
    RoI of that fraction from the *clean* image (with distinct map values the
    RoIs are nested, so this equals cumulative pixel flipping); the noise fill
    uses the same noise for every fraction. No point at fraction 0.
    """
    if score not in ("logit", "probability"):
        raise unknown_name("score", score, ("logit", "probability"))
    x, y, _ = _check_inputs(model, x, y, importance)
    ids = sample_ids_or_range(x.shape[0], sample_ids)  # type: ignore[arg-type]
    fill_fn = make_deletion_fill(fill, dict(fill_params or {}), x, seed, ids)
    out = []
    with frozen_eval(model):
        for f in fractions:
            region = roi_mask(importance, float(f), seed, ids).to(x.device)
            logits = _logits(model, fill_fn(x, region))
            scores = logits if score == "logit" else logits.softmax(1)
            out.append(_true(scores, y))
    if not out:
        return torch.empty(x.shape[0], 0)
    return torch.stack(out, 1).cpu()
