"""The maps stage of the spatial experiment: per attack and batch, the attack maps (RoA side), the regions,
the four-part segregation and the overlap statistics per image; the successful images kept for the
statistics (bounded memory), the per-class region frequencies and the figure examples (:class:`AttackSummary`);
and, when the defence runs, its per-image columns (:func:`~.defence.defence_batch`).

Images whose contribution map stays outside the completeness tolerance are flagged and enter no statistic.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from ...attacks import Attack, AttackResult
from ...defense.neutralize import NeutralizedModel
from ...maps import attack_map
from ...regions import MapAccumulator, binarize, overlap_statistics, segregate
from ...regions.references import IMAGE_REFERENCES, reference_maps
from ...runtime import batch_slices
from .. import colocation
from ..rows import keep_first, per_image_rows
from .attack_stage import attack_batch, build_attack, images_for
from .config import MeasurementConfig, contribution_kw
from .context import Context, panel_batch, panel_methods, roi_batch
from .defence import defence_batch, split_columns

PARTS = ("both", "roi_only", "roa_only", "neither")


def map_kinds(attack: Attack, config: MeasurementConfig) -> list[str]:
    """Attack maps computed for an attack: the configured one, plus magnitude for L2 attacks.

    An L0 attack gets one map only: for a one-pixel perturbation every map marks
    the same pixel, and duplicate rows would count one result twice.
    """
    kinds = [config.attack_map]
    if attack.norm == "l2" and "magnitude" not in kinds:
        kinds.append("magnitude")
    return kinds


def maps_batch(ctx: Context, name: str, kind: str, b: int, sl: slice, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """Attack map ``kind`` of attack ``name`` on batch b, with its completeness check where it has one (cached)."""

    def compute() -> dict[str, torch.Tensor]:
        x, y, _ = ctx.batch(sl)
        kw = contribution_kw(ctx.config) if kind == "contribution" else {}
        amap = attack_map(kind, ctx.model, x, x_adv.to(ctx.device), y, **kw)
        out = {"map": amap.map.cpu()}
        if amap.completeness_error is not None:
            if amap.flagged is None or amap.steps_used is None:  # the AttributeError that .cpu() on None raised
                raise AttributeError(f"attack map {kind!r} has a completeness_error but no flagged or steps_used")
            out["completeness_error"] = amap.completeness_error.cpu()
            out["flagged"] = amap.flagged.cpu()
            out["steps_used"] = amap.steps_used.cpu()
        return out

    return ctx.rundir.cached(f"maps/{name}/{kind}/batch-{b:05d}", compute)


def region_rows(
    imp: torch.Tensor, amap: torch.Tensor, ids: torch.Tensor, config: MeasurementConfig
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Per-image statistics and part fractions; returns (columns, roi, roa)."""
    roi_b = binarize(imp, fraction=config.fraction, seed=config.seed, sample_ids=ids)
    roa_b = binarize(amap, fraction=config.fraction, seed=config.seed + 1, sample_ids=ids)
    stats = overlap_statistics(imp, amap, roi_b.mask, roa_b.mask)
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


@dataclass
class AttackSummary:
    """What the report needs of one attack, beyond the per-image rows.

    ``stores[kind]`` keeps the first ``permutation_images`` successful,
    completeness-checked images (maps, regions, labels, composition, ids and,
    for the defence attack, the panel explainers' maps) for the statistics;
    ``frequency`` accumulates the regions per class (P(pixel in region | class));
    ``draws`` the per-draw correctness (B, draws) of each random control.
    """

    name: str
    norm: str
    n: int
    stores: dict[str, dict[str, list[torch.Tensor]]]
    frequency: dict[str, MapAccumulator]
    examples: dict[str, list[torch.Tensor]]
    draws: dict[str, list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list))

    def store(self, kind: str) -> dict[str, torch.Tensor]:
        """The kept images of one attack map, concatenated."""
        return {k: torch.cat(v) for k, v in self.stores[kind].items() if v}

    def kept(self, kind: str) -> int:
        """How many images of one attack map enter the statistics."""
        return sum(len(t) for t in self.stores[kind].get("labels", []))

    def kinds(self) -> list[str]:
        """The attack maps of this attack, the main one first."""
        return list(self.stores)


def process_attack(
    ctx: Context, name: str, defences: dict[str, NeutralizedModel] | None, rows: list[dict[str, Any]],
    attack: Attack | None = None,
) -> AttackSummary:
    """Run one attack over its images; append per-image rows; collect what aggregates need.

    ``defences`` None skips the defence columns (the ``advspatial maps`` command). ``attack``: the attack
    object to run under ``name`` (default: the registered attack with the experiment's budgets).
    Images whose contribution map stays outside the completeness tolerance are
    flagged and enter no statistic.
    """
    cfg, data = ctx.config, ctx.data
    attack = attack or build_attack(name, ctx.model, cfg)
    n_a = images_for(attack, cfg, len(data))
    kinds = map_kinds(attack, cfg)
    shape = tuple(ctx.scale or data.image_shape[1:])
    summary = AttackSummary(name, attack.norm, n_a, {k: defaultdict(list) for k in kinds},
                            {k: MapAccumulator(data.num_classes, shape) for k in ("roi", *kinds)}, defaultdict(list))
    panel = panel_methods(ctx) if name == cfg.defence_attack else []

    def compute(b: int, sl: slice) -> dict[str, Any]:
        """Every cached stage of batch b: the attack, the clean maps, the attack maps, the defence columns."""
        result = attack_batch(ctx, name, attack, b, sl)
        out: dict[str, Any] = {"result": result, "clean": roi_batch(ctx, b),
                               "panel": {m: panel_batch(ctx, m, b) for m in panel},
                               "maps": {kind: maps_batch(ctx, name, kind, b, sl, result.x_adv) for kind in kinds}}
        if defences is not None:
            out["defence"] = defence_batch(ctx, name, b, sl, result.x_adv, out["maps"][kinds[0]]["map"], defences)
        return out

    def accumulate(b: int, sl: slice, stages: dict[str, Any]) -> None:
        """Rows, accumulators and kept examples of batch b, in batch order."""
        result, clean = stages["result"], stages["clean"]
        size = sl.stop - sl.start
        imp, pred = ctx.at_scale(clean["importance"][:size]), clean["pred"][:size]
        y, ids = data.labels[sl], data.ids[sl]
        success = (pred == y) & result.success
        x = data.images(sl)
        extra = {"composition": colocation.composition(x), "ids": ids,
                 **{f"panel:{m}": ctx.at_scale(stages["panel"][m][:size]) for m in panel},
                 **{f"ref:{r}": ctx.at_scale(m) for r, m in reference_maps(x, names=IMAGE_REFERENCES).items()}}
        cols: dict[str, torch.Tensor] = {}
        for kind in kinds:
            maps = stages["maps"][kind]
            amap = ctx.at_scale(maps["map"])
            stats, roi, roa = region_rows(imp, amap, ids, cfg)
            cols.update({f"{kind}:{k}": v for k, v in stats.items()})
            ok = success
            if "completeness_error" in maps:
                cols[f"{kind}:completeness_error"] = maps["completeness_error"]
                cols[f"{kind}:flagged"] = maps["flagged"]
                ok = success & ~maps["flagged"]
            keep_first(summary.stores[kind], cfg.permutation_images, ok, importance=imp, attack=amap, roi=roi,
                       roa=roa, labels=y, **extra)
            summary.frequency[kind].update(roa[ok].float(), y[ok])
            if kind == kinds[0]:  # the main attack map: figure examples, the RoI frequency
                summary.frequency["roi"].update(roi[ok].float(), y[ok])
                collect_examples(summary.examples, x, result.x_adv, clean["importance"][:size], maps["map"],
                                 ctx.at_input(roi), ctx.at_input(roa), y, ok, cfg)
        if defences is not None:
            row_cols, draws = split_columns(stages["defence"], y)
            cols.update(row_cols)
            for key, hits in draws.items():
                summary.draws[key].append(hits)
        rows.extend(batch_rows(name, attack.norm, ids, y, pred, result, cols))

    ctx.each_batch(compute, desc=f"{name}: attack, maps, defence", slices=list(batch_slices(n_a, cfg.batch_size)),
                   then=accumulate)
    return summary


def collect_examples(store: dict[str, list[torch.Tensor]], x: torch.Tensor, x_adv: torch.Tensor, imp: torch.Tensor,
                     amap: torch.Tensor, roi: torch.Tensor, roa: torch.Tensor, y: torch.Tensor, ok: torch.Tensor,
                     cfg: MeasurementConfig) -> None:
    """Keep the first ``figure_images`` successful images with their maps and regions (the regions figure)."""
    keep_first(store, cfg.figure_images, ok, x=x, x_adv=x_adv, importance=imp, attack=amap, roi=roi, roa=roa,
               labels=y)


def batch_rows(name: str, norm: str, ids: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, result: AttackResult,
               cols: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """The per-image rows of one attack and batch: outcome, norms, then the map and defence columns."""
    base = {"index": ids, "label": y, "clean_pred": pred, "correct": pred == y, "success": result.success,
            "adv_pred": result.adv_pred, "l0": result.l0, "l2": result.l2, "linf": result.linf,
            "queries": result.queries}
    return per_image_rows({**base, **cols}, attack=name, norm=norm)
