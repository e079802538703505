"""The compute stages of experiment ``propagation``, each cached in the run directory (stage names in the package
docstring): per k, the k-pixel attack of every batch, the propagation maps of its successful attacks and of their
random controls, the locality test on those attacks, and the example maps of the layer-strip figures."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...models.hooks import select_layers
from ...analysis.locality import locality_analysis
from ...analysis.propagation import (
    CONTROL_MODES, PropagationMap, per_image_layer_stats, propagation_maps, random_pixel_change, random_pixel_reach,
)
from ...attacks import Attack, AttackResult, make_attack
from ...errors import ConfigError
from ..context import ExperimentContext
from ..stage import ATTACK
from .config import PropagationConfig
from .pixels import apply_pixels, perturbed_pixels
from .rows import add_control_columns, add_locality_columns, attack_rows
from .totals import PropagationTotals, propagation_stats


@dataclass
class Context(ExperimentContext):
    """The common context plus the recorded layers."""

    layers: list[str] = field(default_factory=list)


def build_attack(model: nn.Module, k: int, config: PropagationConfig) -> Attack:
    """The k-pixel attack with the experiment's DE budget."""
    return make_attack("kpixel", model, pixels=k, popsize=config.popsize, maxiter=config.maxiter, seed=config.seed)


def attack_batch(ctx: Context, attack: Attack, k: int, b: int) -> AttackResult:
    """The k-pixel attack of batch b (cached)."""
    return ctx.attack(ATTACK.at(f"k{k}"), attack, b)


def analysed(result: AttackResult) -> torch.Tensor:
    """(N,) bool: the attacks analysed -- the model was right on the clean image and the attack fooled it."""
    return (result.clean_pred == result.labels) & result.success


def control_stats(ctx: Context, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, k: int,
                  ids: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """Per control mode: the (count, L) per-image statistics of the control change's propagation maps (NaN where
    no control of the same |Δ| exists), ``available`` (count,) and ``fooled`` (count,) 1/0/NaN."""
    cfg = ctx.config
    pixels, colours, _ = perturbed_pixels(x, x_adv, k)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for mode in CONTROL_MODES:
        change = random_pixel_change(x, pixels, colours, mode, seed=cfg.seed, sample_ids=ids)
        pms = propagation_maps(ctx.model, x, change.x, ctx.layers, batch_size=cfg.batch_size)
        stats = per_image_layer_stats(pms, cfg.threshold)
        with torch.no_grad():
            pred = ctx.model(change.x.to(ctx.device)).argmax(1).cpu() if len(x) else torch.zeros(0, dtype=torch.long)
        fooled = (pred != y).double()
        missing = ~change.available
        for name in stats:
            stats[name][missing] = math.nan
        fooled[missing] = math.nan
        out[mode] = {**stats, "available": change.available, "fooled": fooled}
    return out


def propagation_batch(ctx: Context, k: int, b: int, result: AttackResult) -> dict[str, Any]:
    """Propagation statistics of the successful attacks of batch b and of their random controls (cached)."""
    sl = ctx.slices[b]

    def compute() -> dict[str, Any]:
        ok = analysed(result)
        x = ctx.data.images(sl)[ok]
        stats = propagation_stats(ctx.model, x, result.x_adv[ok], ctx.layers, ctx.config.threshold,
                                  batch_size=ctx.config.batch_size)
        stats["controls"] = control_stats(ctx, x, ctx.data.labels[sl][ok], result.x_adv[ok], k,
                                          torch.as_tensor(ctx.data.ids[sl])[ok])
        return stats

    return ctx.rundir.cached(f"propagation/k{k}/batch-{b:05d}", compute)


@dataclass
class RandomReach:
    """The propagation-per-se measurement of every image: ``peak`` (N, L) the mean over the random one-pixel
    changes of the peak PMmax at each recorded layer (``layers``, forward order); k plays no part."""

    layers: list[str]
    peak: torch.Tensor


def random_reach_stage(ctx: Context) -> RandomReach:
    """The random one-pixel changes of every batch and their per-layer peak PMmax (``random/batch-NNNNN``, cached;
    the draws are keyed by (seed, sample id), so the result does not depend on the batching)."""
    cfg = ctx.config

    def compute(b: int, sl: slice) -> dict[str, Any]:
        def measure() -> dict[str, Any]:
            layers, peak = random_pixel_reach(ctx.model, ctx.data.images(sl), ctx.layers, draws=cfg.random_draws,
                                              seed=cfg.seed, sample_ids=torch.as_tensor(ctx.data.ids[sl]),
                                              batch_size=cfg.batch_size)
            return {"layers": layers, "peak": peak}

        return ctx.rundir.cached(f"random/batch-{b:05d}", measure)

    parts = ctx.each_batch(compute, desc="random one-pixel changes, propagation maps")
    layers: list[str] = next((p["layers"] for p in parts if p["layers"]), [])
    peaks = [p["peak"] for p in parts if p["peak"].numel()]
    return RandomReach(layers, torch.cat(peaks).double() if peaks else torch.zeros(0, len(layers), dtype=torch.float64))


LOCALITY_KEYS = ("ring_counts", "ring_successes", "random_counts", "random_successes", "original_success",
                 "matched_counts", "matched_successes")


def locality_stage(ctx: Context, k: int, index: torch.Tensor, pixels: torch.Tensor,
                   colours: torch.Tensor) -> dict[str, Any]:
    """Locality analysis of all successful attacks of k, in chunks of ``batch_size`` images (each cached;
    every random draw is keyed by the image's sample id, so the result depends neither on the chunking nor on
    the other images), concatenated."""
    size = ctx.config.batch_size
    chunks = [slice(i, min(i + size, len(index))) for i in range(0, len(index), size)]
    if not chunks:
        return locality_chunk(ctx, k, 0, index, pixels, colours)
    parts = ctx.each_batch(lambda c, part: locality_chunk(ctx, k, c, index[part], pixels[part], colours[part]),
                           slices=chunks, desc=f"{k}-pixel locality")
    merged: dict[str, Any] = {key: torch.cat([p[key] for p in parts]) for key in LOCALITY_KEYS}
    merged["context"] = {which: {name: torch.cat([p["context"][which][name] for p in parts])
                                 for name in groups} for which, groups in parts[0]["context"].items()}
    return merged


def locality_chunk(ctx: Context, k: int, c: int, index: torch.Tensor, pixels: torch.Tensor,
                   colours: torch.Tensor) -> dict[str, Any]:
    """Locality analysis of chunk ``c`` of the successful attacks of k (cached)."""
    cfg = ctx.config

    def compute() -> dict[str, Any]:
        if index.numel() == 0:
            empty = torch.zeros(0, dtype=torch.long)
            r = len(cfg.radii)
            return {"ring_counts": empty.view(0, r), "ring_successes": empty.view(0, r),
                    "random_counts": empty, "random_successes": empty, "original_success": empty.bool(),
                    "matched_counts": empty.view(0, r), "matched_successes": empty.view(0, r), "context": {}}
        res = locality_analysis(ctx.model, ctx.data.images(index), ctx.data.labels[index], pixels, colours,
                                radii=cfg.radii, n_random=cfg.n_random, seed=cfg.seed,
                                batch_size=max(cfg.batch_size, 256), matched_draws=cfg.matched_draws,
                                sample_ids=torch.as_tensor(ctx.data.ids)[index], edge_strata=cfg.edge_strata,
                                intensity_strata=cfg.intensity_strata)
        return {**{key: getattr(res, key) for key in LOCALITY_KEYS}, "context": res.context}

    return ctx.rundir.cached(f"locality/k{k}/chunk-{c:05d}", compute)


@dataclass
class KSummary:
    """What the report needs of one k beyond the per-image rows."""

    k: int
    totals: PropagationTotals
    examples: dict[str, Any]
    pixels: torch.Tensor  # (S,k,2) positions of every successful attack (for the position density)
    paired: dict[str, Any] = field(default_factory=dict)  # per-image (S,L) statistics: "attack" and each control
    context: dict[str, Any] = field(default_factory=dict)  # per-image mean context of each locality group


def process_k(ctx: Context, k: int, rows: list[dict[str, Any]]) -> KSummary:
    """Attack every batch with k pixels, accumulate propagation maps, run the locality test; add rows."""
    cfg = ctx.config
    attack = build_attack(ctx.model, k, cfg)
    totals = PropagationTotals()
    k_rows: list[dict[str, Any]] = []
    found: dict[str, list[torch.Tensor]] = {"index": [], "pixels": [], "colours": []}
    paired: dict[str, dict[str, list[torch.Tensor]]] = {}

    def compute(b: int, sl: slice) -> tuple[AttackResult, dict[str, Any]]:
        result = attack_batch(ctx, attack, k, b)
        return result, propagation_batch(ctx, k, b, result)

    def accumulate(b: int, sl: slice, stages: tuple[AttackResult, dict[str, Any]]) -> None:
        result, stats = stages
        if "controls" not in stats or "image" not in stats:
            raise ConfigError(f"stage propagation/k{k}/batch-{b:05d} of this run was written before the random-change "
                              "controls existed; delete the run's stages/propagation and stages/locality folders "
                              "and resume (the attacks are kept)")
        totals.add(stats)
        ok = analysed(result)
        pixels, colours, _ = perturbed_pixels(ctx.data.images(sl), result.x_adv, k)
        peak = torch.full((len(ok),), math.nan, dtype=torch.float64)
        peak[ok] = stats["peak_last"].double()
        k_rows.extend(attack_rows(k, torch.arange(sl.start, sl.stop), result, ok, pixels, colours, peak))
        collect_paired(paired, stats)
        add_control_columns(k_rows[-len(ok):], ok, stats)
        found["index"].append(torch.arange(sl.start, sl.stop)[ok])
        found["pixels"].append(pixels[ok])
        found["colours"].append(colours[ok])

    ctx.each_batch(compute, desc=f"{k}-pixel attack, propagation maps", then=accumulate)
    index = torch.cat(found["index"])
    pixels, colours = torch.cat(found["pixels"]), torch.cat(found["colours"])
    loc = locality_stage(ctx, k, index, pixels, colours)
    add_locality_columns(k_rows, index, loc, cfg.radii)
    rows.extend(k_rows)
    keep = slice(0, cfg.figure_images)
    merged = {who: {name: torch.cat(parts) for name, parts in stats.items()} for who, stats in paired.items()}
    return KSummary(k, totals, example_maps(ctx, index[keep], pixels[keep], colours[keep]), pixels, merged,
                    loc.get("context", {}))


def collect_paired(paired: dict[str, dict[str, list[torch.Tensor]]], stats: Mapping[str, Any]) -> None:
    """Append a batch's per-image statistics of the attack and of each control (batches with no success add none)."""
    if not stats["count"]:
        return
    sources = {"attack": stats["image"], **stats["controls"]}
    for who, values in sources.items():
        for name, value in values.items():
            paired.setdefault(who, {}).setdefault(name, []).append(torch.as_tensor(value).double())


def example_maps(ctx: Context, index: torch.Tensor, pixels: torch.Tensor, colours: torch.Tensor) -> dict[str, Any]:
    """Per-layer PMmax maps of the first few successful attacks (for the layer-strip figure)."""
    if index.numel() == 0:
        return {}
    x = ctx.data.images(index)
    x_adv = apply_pixels(x, pixels, colours)
    pms: dict[str, PropagationMap] = propagation_maps(ctx.model, x, x_adv, ctx.layers, batch_size=len(index))
    with torch.no_grad():
        pred = ctx.model(x_adv.to(ctx.device)).argmax(1).cpu()
    return {"index": index, "x_adv": x_adv, "pixels": pixels, "labels": ctx.data.labels[index], "adv_pred": pred,
            "maps": {name: pm.pm_max for name, pm in pms.items()}}


def resolve_layers(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Module names to record: every conv/activation/block by default, else those matching ``patterns``."""
    return select_layers(model, list(patterns) if patterns else None)

