"""The main pass of the perceptual experiment, batch by batch: L-inf PGD at the calibrated budget
(``attack/pgd/batch-*``) beside the SSIM-ball attack's stage, each attack's geometry null
(``geometry/<attack>/batch-*``, :mod:`.controls`), the 1 − SSIM map against the CAM per image, the per-image
rows, and what the statistics and figures keep (:class:`AttackStore`, the side-by-side examples)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from ...analysis.ssim import ssim
from ...attacks import Attack
from .. import colocation
from ..rows import keep_first, per_image_rows
from .config import ATTACKS
from .controls import geometry_null
from .stages import Context, attack_stage, clean_batch, map_statistics, pgd_attack, ssim_attack, ssim_distortion


@dataclass
class AttackStore:
    """Per attack: the inputs of the statistics engine for the first successful images, and the SSIMs.

    ``kept`` holds, per batch, the keys :func:`advspatial.experiments.colocation.compare_store`
    reads: ``importance`` (the CAM), ``attack`` (the 1 − SSIM map), ``roi`` / ``roa`` (their
    top regions), ``labels`` and ``composition`` (the clean image's foreground share).
    """

    kept: dict[str, list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list))
    ssim_values: list[torch.Tensor] = field(default_factory=list)

    def images(self) -> int:
        return sum(len(t) for t in self.kept.get("labels", []))

    def store(self) -> dict[str, torch.Tensor]:
        """The kept images, concatenated."""
        return {k: torch.cat(v) for k, v in self.kept.items() if v}


def batch_rows(name: str, ids: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, res: dict[str, torch.Tensor],
               cols: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """The per-image rows of one attack and batch: outcome, SSIMs, norms, then the map statistics."""
    columns = {"index": ids, "label": y, "clean_pred": pred, "correct": pred == y, "success": res["success"],
               "adv_pred": res["adv_pred"], "ssim": res["ssim"], "ssim_window": res["ssim_window"], "l2": res["l2"],
               "linf": res["linf"], **cols}
    return per_image_rows(columns, attack=name)


def process_batches(ctx: Context, eps: float,
                    rows: list[dict[str, Any]]) -> tuple[dict[str, AttackStore], dict[str, list]]:
    """PGD at ``eps`` batch by batch; per-image rows of both attacks; the engine's inputs and examples."""
    cfg = ctx.config
    attacks = {"ssim-ball": ssim_attack(ctx.model, cfg),
               "pgd": pgd_attack(ctx.model, eps, cfg.steps, cfg.seed, cfg.loss)}
    stores = {name: AttackStore() for name in ATTACKS}
    examples: dict[str, list] = defaultdict(list)

    def compute(b: int, sl: slice) -> dict[str, Any]:
        """The cached stages of batch b: clean maps, both attacks, their geometry nulls."""
        results = {name: attack_stage(ctx, f"attack/{name}/batch-{b:05d}", attack, sl)
                   for name, attack in attacks.items()}
        nulls = {name: geometry_null_batch(ctx, name, attack, b, sl, results[name]["ssim"])
                 for name, attack in attacks.items()}
        return {"clean": clean_batch(ctx, b), "results": results, "nulls": nulls}

    def accumulate(b: int, sl: slice, stages: dict[str, Any]) -> None:
        clean = stages["clean"]
        x, y, ids = ctx.data.images(sl), ctx.data.labels[sl], ctx.data.ids[sl]
        correct = clean["pred"] == y
        composition = colocation.composition(x)
        found: dict[str, dict[str, torch.Tensor]] = {}
        for name in attacks:
            res = stages["results"][name]
            dist = ssim_distortion(x, res["x_adv"])
            cols, cam_region, dist_region = map_statistics(clean["cam"], dist, cfg.fraction, cfg.seed, ids)
            cols.update(geometry_columns(ctx, sl, stages["nulls"][name], clean["cam"]))
            ok = correct & res["success"]
            rows.extend(batch_rows(name, ids, y, clean["pred"], res, cols))
            keep_first(stores[name].kept, cfg.permutation_images, ok, importance=clean["cam"], attack=dist,
                       roi=cam_region, roa=dist_region, labels=y, composition=composition)
            stores[name].ssim_values.append(res["ssim"])
            found[name] = {"ok": ok, "x_adv": res["x_adv"], "dist": dist, "dist_region": dist_region,
                           "adv_pred": res["adv_pred"], "ssim": res["ssim"]}
        collect_examples(examples, cfg.figure_images, x, y, clean["cam"], cam_region, found)

    ctx.each_batch(compute, desc="pgd at matched SSIM; SSIM maps vs CAM", then=accumulate)
    return stores, examples


def geometry_null_batch(ctx: Context, name: str, attack: Attack, b: int, sl: slice,
                        target_ssim: torch.Tensor) -> torch.Tensor:
    """The geometry null of batch b (cached): a random feasible perturbation of the attack's set with the
    attack's per-image SSIM (:mod:`.controls`)."""

    def compute() -> dict[str, torch.Tensor]:
        x, _, ids = ctx.batch(sl)
        return {"x_null": geometry_null(name, attack, x, target_ssim, ids, ctx.config.seed).cpu()}

    return ctx.rundir.cached(f"geometry/{name}/batch-{b:05d}", compute)["x_null"]


def geometry_columns(ctx: Context, sl: slice, x_null: torch.Tensor, cam: torch.Tensor) -> dict[str, torch.Tensor]:
    """The geometry null's SSIM and the share of its 1 − SSIM mass in the CAM region."""
    x = ctx.data.images(sl)
    cols, _, _ = map_statistics(cam, ssim_distortion(x, x_null), ctx.config.fraction, ctx.config.seed, ctx.data.ids[sl])
    return {"geometry_energy_in_cam": cols["energy_in_cam"], "geometry_ssim": ssim(x, x_null)}


def collect_examples(examples: dict[str, list], limit: int, x: torch.Tensor, y: torch.Tensor, cam: torch.Tensor,
                     cam_region: torch.Tensor, found: dict[str, dict[str, torch.Tensor]]) -> None:
    """Keep the first ``limit`` images that every attack fooled (for the side-by-side figure)."""
    both = torch.stack([f["ok"] for f in found.values()]).all(0)
    store: dict[str, list[torch.Tensor]] = examples
    values = {"x": x, "labels": y, "cam": cam, "cam_region": cam_region}
    for name, f in found.items():
        values.update({f"{name}:{k}": f[k] for k in ("x_adv", "dist", "dist_region", "adv_pred", "ssim")})
    keep_first(store, limit, both, **values)
