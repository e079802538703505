"""Model-parameter randomization tests of an importance map, with pass rules.

A map that does not change when the model's weights are destroyed cannot
explain the model; passing is necessary, not sufficient. Part of the
faithfulness checks (:mod:`advspatial.faithfulness.gate`).

- :func:`model_randomization_check`: the cascading test (Adebayo et al., 2018),
  one row per step; :func:`cascade_verdict` its pass rule (Spearman after the
  last step below :data:`CASCADE_MAX_SPEARMAN`).
- :func:`smooth_mprt`: smooth MPRT (Hedström et al., 2024, "Sanity Checks
  Revisited"): each map averaged over noisy copies of the input before the
  original and the fully randomized model's maps are compared (Spearman of the
  absolute maps), so explanation noise does not pass for model dependence.
- :func:`efficient_mprt`: efficient MPRT (same paper): the relative rise of the
  map's complexity (entropy of its 100-bin histogram) from the original to the
  fully randomized model; a map that explains the model gets noisier.
- :func:`randomization_checks`: both, sharing one randomized model, with one
  ``passed``: the gate's call ``(model, x, y, explain_fn, seed)``.

The fully randomized model (:func:`fully_randomized`) is the cascade's last
step: every parameterized layer re-drawn from one generator seeded with ``seed``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ShapeError, check_range
from ..models.hooks import forward_hooks
from ..runtime import model_device, sample_generator, sample_ids_or_range, stream_seed
from ..regions.checks import check_maps
from ..regions.binarization import top_fraction_mask
from ..regions.overlap import iou, pearson, spearman


def nan_mean(t: torch.Tensor) -> float:
    return float(t.double().nanmean()) if t.numel() else math.nan


# -- model randomization -------------------------------------------------------------

def parameterized_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters, in the order of their first call in a forward pass on ``x``.

    Modules that are never called are left out. ``model`` is run once, without
    gradients; its state is not changed (it should be in eval mode).
    """
    order: list[str] = []
    owners = {name: m for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}

    def factory(name: str):
        return lambda *_: None if name in order else order.append(name)

    with forward_hooks(owners, factory), torch.no_grad():
        model(x)
    return [(name, owners[name]) for name in order]


def _reinitialize(module: nn.Module, gen: torch.Generator) -> None:
    """Re-draw every parameter of ``module`` (not of its children) from ``gen``.

    Weights with >= 2 dims and the biases beside them: U(-1/sqrt(fan_in),
    1/sqrt(fan_in)), PyTorch's default range for Linear/Conv; 1-dim parameters
    of a layer without such a weight (norm-layer scale and shift): U(-1, 1).
    Buffers (BatchNorm running statistics) are kept.
    """
    params = dict(module.named_parameters(recurse=False))
    weights = [p for p in params.values() if p.ndim >= 2]
    fan_in = weights[0][0].numel() if weights else None
    with torch.no_grad():
        for _, p in sorted(params.items()):
            if p.ndim >= 2:
                bound = 1.0 / math.sqrt(max(1, p[0].numel()))
            elif fan_in is not None:
                bound = 1.0 / math.sqrt(max(1, fan_in))
            else:
                bound = 1.0
            draw = torch.empty(p.shape, dtype=torch.float64).uniform_(-bound, bound, generator=gen)
            p.copy_(draw.to(p.dtype))


def evaluation_steps(layers: int, max_steps: int | None) -> set[int]:
    """Steps (1-based) of the cascade after which maps are compared: all, or ``max_steps`` evenly spaced."""
    if max_steps is None or layers <= max_steps:
        return set(range(1, layers + 1))
    if max_steps == 1:
        return {layers}
    return {1 + round(i * (layers - 1) / (max_steps - 1)) for i in range(max_steps)}


def model_randomization_check(
    model: nn.Module,
    x: torch.Tensor,
    importance: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    seed: int = 0,
    max_layers: int | None = None,
    fraction: float = 0.2,
    max_steps: int | None = None,
) -> list[dict[str, Any]]:
    """Cascading model-parameter randomization (Adebayo et al., 2018), on a small subset of images.

    A deep copy of ``model`` (in eval mode; the caller's model is never touched)
    has its parameterized layers (:func:`parameterized_layers`) re-initialized
    from the output backwards, one more per step and cumulatively, from a
    ``torch.Generator`` seeded with ``seed`` (:func:`_reinitialize` gives the
    ranges). After each step ``importance(randomized_model, x)`` -> (N,H,W) is
    compared per image with the map of the unchanged copy. Each step costs one
    map computation on ``x``, so pass a few dozen images, not a test set.

    Returns one row per step: ``step`` (1 = output layer only), ``layer``,
    ``spearman`` (mean rank correlation of the maps), ``pearson`` (mean linear
    correlation), ``top_iou`` (mean IoU of the top-``fraction`` regions, the
    RoIs), ``n`` (images where the correlation is defined) and
    ``n_undefined`` (a constant map, e.g. an all-zero Grad-CAM). A faithful map
    loses its similarity as layers are randomized.

    ``max_steps`` bounds the cost on deep networks (a ResNet-20 has 40
    parameterized layers, EfficientNet-Lite0 about 100): the cascade still
    randomizes every layer in order, but maps are compared only after
    ``max_steps`` evenly spaced steps (always the first and the last), so a row's
    ``layer`` is the deepest layer randomized so far.
    """
    if max_layers is not None:
        check_range("max_layers", max_layers, 1)
    if max_steps is not None:
        check_range("max_steps", max_steps, 1)
    net = copy.deepcopy(model).eval()
    x = x.detach().to(model_device(net))
    n = x.shape[0]
    ids = torch.arange(n)

    def compute() -> torch.Tensor:
        maps = importance(net, x).detach().float()
        check_maps(maps, "importance maps")
        if maps.shape[0] != n:
            raise ShapeError(f"importance returned {maps.shape[0]} maps for {n} images")
        return maps

    original = compute()
    roi0 = top_fraction_mask(original, fraction, seed, ids).mask
    layers = parameterized_layers(net, x[:1])[::-1]
    if max_layers is not None:
        layers = layers[: int(max_layers)]
    gen = torch.Generator().manual_seed(int(seed))
    compared = evaluation_steps(len(layers), max_steps)
    rows = []
    for step, (name, module) in enumerate(layers, start=1):
        _reinitialize(module, gen)
        if step not in compared:
            continue
        maps = compute()
        rho = spearman(original, maps)
        roi = top_fraction_mask(maps, fraction, seed, ids).mask
        rows.append({
            "step": step, "layer": name,
            "spearman": nan_mean(rho), "pearson": nan_mean(pearson(original, maps)),
            "top_iou": nan_mean(iou(roi0, roi)),
            "n": int(torch.isfinite(rho).sum()), "n_undefined": int((~torch.isfinite(rho)).sum()),
        })
    return rows


# -- pass rules and the smooth / efficient MPRT ---------------------------------------

# The bounds. A model-free map (the image, its edges, a fixed prior) survives randomization completely:
# sMPRT Spearman exactly 1, eMPRT rise exactly 0 (the same noise for both models), cascade Spearman 1.
# Measured on a TinyCNN trained ~2 s on Fashion-MNIST (75% accuracy), 32 test images, seed 0,
# sMPRT with 50 copies / eMPRT median rise / cascade Spearman:
#   saliency +0.13 / +0.090 / +0.10     Grad-CAM -0.02 / +0.093 / -0.01      (change: pass)
#   input x gradient +0.75 / +0.018 / +0.88    IG +0.74 / -0.021 / +0.88     (dominated by the image: fail)
#   intensity, edges, centre blob +1.00 / 0.000 / +1.00                      (model-free: fail)
# 0.5 is the report's cascade bound (half the rank agreement of a model-free map); 0.05 (a 5% rise in
# entropy, stated before the measurement) lies between the image-dominated maps and the gradients.
# Tiny-model numbers: the integrator's real-model run is the check that matters.

#: an explainer whose maps keep a mean Spearman above this with the fully randomized model's fails (cascade)
CASCADE_MAX_SPEARMAN = 0.5
#: sMPRT fails when the mean Spearman of the denoised maps (original vs fully randomized model) exceeds this
SMOOTH_MPRT_MAX_SPEARMAN = 0.5
#: eMPRT fails when the median relative change of the map's histogram entropy is within +-this: the maps kept
#: their complexity under full randomization. Two-sided: Hedstrom et al. expect a rise (randomized maps look like
#: noise), but a CAM on a randomized network often becomes a smooth blob whose entropy *falls* -- a change all the
#: same; only "no change" is the survival the gate rejects (model-free maps: exactly 0)
EFFICIENT_MPRT_MIN_RISE = 0.05
#: Hedström et al.'s (and Quantus') defaults: noisy copies per map, noise sd as a fraction of the image's range
SMOOTH_MPRT_SAMPLES = 50
SMOOTH_MPRT_NOISE = 0.1
#: bins of eMPRT's histogram (Quantus' default without a binning rule)
EFFICIENT_MPRT_BINS = 100

_STREAM_SMOOTH_NOISE = 41

#: ``explain_fn(model, x, y) -> (N,H,W)`` maps of images x (N,C,H,W) for classes y (N,)
ExplainFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def fully_randomized(model: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` (eval mode) with every parameterized layer re-drawn: the cascade's last step.

    The layers are re-initialized from the output backwards from one generator
    seeded with ``seed``, exactly as :func:`model_randomization_check` does, so
    its last row compares the maps of this model.
    """
    net = copy.deepcopy(model).eval()
    gen = torch.Generator().manual_seed(int(seed))
    for _, module in parameterized_layers(net, x[:1].detach().to(model_device(net)))[::-1]:
        _reinitialize(module, gen)
    return net


def cascade_verdict(rows: list[dict[str, Any]], max_spearman: float = CASCADE_MAX_SPEARMAN) -> dict[str, Any]:
    """The cascading check's pass rule: the last row's mean |Spearman| below ``max_spearman`` (a map whose ranks
    flip under randomization still follows the image, not the weights).

    ``rows`` are :func:`model_randomization_check`'s; their last row is the
    full randomization unless ``max_layers`` cut the cascade. Undefined
    (every map constant) or no rows: not passed, since nothing shows that the
    maps depend on the weights. Returns ``passed``, ``spearman``, ``bound``,
    ``layer``, ``reason``.
    """
    if not rows:
        return {"passed": False, "spearman": math.nan, "bound": max_spearman, "layer": None,
                "reason": "no randomization step was compared"}
    last = rows[-1]
    rho = float(last.get("spearman", math.nan))
    passed = bool(abs(rho) < max_spearman)
    if math.isnan(rho):
        reason = "the maps are constant after randomization (Spearman undefined)"
    elif passed:
        reason = (f"maps change with the weights (|Spearman| {abs(rho):.2f} < {max_spearman:g} after randomizing "
                  f"to {last.get('layer')})")
    else:
        reason = (f"maps survive model randomization (|Spearman| {abs(rho):.2f} >= {max_spearman:g} after randomizing "
                  f"to {last.get('layer')})")
    return {"passed": passed, "spearman": rho, "bound": max_spearman, "layer": last.get("layer"), "reason": reason}


@dataclass(frozen=True)
class SmoothMPRTResult:
    """sMPRT: per-image Spearman (N,) of the denoised absolute maps, original vs fully randomized model.

    ``passed``: their mean over the images where it is defined is below ``bound``.
    """

    spearman: torch.Tensor
    mean: float
    n: int
    bound: float
    passed: bool
    samples: int
    noise_magnitude: float

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "spearman": self.mean, "bound": self.bound, "n": self.n,
                "n_undefined": int(self.spearman.numel()) - self.n, "samples": self.samples,
                "noise_magnitude": self.noise_magnitude}


@dataclass(frozen=True)
class EfficientMPRTResult:
    """eMPRT: per-image histogram entropy (N,) of the maps of the original and the fully randomized model.

    ``rise`` = (randomized - original) / original per image (NaN where the
    original map is constant: entropy 0); ``passed``: its median over the defined
    images is above ``bound``. The median, not the mean (Quantus' aggregate,
    reported as ``mean_rise``): a ratio over a near-constant original map is
    huge (Grad-CAM on a trained tiny CNN: mean +2.9 from a few images while the
    entropy rose 2.46 -> 2.69 on average), and a few images must not decide.
    """

    complexity_original: torch.Tensor
    complexity_randomized: torch.Tensor
    rise: torch.Tensor
    mean_rise: float
    median_rise: float
    n: int
    bound: float
    passed: bool
    n_bins: int

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "rise": self.median_rise, "mean_rise": self.mean_rise, "bound": self.bound,
                "n": self.n,
                "n_undefined": int(self.rise.numel()) - self.n, "n_bins": self.n_bins,
                "complexity_original": nan_mean(self.complexity_original),
                "complexity_randomized": nan_mean(self.complexity_randomized)}


@dataclass(frozen=True)
class RandomizationResult:
    """Both checks on the same fully randomized model; ``passed`` only if both pass."""

    passed: bool
    reason: str
    smooth: SmoothMPRTResult
    efficient: EfficientMPRTResult

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "smooth_mprt": self.smooth.as_dict(),
                "efficient_mprt": self.efficient.as_dict()}


def _explain(explain_fn: ExplainFn, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    maps = explain_fn(model, x, y).detach().float()
    check_maps(maps, "explanations")
    if tuple(maps.shape) != (x.shape[0], *x.shape[2:]):
        raise ShapeError(f"explain_fn returned maps of shape {tuple(maps.shape)} for images {tuple(x.shape)}; "
                         f"expected {(x.shape[0], *x.shape[2:])} (N,H,W)")
    return maps


def smoothed_maps(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, explain_fn: ExplainFn, *, seed: int = 0,
    sample_ids: torch.Tensor | None = None, samples: int = SMOOTH_MPRT_SAMPLES,
    noise_magnitude: float = SMOOTH_MPRT_NOISE, clip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(denoised maps, plain maps): the mean of ``explain_fn`` over ``samples`` copies of x, and the clean one.

    Copy k < samples-1 of image i adds N(0, s_i^2) noise with s_i =
    ``noise_magnitude`` x (max - min of image i), drawn from the generator of
    ``(stream of seed, sample_ids[i])`` in order k = 0, 1, ...; the last copy is
    the clean image (Hedström et al.; Quantus' order), whose maps are returned
    too. The same seed gives every model the same noise (common random numbers:
    a map that ignores the model comes out identical). ``clip`` keeps the noisy
    copies in [0,1], the images advspatial's maps accept (Quantus does not clip:
    ``clip=False`` is its definition).
    """
    check_range("samples", samples, 1)
    check_range("noise_magnitude", noise_magnitude, 0.0, None)
    n = x.shape[0]
    ids = sample_ids_or_range(n, sample_ids)
    gens = [sample_generator(stream_seed(seed, _STREAM_SMOOTH_NOISE), sid) for sid in ids.tolist()]
    spread = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(n, *([1] * (x.ndim - 1))) * noise_magnitude
    total: torch.Tensor | None = None
    plain = torch.empty(0)
    for k in range(int(samples)):
        if k == samples - 1:
            noisy = x
        else:
            eps = torch.stack([torch.randn(tuple(x.shape[1:]), generator=g) for g in gens]) if n else x.cpu()
            noisy = x + eps.to(x.device, x.dtype) * spread
            noisy = noisy.clamp(0.0, 1.0) if clip else noisy
        maps = _explain(explain_fn, model, noisy, y)
        plain = maps
        total = maps / samples if total is None else total + maps / samples
    assert total is not None
    return total, plain


def _spearman_result(a: torch.Tensor, b: torch.Tensor, bound: float, samples: int, noise: float) -> SmoothMPRTResult:
    rho = spearman(a.abs(), b.abs())
    defined = int(torch.isfinite(rho).sum())
    mean = nan_mean(rho)
    return SmoothMPRTResult(rho, mean, defined, bound, bool(defined and mean < bound), int(samples), float(noise))


def histogram_entropy(maps: torch.Tensor, n_bins: int = EFFICIENT_MPRT_BINS) -> torch.Tensor:
    """(N,) Shannon entropy (nats) of each map's histogram of ``n_bins`` equal bins over its own range.

    ``numpy.histogram`` on the float32 values, as Quantus' ``discrete_entropy``;
    a constant map has entropy 0.
    """
    check_maps(maps)
    check_range("n_bins", n_bins, 1)
    values = maps.detach().float().cpu().numpy()
    out = []
    for m in values:
        counts, _ = np.histogram(m, bins=int(n_bins))
        p = counts[counts > 0] / counts.sum()
        out.append(float(-(p * np.log(p)).sum()))
    return torch.tensor(out, dtype=torch.float64)


def _efficient_result(
    original: torch.Tensor, randomized: torch.Tensor, bound: float, n_bins: int,
) -> EfficientMPRTResult:
    h0 = histogram_entropy(original, n_bins)
    h1 = histogram_entropy(randomized, n_bins)
    rise = torch.where(h0 > 0, (h1 - h0) / h0.where(h0 > 0, torch.ones_like(h0)), torch.full_like(h0, math.nan))
    defined = int(torch.isfinite(rise).sum())
    median = float(np.median(rise[torch.isfinite(rise)].numpy())) if defined else math.nan  # mean of the middle two
    return EfficientMPRTResult(h0, h1, rise, nan_mean(rise), median, defined, bound,
                               bool(defined and abs(median) > bound), int(n_bins))


def _prepare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int,
             randomized_model: nn.Module | None) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    if x.ndim != 4:
        raise ShapeError(f"images must be a (N,C,H,W) tensor, got {tuple(x.shape)}")
    net = copy.deepcopy(model).eval()
    device = model_device(net)
    x = x.detach().to(device)
    y = torch.as_tensor(y).to(device).long()
    if y.shape != (x.shape[0],):
        raise ShapeError(f"labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    rand = fully_randomized(model, x, seed) if randomized_model is None else randomized_model
    return net, rand, x, y


def smooth_mprt(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, explain_fn: ExplainFn, seed: int = 0, *,
    sample_ids: torch.Tensor | None = None, samples: int = SMOOTH_MPRT_SAMPLES,
    noise_magnitude: float = SMOOTH_MPRT_NOISE, max_spearman: float = SMOOTH_MPRT_MAX_SPEARMAN,
    randomized_model: nn.Module | None = None, clip: bool = True,
) -> SmoothMPRTResult:
    """Smooth MPRT: Spearman of the :func:`smoothed_maps` (absolute values) of ``model`` and of its
    :func:`fully_randomized` copy (or ``randomized_model``), per image; passes below ``max_spearman``.

    Equal to Quantus 0.6's ``SmoothMPRT(return_last_correlation=True, skip_layers=True)`` given the same
    randomized model and the same noise with ``clip=False`` (its normalisation by one positive number per
    batch changes no rank, so it is left out). Cost: 2 x ``samples`` calls of ``explain_fn`` on x.
    """
    net, rand, x, y = _prepare(model, x, y, seed, randomized_model)
    kw: dict[str, Any] = dict(seed=seed, sample_ids=sample_ids, samples=samples, noise_magnitude=noise_magnitude,
                              clip=clip)
    a0, _ = smoothed_maps(net, x, y, explain_fn, **kw)
    a1, _ = smoothed_maps(rand, x, y, explain_fn, **kw)
    return _spearman_result(a0, a1, max_spearman, samples, noise_magnitude)


def efficient_mprt(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, explain_fn: ExplainFn, seed: int = 0, *,
    n_bins: int = EFFICIENT_MPRT_BINS, min_rise: float = EFFICIENT_MPRT_MIN_RISE,
    randomized_model: nn.Module | None = None,
) -> EfficientMPRTResult:
    """Efficient MPRT: the relative rise of :func:`histogram_entropy` from the maps of ``model`` to those of
    its :func:`fully_randomized` copy (or ``randomized_model``), per image; passes when the median's size
    exceeds ``min_rise`` (the complexity changed, in either direction).

    Equal to Quantus 0.6's ``EfficientMPRT`` (its defaults: raw maps, 100 bins) given the same randomized
    model. Cost: 2 calls of ``explain_fn`` on x.
    """
    net, rand, x, y = _prepare(model, x, y, seed, randomized_model)
    return _efficient_result(_explain(explain_fn, net, x, y), _explain(explain_fn, rand, x, y), min_rise, n_bins)


def randomization_checks(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, explain_fn: ExplainFn, seed: int = 0, *,
    sample_ids: torch.Tensor | None = None, samples: int = SMOOTH_MPRT_SAMPLES,
    noise_magnitude: float = SMOOTH_MPRT_NOISE, max_spearman: float = SMOOTH_MPRT_MAX_SPEARMAN,
    min_rise: float = EFFICIENT_MPRT_MIN_RISE, n_bins: int = EFFICIENT_MPRT_BINS, clip: bool = True,
) -> RandomizationResult:
    """sMPRT and eMPRT on one :func:`fully_randomized` copy; passes only if both pass.

    "An explainer whose maps survive full model randomization fails": sMPRT
    fails when the denoised maps keep a mean Spearman >= ``max_spearman``
    with the randomized model's, eMPRT when their complexity changes by no
    more than ``min_rise`` (relative, either direction). eMPRT reuses the clean-image maps computed by the
    smoothing, so the pair costs 2 x ``samples`` calls of ``explain_fn`` on x.
    """
    net, rand, x, y = _prepare(model, x, y, seed, None)
    kw: dict[str, Any] = dict(seed=seed, sample_ids=sample_ids, samples=samples, noise_magnitude=noise_magnitude,
                              clip=clip)
    s0, p0 = smoothed_maps(net, x, y, explain_fn, **kw)
    s1, p1 = smoothed_maps(rand, x, y, explain_fn, **kw)
    smooth = _spearman_result(s0, s1, max_spearman, samples, noise_magnitude)
    efficient = _efficient_result(p0, p1, min_rise, n_bins)
    failed = []
    if not smooth.passed:
        failed.append(f"sMPRT: the denoised maps keep Spearman {smooth.mean:.2f} (>= {max_spearman:g} fails) "
                      "with the fully randomized model's")
    if not efficient.passed:
        failed.append(f"eMPRT: map complexity changes by {efficient.median_rise:+.2f} (median; within "
                      f"+-{min_rise:g} fails) under full randomization")
    reason = "; ".join(failed) if failed else (
        f"maps change under full model randomization (sMPRT Spearman {smooth.mean:.2f}, "
        f"eMPRT median rise {efficient.median_rise:+.2f})")
    return RandomizationResult(not failed, reason, smooth, efficient)


__all__ = [
    "CASCADE_MAX_SPEARMAN", "EFFICIENT_MPRT_BINS", "EFFICIENT_MPRT_MIN_RISE", "EfficientMPRTResult", "ExplainFn",
    "RandomizationResult", "SMOOTH_MPRT_MAX_SPEARMAN", "SMOOTH_MPRT_NOISE", "SMOOTH_MPRT_SAMPLES",
    "SmoothMPRTResult", "cascade_verdict", "efficient_mprt", "evaluation_steps", "fully_randomized",
    "histogram_entropy", "model_randomization_check", "parameterized_layers", "randomization_checks",
    "smooth_mprt", "smoothed_maps",
]
