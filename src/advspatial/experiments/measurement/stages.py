"""The cached stages of the RoI/RoA measurement and the context they run in.

Per clean batch: the importance map of the predicted class (:data:`ROI`, the RoI side; the predictions are the
shared clean pass) and the panel explainers' maps (:data:`PANEL`). Per attack and batch: the attack
(:data:`~advspatial.experiments.stage.ATTACK`), its attack maps with their completeness check (:data:`MAPS`, the
RoA side), then the regions, the four-part segregation and the overlap statistics per image, the successful images
kept for the statistics (bounded memory), the per-class region frequencies and the figure examples
(:class:`AttackSummary`). An experiment adds its own per-image columns of each attack batch (the spatial
experiment's defence) through :class:`BatchColumns`, and says which of them are accuracies (:class:`ExtraColumns`).

Images whose contribution map stays outside the completeness tolerance are flagged and enter no statistic.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from ...attacks import Attack, AttackResult
from ...data import ImageDataset
from ...distributed import on_every_rank
from ...maps import attack_map, importance_map
from ...maps._common import feature_map_size
from ...regions import MapAccumulator, binarize, overlap_statistics, segregate
from ...regions.binarization import pool_to_scale
from ...regions.references import IMAGE_REFERENCES, reference_maps
from ...rundir import RunDir
from ...runtime import batch_slices
from ...statistics.store import Store
from . import colocation
from .batch_images import BatchImages, CleanRegion, SharedBatches
from ..context import ExperimentContext, prepare_context
from .roi import resolve_importance
from .rows import keep_across_classes, keep_first_images, per_image_rows
from ..stage import ATTACK, Stage
from .config import MeasurementConfig, contribution_kw

PARTS = ("both", "roi_only", "roa_only", "neither")
#: the settings of a measurement (:class:`MeasurementConfig` or an experiment's subclass)
M = TypeVar("M", bound=MeasurementConfig, covariant=True)
#: the settings of one call
Config = TypeVar("Config", bound=MeasurementConfig)


@dataclass(frozen=True)
class AttackMaps:
    """An attack map of one batch (N,H,W), with its completeness check where the map has one."""

    map: torch.Tensor
    completeness_error: torch.Tensor | None = None
    flagged: torch.Tensor | None = None
    steps_used: torch.Tensor | None = None


@dataclass(frozen=True)
class MapsStage(Stage[AttackMaps]):
    """An attack map per batch, saved as ``{"map"}`` plus the completeness check's tensors when there is one."""

    def saved(self, value: AttackMaps) -> dict[str, torch.Tensor]:
        out = {"map": value.map.cpu()}
        if value.completeness_error is not None:
            if value.flagged is None or value.steps_used is None:  # the AttributeError that .cpu() on None raised
                raise AttributeError("an attack map has a completeness_error but no flagged or steps_used")
            out.update(completeness_error=value.completeness_error.cpu(), flagged=value.flagged.cpu(),
                       steps_used=value.steps_used.cpu())
        return out

    def loaded(self, saved: Any) -> AttackMaps:
        return AttackMaps(**saved)


#: the importance map (RoI side) of the predicted class of every clean batch
ROI = Stage[torch.Tensor]("roi")
#: another explainer's map of every clean batch: ``PANEL.at(method)``
PANEL = Stage[torch.Tensor]("panel")
#: an attack map of every attacked batch: ``MAPS.at(attack, kind)``
MAPS = MapsStage("maps")


@dataclass
class Context(ExperimentContext[M]):
    """The shared context plus the RoI method this run resolved (``auto`` picks by head type) and why, the scale
    of the statistics and the explainer panel (duplicates left out); generic in the measurement's settings
    (``Context[SpatialConfig]`` in the spatial experiment)."""

    importance: str = ""
    importance_reason: str = ""
    scale: tuple[int, int] | None = None
    panel: list[str] = field(default_factory=list)
    panel_duplicates: dict[str, str] = field(default_factory=dict)

    def at_scale(self, maps: torch.Tensor) -> torch.Tensor:
        """Maps at the resolution the statistics use: the input's, or the CAM layer's (``common_scale``)."""
        return maps if self.scale is None else pool_to_scale(maps, self.scale)

    def at_input(self, regions: torch.Tensor) -> torch.Tensor:
        """Regions brought back to the input's resolution (nearest neighbour), for figures."""
        if self.scale is None:
            return regions
        size = tuple(self.data.image_shape[1:])
        return nn.functional.interpolate(regions[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5

    def importance_of(self, b: int) -> torch.Tensor:
        """The RoI explainer's maps of clean batch ``b`` (the cached stage :data:`ROI`)."""

        def compute() -> torch.Tensor:
            x, _, ids = self.batch(self.slices[b])
            return importance_map(self.importance, self.model, x, target="pred", batch_size=len(x),
                                  sample_ids=ids).cpu()

        return ROI.get(self.rundir, compute, b)

    def panel_maps(self, method: str, b: int) -> torch.Tensor:
        """The maps of explainer ``method`` on clean batch ``b``, predicted class (the RoI's own: :data:`ROI`)."""
        if method == self.importance:
            return self.importance_of(b)

        def compute() -> torch.Tensor:
            x, _, ids = self.batch(self.slices[b])
            return importance_map(method, self.model, x, target="pred", batch_size=len(x), sample_ids=ids).cpu()

        return PANEL.at(method).get(self.rundir, compute, b)


def measurement_context(config: Config, rundir: RunDir, images: ImageDataset | None = None) -> Context[Config]:
    """The shared context with the RoI method resolved (``auto``: by the model's head type); ``images``: the
    test images when they are not ``config.dataset``'s (see :func:`~advspatial.experiments.context.prepare_context`)."""
    base = prepare_context(config, rundir, images)
    with rundir.passes.phase("setup"):
        probe, _, _ = base.batch(slice(0, 1))
        method, reason = resolve_importance(config.importance, base.model, probe)
        scale = feature_map_size(base.model, probe) if config.common_scale else None
        ctx: Context[Config] = base.derive(Context, importance=method, importance_reason=reason, scale=scale)
        # each rank probes the explainers on the first batch itself: one rank's failure must stop every rank
        ctx.panel, ctx.panel_duplicates = on_every_rank(lambda: distinct_explainers(ctx, [method, *config.panel]))
    return ctx


def distinct_explainers(ctx: Context[MeasurementConfig], methods: list[str]) -> tuple[list[str], dict[str, str]]:
    """``methods`` without repeats and without explainers whose maps equal an earlier one's up to scale.

    Checked on the first batch (e.g. HiResCAM equals Grad-CAM / (h*w) on a GAP +
    linear head): a duplicate would cost a gate and add a copy of a test to a
    correction family. Returns (kept, {dropped: the explainer it duplicates}).
    """
    kept: list[str] = []
    duplicates: dict[str, str] = {}
    for method in dict.fromkeys(methods):
        normalized = max_normalized(ctx.panel_maps(method, 0))
        twin = next((k for k in kept if torch.allclose(normalized, max_normalized(ctx.panel_maps(k, 0)),
                                                       atol=1e-4, rtol=1e-4)), None)
        if twin is None:
            kept.append(method)
        else:
            duplicates[method] = twin
    return kept, duplicates


def max_normalized(maps: torch.Tensor) -> torch.Tensor:
    """Each (H,W) map divided by its maximum (all-zero maps stay zero)."""
    peak = maps.flatten(1).amax(1).clamp_min(1e-12)
    return maps / peak[:, None, None]



def images_for(attack: Attack, config: MeasurementConfig, n: int) -> int:
    """How many of the n images (a prefix) ``attack`` gets: L0 (one-pixel) attacks run on a subset."""
    return min(n, config.onepixel_n) if attack.norm == "l0" else n


def map_kinds(attack: Attack, config: MeasurementConfig) -> list[str]:
    """Attack maps computed for an attack: the configured one, plus magnitude for L2 attacks.

    An L0 attack gets one map only: for a one-pixel perturbation every map marks
    the same pixel, and duplicate rows would count one result twice.
    """
    kinds = [config.attack_map]
    if attack.norm == "l2" and "magnitude" not in kinds:
        kinds.append("magnitude")
    return kinds


def attack_maps(ctx: Context[MeasurementConfig], name: str, kind: str, b: int, sl: slice,
                x_adv: torch.Tensor) -> AttackMaps:
    """Attack map ``kind`` of attack ``name`` on batch b, with its completeness check where it has one (cached)."""

    def compute() -> AttackMaps:
        x, y, _ = ctx.batch(sl)
        kw = contribution_kw(ctx.config) if kind == "contribution" else {}
        amap = attack_map(kind, ctx.model, x, x_adv.to(ctx.device), y, **kw)
        return AttackMaps(amap.map, amap.completeness_error, amap.flagged, amap.steps_used)

    return MAPS.at(name, kind).get(ctx.rundir, compute, b)


def region_rows(
    clean: CleanRegion, amap: torch.Tensor, ids: torch.Tensor, config: MeasurementConfig
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Per-image statistics and part fractions of attack maps ``amap`` against the batch's ``clean`` region;
    returns (columns, roi, roa)."""
    imp, roi_b = clean.importance, clean.roi
    roa_b = binarize(amap, fraction=config.fraction, seed=config.seed + 1, sample_ids=ids)
    stats = overlap_statistics(imp, amap, roi_b.mask, roa_b.mask, importance_rank=clean.rank)
    partition = segregate(roi_b.mask, roa_b.mask)
    pixels = imp.shape[1] * imp.shape[2]
    cols = {k: v.float() for k, v in stats.items()}
    for part in PARTS:
        cols[part] = getattr(partition, part).flatten(1).sum(1).float() / pixels
    cols["roi_pixels"] = roi_b.mask.flatten(1).sum(1)
    cols["roa_pixels"] = roa_b.mask.flatten(1).sum(1)
    cols["tied_roi"] = roi_b.tied_at_cut
    cols["tied_roa"] = roa_b.tied_at_cut
    return cols, roi_b.mask, roa_b.mask


def batch_images(ctx: Context[MeasurementConfig], sl: slice, importance: torch.Tensor) -> BatchImages:
    """The images ``sl``'s foreground shares and reference maps, and the RoI of their clean maps ``importance``
    (at the statistics' scale)."""
    x = ctx.data.images(sl)
    references = {r: ctx.at_scale(m) for r, m in reference_maps(x, names=IMAGE_REFERENCES).items()}
    return BatchImages(colocation.composition(x), references, CleanRegion.of(importance, ctx.data.ids[sl], ctx.config))


@dataclass
class AttackSummary:
    """What the statistics and figures need of one attack, beyond the per-image rows.

    ``stores[kind]`` keeps, batch by batch, the first ``permutation_images`` successful,
    completeness-checked images (maps, regions, labels, composition, ids, the image references and,
    for the defence attack, the panel explainers' maps: :class:`~advspatial.statistics.store.Store`) for the
    statistics;
    ``frequency`` accumulates the regions per class (P(pixel in region | class)); ``accuracies``: the extra
    columns whose mean is an accuracy, by name (:class:`ExtraColumns`).
    """

    name: str
    norm: str
    n: int
    stores: dict[str, list[Store]]
    frequency: dict[str, MapAccumulator]
    examples: dict[str, list[torch.Tensor]]
    accuracies: dict[str, Accuracy] = field(default_factory=dict)

    def store(self, kind: str) -> Store:
        """The kept images of one attack map, concatenated."""
        return Store.concatenated(self.stores[kind])

    def kept(self, kind: str) -> int:
        """How many images of one attack map enter the statistics."""
        return sum(len(part) for part in self.stores[kind])

    def kinds(self) -> list[str]:
        """The attack maps of this attack, the main one first."""
        return list(self.stores)


@dataclass(frozen=True)
class Accuracy:
    """An extra column whose mean over an attack's images is an accuracy: ``column`` holds predicted classes
    (``predicted``: correct where it equals the label) or each image's share of correct draws (a random control)."""

    column: str
    predicted: bool


@dataclass(frozen=True)
class ExtraColumns:
    """An experiment's per-image columns of one attack batch (written into the rows as named) and, by name, those
    whose mean is an accuracy (an attack outcome's ``defence``, :class:`~.findings.AttackOutcome`)."""

    columns: dict[str, torch.Tensor]
    accuracies: dict[str, Accuracy] = field(default_factory=dict)


class BatchColumns(Protocol):
    """More per-image columns of every attacked batch, beside the maps' (the spatial experiment's defence)."""

    def compute(self, name: str, b: int, sl: slice, x_adv: torch.Tensor, amap: torch.Tensor) -> Any:
        """The cached stage value of attack ``name`` on batch ``b`` (``amap``: its main attack map)."""

    def columns(self, name: str, value: Any, labels: torch.Tensor) -> ExtraColumns:
        """The per-image row columns of a computed value, consumed in batch order."""


@dataclass
class BatchStages:
    """Every cached stage of one attack batch, handed from the per-batch step to the accumulation."""

    result: AttackResult
    importance: torch.Tensor
    pred: torch.Tensor
    panel: dict[str, torch.Tensor]
    maps: dict[str, AttackMaps]
    extra: Any = None


def process_attack(ctx: Context[MeasurementConfig], name: str, rows: list[dict[str, Any]], attack: Attack | None = None,
                   extra: BatchColumns | None = None, shared: SharedBatches | None = None) -> AttackSummary:
    """Run one attack over its images; append per-image rows; collect what aggregates need.

    ``attack``: the attack object to run under ``name`` (default: the registered attack with the experiment's
    budgets); ``extra``: more columns per batch (the defence's); ``shared``: the batches' attack-independent values,
    held for the next attack (default: made for this attack alone). Images whose contribution map stays outside the
    completeness tolerance are flagged and enter no statistic.
    """
    cfg, data = ctx.config, ctx.data
    shared = SharedBatches() if shared is None else shared
    attack = attack or cfg.budgeted_attack(name, ctx.model)
    kinds = map_kinds(attack, cfg)
    shape = tuple(ctx.scale or data.image_shape[1:])
    summary = AttackSummary(name, attack.norm, images_for(attack, cfg, len(data)),
                            {k: [] for k in kinds},
                            {k: MapAccumulator(data.num_classes, shape) for k in ("roi", *kinds)}, defaultdict(list))
    panel = ctx.panel if name == cfg.defence_attack else []

    def compute(b: int, sl: slice) -> BatchStages:
        """Every cached stage of batch b: the attack, the clean maps, the attack maps, the extra columns."""
        result = ctx.attack(ATTACK.at(name), attack, b, sl)
        maps = {kind: attack_maps(ctx, name, kind, b, sl, result.x_adv) for kind in kinds}
        stages = BatchStages(result, ctx.importance_of(b), ctx.clean(b).pred,
                             {m: ctx.panel_maps(m, b) for m in panel}, maps)
        if extra is not None:
            stages.extra = extra.compute(name, b, sl, result.x_adv, maps[kinds[0]].map)
        return stages

    def accumulate(b: int, sl: slice, stages: BatchStages) -> None:
        """Rows, accumulators and kept examples of batch b, in batch order."""
        result, size = stages.result, sl.stop - sl.start
        pred, y, ids = stages.pred[:size], data.labels[sl], data.ids[sl]
        success = (pred == y) & result.success
        images = shared.get(sl, lambda: batch_images(ctx, sl, ctx.at_scale(stages.importance[:size])))
        composition, references, clean = images.composition, images.references, images.clean
        imp = clean.importance  # the clean maps at the statistics' scale, pooled once for every attack
        panel_maps = {m: ctx.at_scale(stages.panel[m][:size]) for m in panel}
        cols: dict[str, torch.Tensor] = {}
        for kind in kinds:
            maps = stages.maps[kind]
            amap = ctx.at_scale(maps.map)
            stats, roi, roa = region_rows(clean, amap, ids, cfg)
            cols.update({f"{kind}:{k}": v for k, v in stats.items()})
            ok = success
            if maps.completeness_error is not None and maps.flagged is not None:
                cols[f"{kind}:completeness_error"] = maps.completeness_error
                cols[f"{kind}:flagged"] = maps.flagged
                ok = success & ~maps.flagged
            keep_first_images(summary.stores[kind], cfg.permutation_images, ok,
                              Store(imp, amap, roi, roa, y, composition, ids, references, panel_maps))
            summary.frequency[kind].update(roa[ok].float(), y[ok])
            if kind == kinds[0]:  # the main attack map: figure examples, the RoI frequency
                summary.frequency["roi"].update(roi[ok].float(), y[ok])
                keep_across_classes(summary.examples, cfg.figure_images, ok, len(ctx.data.class_names),
                                    x=lambda chosen: data.images(chosen + sl.start),
                                    x_adv=result.x_adv, importance=stages.importance[:size], attack=maps.map,
                                    roi=ctx.at_input(roi), roa=ctx.at_input(roa), labels=y)
        if extra is not None:
            more = extra.columns(name, stages.extra, y)
            cols.update(more.columns)
            summary.accuracies.update(more.accuracies)
        rows.extend(batch_rows(name, attack.norm, ids, y, pred, result, cols))

    def accumulate_rows(b: int, sl: slice, stages: BatchStages) -> None:
        with ctx.rundir.passes.phase("rows"):
            accumulate(b, sl, stages)

    ctx.each_batch(compute, desc=f"{name}: attack, maps{', defence' if extra else ''}",
                   slices=list(batch_slices(summary.n, cfg.batch_size)), then=accumulate_rows)
    return summary


def batch_rows(name: str, norm: str, ids: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, result: AttackResult,
               cols: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """The per-image rows of one attack and batch: outcome, norms, then the map and the extra columns."""
    base = {"index": ids, "label": y, "clean_pred": pred, "correct": pred == y, "success": result.success,
            "adv_pred": result.adv_pred, "l0": result.l0, "l2": result.l2, "linf": result.linf,
            "queries": result.queries}
    return per_image_rows({**base, **cols}, attack=name, norm=norm)
