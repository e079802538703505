"""Model-parameter randomization tests with input smoothing: smooth and efficient MPRT (Hedström et al., 2024,
"Sanity Checks Revisited"), with pass rules. Part of the faithfulness checks (:mod:`advspatial.faithfulness.gate`);
the cascading test and the fully randomized model are in :mod:`.randomization`.

- :func:`smooth_mprt`: each map averaged over noisy copies of the input before the original and the fully
  randomized model's maps are compared (Spearman of the absolute maps), so explanation noise does not pass for
  model dependence.
- :func:`efficient_mprt`: the relative rise of the map's complexity (entropy of its 100-bin histogram) from the
  original to the fully randomized model; a map that explains the model gets noisier. One-sided, as Hedström et al.
  define it: only a *rise* passes; a fall (a map that turns into a smooth blob or collapses to a constant under
  randomization) is not the noise a randomized model's explanation should show.
- :func:`randomization_checks`: both, sharing each randomized model, over several independent draws, with one
  ``passed``: the gate's call ``(model, x, y, explain_fn, seed, draws=...)``.

A randomized map that collapsed to a constant is counted, never dropped: Spearman 0 (it kept none of the original's
ranking, :func:`~advspatial.faithfulness.randomization.rank_agreement`) and an entropy of 0 (a fall in complexity).
"""

from __future__ import annotations

import copy
import math
from contextlib import closing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ShapeError, check_range
from ..host_syncs import host_list
from ..stacked_runs import stacked_outputs
from ..progress import progress_bar
from ..runtime import model_device, sample_generator, sample_ids_or_range, stream_seed
from ..regions.checks import check_maps
from .draws import aggregate, draw_seeds
from .randomization import ExplainFn, constant_maps, fully_randomized, nan_mean, rank_agreement

#: sMPRT fails when the mean Spearman of the denoised maps (original vs fully randomized model) exceeds this
SMOOTH_MPRT_MAX_SPEARMAN = 0.5
#: eMPRT passes when the median relative rise of the map's histogram entropy under full randomization exceeds this.
#: One-sided, as Hedstrom et al. (2024) define it: a randomized model's explanation should look like noise, so its
#: complexity must *rise*; a fall (a CAM that turns into a smooth blob or a constant) or no change (model-free maps:
#: exactly 0) fails
EFFICIENT_MPRT_MIN_RISE = 0.05
#: Hedström et al.'s (and Quantus') defaults: noisy copies per map, noise sd as a fraction of the image's range
SMOOTH_MPRT_SAMPLES = 50
SMOOTH_MPRT_NOISE = 0.1
#: bins of eMPRT's histogram (Quantus' default without a binning rule)
EFFICIENT_MPRT_BINS = 100

_STREAM_SMOOTH_NOISE = 41


@dataclass(frozen=True)
class SmoothMPRTResult:
    """sMPRT: Spearman (D,N) of the denoised absolute maps, original vs each of D fully randomized models.

    ``passed``: their mean over the draws and images where it is defined is below ``bound``. ``collapsed`` (D,N)
    marks the randomized maps that collapsed to a constant (Spearman 0).
    """

    spearman: torch.Tensor
    mean: float
    n: int
    bound: float
    passed: bool
    samples: int
    noise_magnitude: float
    collapsed: torch.Tensor

    def as_dict(self) -> dict[str, Any]:
        table = self.spearman.reshape(-1, self.spearman.shape[-1])
        return {"passed": self.passed, "spearman": self.mean, "bound": self.bound, "n": self.n,
                "n_undefined": int(table.shape[1]) - self.n, "samples": self.samples,
                "noise_magnitude": self.noise_magnitude, **_counts(self.collapsed),
                "per_draw": [[float(v) for v in row] for row in table.tolist()]}


@dataclass(frozen=True)
class EfficientMPRTResult:
    """eMPRT: histogram entropy of the maps of the original model (N,) and of D fully randomized models (D,N).

    ``rise`` (D,N) = (randomized - original) / original (NaN where the original
    map is constant: entropy 0; -1 where the randomized map collapsed to a
    constant, marked in ``collapsed``); ``median_rise``: the mean over draws of
    each draw's median over the defined images; ``passed``: it is above
    ``bound`` (one-sided: a fall fails). The median, not the mean (Quantus'
    aggregate, reported as ``mean_rise``): a ratio over a near-constant original
    map is huge (Grad-CAM on a trained tiny CNN: mean +2.9 from a few images
    while the entropy rose 2.46 -> 2.69 on average), and a few images must not
    decide.
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
    collapsed: torch.Tensor

    def as_dict(self) -> dict[str, Any]:
        table = self.rise.reshape(-1, self.rise.shape[-1])
        return {"passed": self.passed, "rise": self.median_rise, "mean_rise": self.mean_rise, "bound": self.bound,
                "n": self.n, "n_undefined": int(table.shape[1]) - self.n, "n_bins": self.n_bins,
                "one_sided": True, **_counts(self.collapsed),
                "complexity_original": nan_mean(self.complexity_original),
                "complexity_randomized": nan_mean(self.complexity_randomized),
                "per_draw": [[float(v) for v in row] for row in table.tolist()]}


def _counts(collapsed: torch.Tensor) -> dict[str, int]:
    """The record's count of randomized maps that collapsed to a constant, of every randomized map."""
    return {"n_collapsed": int(collapsed.sum()), "maps": int(collapsed.numel())}


@dataclass(frozen=True)
class RandomizationResult:
    """Both checks on the same fully randomized models (one per seed of ``draw_seeds``); ``passed`` only if both
    pass."""

    passed: bool
    reason: str
    smooth: SmoothMPRTResult
    efficient: EfficientMPRTResult
    draw_seeds: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "smooth_mprt": self.smooth.as_dict(),
                "efficient_mprt": self.efficient.as_dict(), "draw_seeds": list(self.draw_seeds)}


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
    noise_magnitude: float = SMOOTH_MPRT_NOISE, clip: bool = True, tick: Callable[[], Any] | None = None,
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
    gens = [sample_generator(stream_seed(seed, _STREAM_SMOOTH_NOISE), sid) for sid in host_list(ids)]
    spread = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(n, *([1] * (x.ndim - 1))) * noise_magnitude

    def copies() -> Iterator[torch.Tensor]:
        for k in range(int(samples)):
            if k == samples - 1:
                yield x
                continue
            eps = torch.stack([torch.randn(tuple(x.shape[1:]), generator=g) for g in gens]) if n else x.cpu()
            noisy = x + eps.to(x.device, x.dtype) * spread
            yield noisy.clamp(0.0, 1.0) if clip else noisy

    def explain(images: torch.Tensor) -> torch.Tensor:  # one copy, or several stacked on a device
        return _explain(explain_fn, model, images, y.repeat(len(images) // max(n, 1)))

    # the copies do not depend on each other: one round (one call each on a CPU, stacked on a device)
    total: torch.Tensor | None = None
    plain = torch.empty(0)
    with closing(stacked_outputs(explain, copies())) as outputs:  # the round ends here even on an error
        for maps in outputs:
            if tick is not None:  # one map computation done (a progress bar's step)
                tick()
            plain = maps
            total = maps / samples if total is None else total + maps / samples
    assert total is not None
    return total, plain


def _spearman_result(a: torch.Tensor, randomized: list[torch.Tensor], bound: float, samples: int, noise: float
                     ) -> SmoothMPRTResult:
    """sMPRT of the original's denoised maps ``a`` against each draw's (a collapsed one counts as Spearman 0)."""
    pairs = [rank_agreement(a.abs(), b.abs()) for b in randomized]
    rho, collapsed = torch.stack([r for r, _ in pairs]), torch.stack([c for _, c in pairs])
    defined = int(torch.isfinite(rho).any(0).sum())
    mean = nan_mean(rho)
    return SmoothMPRTResult(rho, mean, defined, bound, bool(defined and mean < bound), int(samples), float(noise),
                            collapsed)


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
    original: torch.Tensor, randomized: list[torch.Tensor], bound: float, n_bins: int,
) -> EfficientMPRTResult:
    """eMPRT of the original's maps against each draw's (one-sided: passes on a median rise above ``bound``)."""
    h0 = histogram_entropy(original, n_bins)
    h1 = torch.stack([histogram_entropy(m, n_bins) for m in randomized])
    safe = h0.where(h0 > 0, torch.ones_like(h0))
    rise = torch.where(h0 > 0, (h1 - h0) / safe, torch.full_like(h1, math.nan))
    collapsed = torch.stack([constant_maps(m).cpu() for m in randomized]) & (h0 > 0)
    defined = int(torch.isfinite(rise).any(0).sum())
    median = aggregate(rise.numpy(), "median") if defined else math.nan  # per draw: the mean of the middle two
    return EfficientMPRTResult(h0, h1, rise, nan_mean(rise), median, defined, bound,
                               bool(defined and median > bound), int(n_bins), collapsed)


def _prepare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int,
             randomized_model: nn.Module | None = None, net_only: bool = False
             ) -> tuple[nn.Module, nn.Module | None, torch.Tensor, torch.Tensor]:
    if x.ndim != 4:
        raise ShapeError(f"images must be a (N,C,H,W) tensor, got {tuple(x.shape)}")
    net = copy.deepcopy(model).eval()
    device = model_device(net)
    x = x.detach().to(device)
    y = torch.as_tensor(y).to(device).long()
    if y.shape != (x.shape[0],):
        raise ShapeError(f"labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    if net_only:
        return net, None, x, y
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
    assert rand is not None
    kw: dict[str, Any] = dict(seed=seed, sample_ids=sample_ids, samples=samples, noise_magnitude=noise_magnitude,
                              clip=clip)
    a0, _ = smoothed_maps(net, x, y, explain_fn, **kw)
    a1, _ = smoothed_maps(rand, x, y, explain_fn, **kw)
    return _spearman_result(a0, [a1], max_spearman, samples, noise_magnitude)


def efficient_mprt(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, explain_fn: ExplainFn, seed: int = 0, *,
    n_bins: int = EFFICIENT_MPRT_BINS, min_rise: float = EFFICIENT_MPRT_MIN_RISE,
    randomized_model: nn.Module | None = None,
) -> EfficientMPRTResult:
    """Efficient MPRT: the relative rise of :func:`histogram_entropy` from the maps of ``model`` to those of
    its :func:`fully_randomized` copy (or ``randomized_model``), per image; passes when the median exceeds
    ``min_rise`` (the complexity rose; one-sided, as Hedström et al. define it).

    Equal to Quantus 0.6's ``EfficientMPRT`` (its defaults: raw maps, 100 bins) given the same randomized
    model. Cost: 2 calls of ``explain_fn`` on x.
    """
    net, rand, x, y = _prepare(model, x, y, seed, randomized_model)
    assert rand is not None
    return _efficient_result(_explain(explain_fn, net, x, y), [_explain(explain_fn, rand, x, y)], min_rise, n_bins)


def randomization_checks(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, explain_fn: ExplainFn, seed: int = 0, *,
    sample_ids: torch.Tensor | None = None, samples: int = SMOOTH_MPRT_SAMPLES,
    noise_magnitude: float = SMOOTH_MPRT_NOISE, max_spearman: float = SMOOTH_MPRT_MAX_SPEARMAN,
    min_rise: float = EFFICIENT_MPRT_MIN_RISE, n_bins: int = EFFICIENT_MPRT_BINS, clip: bool = True,
    draws: int = 1, progress: bool = False,
) -> RandomizationResult:
    """sMPRT and eMPRT on ``draws`` :func:`fully_randomized` copies (one per seed of
    :func:`~advspatial.faithfulness.draws.draw_seeds`, the first ``seed``); passes only if both pass.

    "An explainer whose maps survive full model randomization fails": sMPRT
    fails when the denoised maps keep a mean Spearman >= ``max_spearman``
    with the randomized models', eMPRT when their complexity does not rise by
    more than ``min_rise`` (relative; a fall fails). The noise of the smoothing
    is keyed by ``seed`` and the sample ids, the same for every model (common
    random numbers), so the trained model's denoised maps are computed once;
    eMPRT reuses the clean-image maps computed by the smoothing. Cost:
    (1 + ``draws``) x ``samples`` calls of ``explain_fn`` on x.
    """
    net, _, x, y = _prepare(model, x, y, seed, net_only=True)
    seeds = draw_seeds(seed, draws)
    kw: dict[str, Any] = dict(seed=seed, sample_ids=sample_ids, samples=samples, noise_magnitude=noise_magnitude,
                              clip=clip)
    with progress_bar(total=(1 + len(seeds)) * int(samples), desc="gate: smooth and efficient MPRT", unit="map",
                      disable=not progress) as bar:
        s0, p0 = smoothed_maps(net, x, y, explain_fn, tick=bar.update, **kw)
        denoised, plain = [], []
        for draw_seed in seeds:
            s1, p1 = smoothed_maps(fully_randomized(model, x, draw_seed), x, y, explain_fn, tick=bar.update, **kw)
            denoised.append(s1)
            plain.append(p1)
    smooth = _spearman_result(s0, denoised, max_spearman, samples, noise_magnitude)
    efficient = _efficient_result(p0, plain, min_rise, n_bins)
    failed = []
    if not smooth.passed:
        failed.append(f"sMPRT: the denoised maps keep Spearman {smooth.mean:.2f} (>= {max_spearman:g} fails) "
                      "with the fully randomized model's")
    if not efficient.passed:
        failed.append(f"eMPRT: map complexity changes by {efficient.median_rise:+.2f} (median; a rise of at most "
                      f"{min_rise:g} fails) under full randomization")
    reason = "; ".join(failed) if failed else (
        f"maps change under full model randomization (sMPRT Spearman {smooth.mean:.2f}, "
        f"eMPRT median rise {efficient.median_rise:+.2f})")
    return RandomizationResult(not failed, reason, smooth, efficient, tuple(seeds))


__all__ = [
    "EFFICIENT_MPRT_BINS", "EFFICIENT_MPRT_MIN_RISE", "EfficientMPRTResult", "RandomizationResult",
    "SMOOTH_MPRT_MAX_SPEARMAN", "SMOOTH_MPRT_NOISE", "SMOOTH_MPRT_SAMPLES", "SmoothMPRTResult", "efficient_mprt",
    "histogram_entropy", "randomization_checks", "smooth_mprt", "smoothed_maps",
]
