"""The cached stages of experiment ``propagation`` and the per-image rows they fill (stage names in the package
docstring): the random one-pixel changes of propagation per se; per k, the k-pixel attack of every batch, the
propagation maps of its successful attacks and of their random controls, the locality test on those attacks, and
the example maps of the layer-strip figures.

The rows (``per_image.csv``) hold one row per image and k: the attack's outcome and pixels, each random control's
reach and the locality counts of the successful attacks (blank elsewhere), and the image's per-se reach. Every
summary metric but the depth curves, the controls' counts and the context balance is computed from them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...analysis.locality import locality_analysis
from ...analysis.propagation import (
    CONTROL_MODES, per_image_layer_stats, propagation_maps, random_pixel_change, random_pixel_reach,
)
from ...attacks import Attack, AttackResult, make_attack
from ...errors import ConfigError
from ...models.hooks import select_layers
from ..context import ExperimentContext
from ..stage import ATTACK, Stage
from .config import PropagationConfig
from .pixel_changes import apply_pixels, format_pixels, perturbed_pixels
from .totals import PropagationTotals, propagation_stats

Row = dict[str, Any]


@dataclass
class Context(ExperimentContext[PropagationConfig]):
    """The common context plus the recorded layers."""

    layers: list[str] = field(default_factory=list)


@dataclass
class RandomReach:
    """The propagation-per-se measurement of some images: ``peak`` (N, L) the mean over the random one-pixel
    changes of the peak PMmax at each recorded layer (``layers``, forward order); k plays no part."""

    layers: list[str]
    peak: torch.Tensor


@dataclass(frozen=True)
class ReachStage(Stage[RandomReach]):
    """The random one-pixel changes of one batch, saved as ``{"layers", "peak"}``."""

    def saved(self, value: RandomReach) -> dict[str, Any]:
        return {"layers": value.layers, "peak": value.peak}

    def loaded(self, saved: Any) -> RandomReach:
        return RandomReach(saved["layers"], saved["peak"])


@dataclass
class BatchPropagation:
    """What the successful attacks of one batch add: ``stats`` of
    :func:`~advspatial.experiments.propagation.totals.propagation_stats` (per-layer sums, per-image statistics
    ``image``, ``peak_last``) and, per control mode, the per-image statistics of the control (:func:`control_stats`)."""

    stats: dict[str, Any]
    controls: dict[str, dict[str, torch.Tensor]]


@dataclass(frozen=True)
class PropagationStage(Stage[BatchPropagation]):
    """A batch's :class:`BatchPropagation`, saved as ``stats`` with ``"controls"`` beside its keys."""

    def saved(self, value: BatchPropagation) -> dict[str, Any]:
        return {**value.stats, "controls": value.controls}

    def loaded(self, saved: Any) -> BatchPropagation:
        if "controls" not in saved or "image" not in saved:
            raise ConfigError(f"the {self.name} stages of this run were written before the random-change controls "
                              "existed; delete the run's stages/propagation and stages/locality folders and resume "
                              "(the attacks are kept)")
        stats = {key: value for key, value in saved.items() if key != "controls"}
        return BatchPropagation(stats, saved["controls"])


@dataclass
class LocalityCounts:
    """The locality test of some successful attacks, per image (the tensors of
    :class:`~advspatial.analysis.locality.LocalityResult`): ring placements (N, R) tried and succeeding per radius,
    uniform random ones (N,), whether the original placement fools (N,), context-matched ones (N, R), and the
    context balance ``{"edge"|"intensity": {group: (N,)}}``."""

    ring_counts: torch.Tensor
    ring_successes: torch.Tensor
    random_counts: torch.Tensor
    random_successes: torch.Tensor
    original_success: torch.Tensor
    matched_counts: torch.Tensor
    matched_successes: torch.Tensor
    context: dict[str, dict[str, torch.Tensor]]

    @classmethod
    def empty(cls, radii: int) -> LocalityCounts:
        """No attack to test."""
        none = torch.zeros(0, dtype=torch.long)
        return cls(none.view(0, radii), none.view(0, radii), none, none, none.bool(), none.view(0, radii),
                   none.view(0, radii), {})

    @classmethod
    def cat(cls, parts: Sequence[LocalityCounts]) -> LocalityCounts:
        """The counts of several chunks, in order."""
        tensors = {f.name: torch.cat([getattr(p, f.name) for p in parts])
                   for f in dataclasses.fields(cls) if f.name != "context"}
        context = {which: {name: torch.cat([p.context[which][name] for p in parts]) for name in groups}
                   for which, groups in parts[0].context.items()}
        return cls(**tensors, context=context)


@dataclass(frozen=True)
class LocalityStage(Stage[LocalityCounts]):
    """A chunk's :class:`LocalityCounts`, saved as a dict of its fields."""

    def saved(self, value: LocalityCounts) -> dict[str, Any]:
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}

    def loaded(self, saved: Any) -> LocalityCounts:
        return LocalityCounts(**saved)


#: per batch, the random one-pixel changes of propagation per se: ``random/batch-NNNNN``
RANDOM = ReachStage("random")
#: per k and batch, the propagation statistics of the successful attacks: ``propagation/k{k}/batch-NNNNN``
PROPAGATION = PropagationStage("propagation")
#: per k and chunk of successful attacks, the locality test: ``locality/k{k}/chunk-NNNNN``
LOCALITY = LocalityStage("locality", per="chunk")


def kpixel_attack(model: nn.Module, k: int, config: PropagationConfig) -> Attack:
    """The k-pixel attack with the experiment's DE budget."""
    return make_attack("kpixel", model, pixels=k, popsize=config.popsize, maxiter=config.maxiter, seed=config.seed)


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


def propagation_batch(ctx: Context, k: int, b: int, result: AttackResult) -> BatchPropagation:
    """Propagation statistics of the successful attacks of batch b and of their random controls (cached)."""
    sl = ctx.slices[b]

    def compute() -> BatchPropagation:
        ok = analysed(result)
        x = ctx.data.images(sl)[ok]
        stats = propagation_stats(ctx.model, x, result.x_adv[ok], ctx.layers, ctx.config.threshold,
                                  batch_size=ctx.config.batch_size)
        return BatchPropagation(stats, control_stats(ctx, x, ctx.data.labels[sl][ok], result.x_adv[ok], k,
                                                     torch.as_tensor(ctx.data.ids[sl])[ok]))

    return PROPAGATION.at(f"k{k}").get(ctx.rundir, compute, b)


def random_reach_stage(ctx: Context) -> RandomReach:
    """The random one-pixel changes of every batch and their per-layer peak PMmax (:data:`RANDOM`; the draws are
    keyed by (seed, sample id), so the result does not depend on the batching)."""
    cfg = ctx.config

    def batch(b: int, sl: slice) -> RandomReach:
        def measure() -> RandomReach:
            return RandomReach(*random_pixel_reach(ctx.model, ctx.data.images(sl), ctx.layers, draws=cfg.random_draws,
                                                   seed=cfg.seed, sample_ids=torch.as_tensor(ctx.data.ids[sl]),
                                                   batch_size=cfg.batch_size))

        return RANDOM.get(ctx.rundir, measure, b)

    parts = ctx.each_batch(batch, desc="random one-pixel changes, propagation maps")
    layers: list[str] = next((p.layers for p in parts if p.layers), [])
    peaks = [p.peak for p in parts if p.peak.numel()]
    return RandomReach(layers, torch.cat(peaks).double() if peaks else torch.zeros(0, len(layers), dtype=torch.float64))


def locality_stage(ctx: Context, k: int, index: torch.Tensor, pixels: torch.Tensor,
                   colours: torch.Tensor) -> LocalityCounts:
    """Locality analysis of all successful attacks of k, in chunks of ``batch_size`` images (each cached;
    every random draw is keyed by the image's sample id, so the result depends neither on the chunking nor on
    the other images), concatenated."""
    size = ctx.config.batch_size
    chunks = [slice(i, min(i + size, len(index))) for i in range(0, len(index), size)]
    if not chunks:
        return locality_chunk(ctx, k, 0, index, pixels, colours)
    parts = ctx.each_batch(lambda c, part: locality_chunk(ctx, k, c, index[part], pixels[part], colours[part]),
                           slices=chunks, desc=f"{k}-pixel locality")
    return LocalityCounts.cat(parts)


def locality_chunk(ctx: Context, k: int, c: int, index: torch.Tensor, pixels: torch.Tensor,
                   colours: torch.Tensor) -> LocalityCounts:
    """Locality analysis of chunk ``c`` of the successful attacks of k (cached)."""
    cfg = ctx.config

    def compute() -> LocalityCounts:
        if index.numel() == 0:
            return LocalityCounts.empty(len(cfg.radii))
        res = locality_analysis(ctx.model, ctx.data.images(index), ctx.data.labels[index], pixels, colours,
                                radii=cfg.radii, n_random=cfg.n_random, seed=cfg.seed,
                                batch_size=max(cfg.batch_size, 256), matched_draws=cfg.matched_draws,
                                sample_ids=torch.as_tensor(ctx.data.ids)[index], edge_strata=cfg.edge_strata,
                                intensity_strata=cfg.intensity_strata)
        return LocalityCounts(**{f.name: getattr(res, f.name) for f in dataclasses.fields(LocalityCounts)})

    return LOCALITY.at(f"k{k}").get(ctx.rundir, compute, c)


@dataclass
class Examples:
    """The first few successful attacks of one k for its layer-strip figure: their indices, adversarial images,
    pixels, true labels and adversarial predictions, and the per-layer PMmax maps ``{layer: (R,h,w)}``."""

    index: torch.Tensor
    x_adv: torch.Tensor
    pixels: torch.Tensor
    labels: torch.Tensor
    adv_pred: torch.Tensor
    maps: dict[str, torch.Tensor]


@dataclass
class KSummary:
    """What the findings and the figures need of one k beyond the per-image rows."""

    k: int
    totals: PropagationTotals
    examples: Examples | None
    pixels: torch.Tensor  # (S,k,2) positions of every successful attack (for the position density)
    paired: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # per-image (S,L): "attack", controls
    context: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # per-image mean context per group


def process_k(ctx: Context, k: int, rows: list[Row]) -> KSummary:
    """Attack every batch with k pixels, accumulate propagation maps, run the locality test; add rows."""
    cfg = ctx.config
    attack = kpixel_attack(ctx.model, k, cfg)
    totals = PropagationTotals()
    k_rows: list[Row] = []
    found: dict[str, list[torch.Tensor]] = {"index": [], "pixels": [], "colours": []}
    paired: dict[str, dict[str, list[torch.Tensor]]] = {}

    def compute(b: int, sl: slice) -> tuple[AttackResult, BatchPropagation]:
        result = ctx.attack(ATTACK.at(f"k{k}"), attack, b)
        return result, propagation_batch(ctx, k, b, result)

    def accumulate(b: int, sl: slice, stages: tuple[AttackResult, BatchPropagation]) -> None:
        result, batch = stages
        totals.add(batch.stats)
        ok = analysed(result)
        pixels, colours, _ = perturbed_pixels(ctx.data.images(sl), result.x_adv, k)
        peak = torch.full((len(ok),), math.nan, dtype=torch.float64)
        peak[ok] = batch.stats["peak_last"].double()
        k_rows.extend(attack_rows(k, torch.arange(sl.start, sl.stop), result, ok, pixels, colours, peak))
        collect_paired(paired, batch)
        add_control_columns(k_rows[-len(ok):], ok, batch.controls)
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
                    loc.context)


def collect_paired(paired: dict[str, dict[str, list[torch.Tensor]]], batch: BatchPropagation) -> None:
    """Append a batch's per-image statistics of the attack and of each control (batches with no success add none)."""
    if not batch.stats["count"]:
        return
    for who, values in {"attack": batch.stats["image"], **batch.controls}.items():
        for name, value in values.items():
            paired.setdefault(who, {}).setdefault(name, []).append(torch.as_tensor(value).double())


def example_maps(ctx: Context, index: torch.Tensor, pixels: torch.Tensor, colours: torch.Tensor) -> Examples | None:
    """Per-layer PMmax maps of the first few successful attacks (for the layer-strip figure); None without any."""
    if index.numel() == 0:
        return None
    x = ctx.data.images(index)
    x_adv = apply_pixels(x, pixels, colours)
    pms = propagation_maps(ctx.model, x, x_adv, ctx.layers, batch_size=len(index))
    with torch.no_grad():
        pred = ctx.model(x_adv.to(ctx.device)).argmax(1).cpu()
    return Examples(index, x_adv, pixels, ctx.data.labels[index], pred, {name: pm.pm_max for name, pm in pms.items()})


def resolve_layers(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Module names to record: every conv/activation/block by default, else those matching ``patterns``."""
    return select_layers(model, list(patterns) if patterns else None)


def attack_rows(k: int, ids: torch.Tensor, result: AttackResult, ok: torch.Tensor, pixels: torch.Tensor,
                colours: torch.Tensor, peak: torch.Tensor) -> list[Row]:
    """One row per image of a batch: the attack's outcome and, where it succeeded, its pixels."""
    pos, col = format_pixels(pixels, colours)
    columns = {"index": ids, "label": result.labels, "clean_pred": result.clean_pred,
               "correct": result.clean_pred == result.labels, "success": result.success, "analysed": ok,
               "adv_pred": result.adv_pred, "queries": result.queries, "l0": result.l0, "pm_peak_last": peak}
    lists = {name: values.tolist() for name, values in columns.items()}
    out = []
    for i in range(len(ids)):
        row = {"k": k, **{name: lists[name][i] for name in columns}}
        row["pixels"] = pos[i] if lists["success"][i] else ""
        row["colours"] = col[i] if lists["success"][i] else ""
        out.append(row)
    return out


def add_control_columns(rows: list[Row], ok: torch.Tensor, controls: dict[str, dict[str, torch.Tensor]]) -> None:
    """Per successful image: each control's peak PMmax at the last layer and whether it fooled the model."""
    j = 0
    for row, analysed_ in zip(rows, ok.tolist(), strict=True):
        for mode in CONTROL_MODES:
            row[f"control_{mode}_peak_last"] = ""
            row[f"control_{mode}_fooled"] = ""
        if not analysed_:
            continue
        for mode in CONTROL_MODES:
            c = controls[mode]
            if bool(c["available"][j]):
                row[f"control_{mode}_peak_last"] = float(c["peak"][j, -1])
                row[f"control_{mode}_fooled"] = bool(c["fooled"][j] == 1)
        j += 1


def add_locality_columns(rows: list[Row], index: torch.Tensor, loc: LocalityCounts, radii: Sequence[int]) -> None:
    """Per successful image: variants tried and fooled at each radius and at random positions (blank elsewhere)."""
    keys = [f"ring{r}" for r in radii]
    matched = [f"matched{r}" for r in radii]
    for row in rows:
        for key in ("original_fooled", *(f"{p}_{s}" for p in (*keys, "random", *matched) for s in ("n", "fooled"))):
            row[key] = ""
    position = {int(i): j for j, i in enumerate(index.tolist())}
    for row in rows:
        j = position.get(int(row["index"])) if row["analysed"] else None
        if j is None:
            continue
        row["original_fooled"] = bool(loc.original_success[j])
        for col, key in enumerate(keys):
            row[f"{key}_n"] = int(loc.ring_counts[j, col])
            row[f"{key}_fooled"] = int(loc.ring_successes[j, col])
        row["random_n"] = int(loc.random_counts[j])
        row["random_fooled"] = int(loc.random_successes[j])
        for col, key in enumerate(matched):
            row[f"{key}_n"] = int(loc.matched_counts[j, col])
            row[f"{key}_fooled"] = int(loc.matched_successes[j, col])


def add_reach_column(rows: list[Row], peak: torch.Tensor) -> None:
    """Per row, ``random_peak_last``: its image's last-layer peak PMmax of the random one-pixel changes (the
    propagation-per-se claim's per-image value; the same for every k, blank with no recorded layer)."""
    for row in rows:
        row["random_peak_last"] = float(peak[int(row["index"]), -1]) if peak.shape[-1] else ""
