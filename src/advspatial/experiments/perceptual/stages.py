"""The perceptual experiment's context and its cached stages, batch by batch, so that ``--resume`` completes an
interrupted run with identical numbers.

Every cached step is one stage object below (each owns its key in the run directory):

* the shared clean pass (``clean-pass/batch-*``, predictions) and :data:`CAM` (``cam/batch-*``): the class
  activation map of the *true* class on the clean image, the Region of Importance (RoI) side;
* ``ATTACK.at(name)`` (``attack/ssim-ball/batch-*``, ``attack/pgd/batch-*``): each attack on the ``n`` images;
* :func:`budget_stage`: an attack at one budget on the calibration images (``calibration/eps-*`` for PGD, the
  calibration's and the curve's; ``curve/ssim-ball/alpha-*`` for the SSIM-ball attack's curve, with
  ``-alpha_l-*`` where the budget raises the luminance bound);
* ``GEOMETRY.at(name)`` (``geometry/<attack>/batch-*``): the geometry null of each attack.

The SSIMs of an attack's images are computed from its stage (cheap and deterministic), never cached beside it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...analysis.ssim import ssim
from ...attacks import Attack, AttackResult, make_attack
from ...attacks.ssim_ball import window_ssim
from ...maps import importance_map
from ...progress import progress_bar
from ...regions import binarize, overlap_statistics
from ...rundir import RunDir
from ...runtime import batch_slices
from ...statistics.estimates import finite_mean
from ...statistics.store import Store
from ..measurement import colocation
from ..context import ExperimentContext, prepare_context
from ..measurement.roi import resolve_importance
from ..measurement.rows import keep_first, keep_first_images, per_image_rows
from ..stage import ATTACK, AttackStage, Stage
from .config import ATTACKS, STATS, PerceptualConfig
from .findings import CurvePoint
from .ssim_matching import (
    Calibration, bisect_eps, capped_by_curve, geometry_null, minimal_distortion, ssim_distortion,
)

#: the CAM of the true class on the clean images of a batch (the RoI side)
CAM = Stage[torch.Tensor]("cam")
#: PGD at one budget on the calibration images (the calibration's runs, reused by the curve)
CALIBRATION = AttackStage("calibration")
#: an attack at one budget of its success-rate vs SSIM curve on the calibration images
CURVE = AttackStage("curve")
#: the geometry null's images of an attack: ``GEOMETRY.at(name)``
GEOMETRY = Stage[torch.Tensor]("geometry")


def budget_stage(config: PerceptualConfig, name: str, budget: float) -> AttackStage:
    """The stage of attack ``name`` at ``budget`` on the calibration images: PGD at eps ``calibration/eps-…``,
    the SSIM-ball attack at alpha ``curve/ssim-ball/alpha-…`` (budgets written at a fixed precision), its key naming
    the luminance bound too where the budget raises it (:meth:`PerceptualConfig.curve_alpha_l`), so that a stage
    saved under the run's own ``alpha_l`` is never read as one under a tighter bound."""
    if name == "pgd":
        return CALIBRATION.at(f"eps-{budget:.8f}")
    alpha_l = config.curve_alpha_l(budget)
    raised = f"-alpha_l-{alpha_l:.6f}" if alpha_l != config.alpha_l else ""
    return CURVE.at(name, f"alpha-{budget:.6f}{raised}")


@dataclass
class Context(ExperimentContext[PerceptualConfig]):
    """The shared context plus the CAM method this run resolved (``auto`` picks by head type) and why."""

    importance: str = ""
    importance_reason: str = ""

    @property
    def method(self) -> str:
        """The CAM method in use (the resolved one; the configured name when none was resolved)."""
        return self.importance or self.config.importance


def perceptual_context(config: PerceptualConfig, rundir: RunDir) -> Context:
    """The shared context with the CAM method resolved (``auto``: by the model's head type)."""
    base = prepare_context(config, rundir)
    probe, _, _ = base.batch(slice(0, 1))
    method, reason = resolve_importance(config.importance, base.model, probe)
    return base.derive(Context, importance=method, importance_reason=reason)


# -- building blocks (unit-tested on tiny models) -----------------------------------

def ssim_attack(model: nn.Module, config: PerceptualConfig, alpha: float | None = None) -> Attack:
    """The SSIM-ball attack with the experiment's parameters (``alpha``: a curve budget, its contrast-structure bound,
    with the luminance bound :meth:`PerceptualConfig.curve_alpha_l` gives it)."""
    alpha_l = config.alpha_l if alpha is None else config.curve_alpha_l(alpha)
    return make_attack("ssim-ball", model, alpha=config.alpha if alpha is None else alpha, beta=config.beta,
                       luminance=config.luminance, alpha_l=alpha_l, steps=config.steps, loss=config.loss,
                       step_size=config.step_size, window=config.window_value(), rounds=config.rounds,
                       seed=config.seed)


def pgd_attack(model: nn.Module, eps: float, steps: int, seed: int, loss: str = "ce") -> Attack:
    """L-inf PGD with budget ``eps`` (> 0), step ``2.5·eps/steps`` (Madry et al.) and a seeded random start."""
    return make_attack("pgd", model, eps=eps, alpha="auto", steps=steps, seed=seed, loss=loss)


def map_statistics(
    cam: torch.Tensor, distortion: torch.Tensor, fraction: float, seed: int, sample_ids: torch.Tensor,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Per-image statistics of the SSIM map vs the CAM: ({name: (N,)}, CAM region, SSIM-map region).

    Regions are the top ``fraction`` of each map (strictly positive pixels,
    seeded tie breaking); names are the keys of :data:`STATS`, plus the number of
    pixels tied at each cut.
    """
    cam_b = binarize(cam, fraction=fraction, seed=seed, sample_ids=sample_ids)
    dist_b = binarize(distortion, fraction=fraction, seed=seed + 1, sample_ids=sample_ids)
    stats = overlap_statistics(cam, distortion, cam_b.mask, dist_b.mask)
    cols = {name: stats[key].float() for name, key in STATS.items()}
    cols["tied_cam"] = cam_b.tied_at_cut
    cols["tied_ssim_map"] = dist_b.tied_at_cut
    return cols, cam_b.mask, dist_b.mask


# -- the clean pass and the SSIM-ball attack ------------------------------------------

def clean_cam(ctx: Context, b: int) -> torch.Tensor:
    """The CAM of the true class on the clean images of batch b (the stage :data:`CAM`)."""

    def compute() -> torch.Tensor:
        x, y, ids = ctx.batch(ctx.slices[b])
        return importance_map(ctx.method, ctx.model, x, target="true", y=y, batch_size=len(x), sample_ids=ids).cpu()

    return CAM.get(ctx.rundir, compute, b)


def clean_pass(ctx: Context) -> torch.Tensor:
    """(n,) bool: the images the model classifies correctly; the CAM of every batch computed on the way."""

    def batch(b: int, sl: slice) -> torch.Tensor:
        correct = ctx.clean(b).correct(ctx.data.labels[sl])
        clean_cam(ctx, b)
        return correct

    return torch.cat(ctx.each_batch(batch, desc="clean: predictions, CAM of the true class"))


def ssim_ball_pass(ctx: Context) -> torch.Tensor:
    """(n,) the SSIM of every image under the SSIM-ball attack (its stage on the ``n`` images)."""
    attack = ssim_attack(ctx.model, ctx.config)

    def batch(b: int, sl: slice) -> torch.Tensor:
        return ssim(ctx.data.images(sl), ctx.attack(ATTACK.at("ssim-ball"), attack, b, sl).x_adv)

    return torch.cat(ctx.each_batch(batch, desc="ssim-ball attack"))


# -- the PGD budget at matched mean SSIM, and the curves ---------------------------------

def calibration_slices(ctx: Context) -> list[slice]:
    """The batches of the calibration images (the first ``calibration_n``: a prefix of the run's batches)."""
    return list(batch_slices(min(ctx.config.calibration_n, len(ctx.data)), ctx.config.batch_size))


def at_budget(ctx: Context, name: str, budget: float, b: int, sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """(success, SSIM) of attack ``name`` at ``budget`` on calibration batch ``b`` (``sl``), from its stage;
    the main SSIM-ball budget reads the main attack's stage (per-sample results: a batch's prefix is exact) where
    the curve's luminance bound there is the main attack's."""
    cfg = ctx.config
    if name == "ssim-ball" and budget == cfg.alpha and cfg.curve_alpha_l(budget) == cfg.alpha_l:
        res = ctx.attack(ATTACK.at(name), ssim_attack(ctx.model, cfg), b)
        k = sl.stop - sl.start
        return res.success[:k], ssim(ctx.data.images(ctx.slices[b]), res.x_adv)[:k]
    attack = (pgd_attack(ctx.model, budget, cfg.steps, cfg.seed, cfg.loss) if name == "pgd"
              else ssim_attack(ctx.model, cfg, budget))
    res = ctx.attack(budget_stage(cfg, name, budget), attack, b, sl)
    return res.success, ssim(ctx.data.images(sl), res.x_adv)


def budget_results(ctx: Context, name: str, budget: float, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(success, SSIM) of attack ``name`` at ``budget`` on every calibration image."""
    parts = ctx.each_batch(lambda b, sl: at_budget(ctx, name, budget, b, sl), slices=calibration_slices(ctx),
                           desc=desc)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def calibrate(ctx: Context, ssim_ball_values: torch.Tensor) -> Calibration:
    """The PGD budget whose mean SSIM on the calibration images matches the SSIM-ball attack's."""
    cfg = ctx.config
    target = float(ssim_ball_values[: min(cfg.calibration_n, len(ctx.data))].double().mean())
    with progress_bar(total=cfg.calibration_iters + 1, desc="calibrating the PGD budget", disable=not cfg.progress,
                      unit="run") as bar:

        def evaluate(eps: float) -> float:
            bar.update(1)
            _, values = budget_results(ctx, "pgd", eps, f"pgd eps {eps:.4g} (calibration)")
            return float(values.double().mean())

        return bisect_eps(evaluate, target, cfg.eps_max, cfg.calibration_iters, cfg.ssim_tolerance)


@dataclass
class Curves:
    """Each attack at several budgets on the calibration images: per budget the mean SSIM and success rate,
    and per image (budgets x images) whether it was fooled (correct and attacked successfully) and its SSIM."""

    points: dict[str, list[CurvePoint]]
    fooled: dict[str, torch.Tensor]
    ssims: dict[str, torch.Tensor]

    def minimal_distortion(self) -> dict[str, torch.Tensor]:
        """Per attack and image, the highest SSIM among the budgets that fool it (NaN: none does)."""
        return {name: minimal_distortion(self.fooled[name], self.ssims[name]) for name in self.points}

    def capped(self) -> dict[str, torch.Tensor]:
        """Per attack and image, whether its least distorting budget already fools it (:func:`capped_by_curve`)."""
        return {name: capped_by_curve(self.fooled[name], self.ssims[name]) for name in self.points}


def curve_budgets(config: PerceptualConfig, calibration: Calibration) -> dict[str, list[float]]:
    """The budgets of each curve: SSIM-ball alphas (the main one included), PGD eps (the calibrated one,
    every budget the calibration tried, and multiples of the calibrated one capped at eps_max)."""
    eps = {calibration.eps, *(h[0] for h in calibration.history),
           *(min(f * calibration.eps, config.eps_max) for f in config.curve_eps_factors)}
    return {"ssim-ball": sorted({config.alpha, *config.curve_alphas}), "pgd": sorted(e for e in eps if e > 0)}


def curves_pass(ctx: Context, calibration: Calibration, correct: torch.Tensor) -> Curves:
    """Success rate vs mean SSIM of both attacks over their budgets on the calibration images (``correct``:
    (n,) whether the model classifies each image correctly)."""
    cfg = ctx.config
    correct = correct[: min(cfg.calibration_n, len(ctx.data))]
    curves = Curves({}, {}, {})
    budgets = curve_budgets(cfg, calibration)
    with progress_bar(total=sum(len(v) for v in budgets.values()), desc="success rate vs SSIM curves",
                      disable=not cfg.progress, unit="budget") as bar:
        for name, values in budgets.items():
            rows_f, rows_s = [], []
            for budget in values:
                success, image_ssim = budget_results(ctx, name, budget, f"{name} at {budget:.4g}")
                hit = correct & success
                rows_f.append(hit)
                rows_s.append(image_ssim)
                curves.points.setdefault(name, []).append(CurvePoint(
                    budget, float(image_ssim.double().mean()),
                    finite_mean([float(h) for h, c in zip(hit, correct, strict=True) if c])))
                bar.update(1)
            curves.fooled[name], curves.ssims[name] = torch.stack(rows_f), torch.stack(rows_s)
    return curves


# -- the main pass: PGD at the calibrated budget beside the SSIM-ball attack; SSIM maps vs CAM ----------------

@dataclass
class AttackStore:
    """Per attack: the inputs of the statistics engine for the first successful images, and the SSIMs.

    ``kept`` holds, per batch, what :func:`advspatial.statistics.store.compare_store` reads
    (:class:`~advspatial.statistics.store.Store`): ``importance`` (the CAM), ``attack`` (the 1 − SSIM map),
    ``roi`` / ``roa`` (their top regions), ``labels`` and ``composition`` (the clean image's foreground share).
    """

    kept: list[Store] = field(default_factory=list)
    ssim_values: list[torch.Tensor] = field(default_factory=list)

    def images(self) -> int:
        return sum(len(part) for part in self.kept)

    def store(self) -> Store:
        """The kept images, concatenated."""
        return Store.concatenated(self.kept)


@dataclass
class Examples:
    """The first images every attack fooled, for the side-by-side figure: the clean side (``x``, ``labels``,
    ``cam``, ``cam_region``) and per attack its side (``x_adv``, ``dist``, ``dist_region``, ``adv_pred``, ``ssim``)."""

    clean: dict[str, list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list))
    attacks: dict[str, dict[str, list[torch.Tensor]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))

    def collect(self, limit: int, x: torch.Tensor, y: torch.Tensor, cam: torch.Tensor, cam_region: torch.Tensor,
                found: dict[str, dict[str, torch.Tensor]]) -> None:
        """Keep the images of one batch that every attack fooled, up to ``limit`` in all."""
        both = torch.stack([f["ok"] for f in found.values()]).all(0)
        for name, f in found.items():
            keep_first(self.attacks[name], limit, both, labels=y,
                       **{k: f[k] for k in ("x_adv", "dist", "dist_region", "adv_pred", "ssim")})
        keep_first(self.clean, limit, both, x=x, labels=y, cam=cam, cam_region=cam_region)


@dataclass
class MainPass:
    """What the main pass hands on: the per-image rows of both attacks, the engine's inputs, the examples."""

    rows: list[dict[str, Any]]
    stores: dict[str, AttackStore]
    examples: Examples


@dataclass
class BatchStages:
    """The cached stages of one batch: clean predictions and CAM, each attack's result and geometry null."""

    pred: torch.Tensor
    cam: torch.Tensor
    results: dict[str, AttackResult]
    nulls: dict[str, torch.Tensor]


def main_pass(ctx: Context, eps: float) -> MainPass:
    """PGD at ``eps`` batch by batch; per-image rows of both attacks; the engine's inputs and examples."""
    cfg = ctx.config
    attacks = {"ssim-ball": ssim_attack(ctx.model, cfg),
               "pgd": pgd_attack(ctx.model, eps, cfg.steps, cfg.seed, cfg.loss)}
    out = MainPass([], {name: AttackStore() for name in ATTACKS}, Examples())

    def compute(b: int, sl: slice) -> BatchStages:
        results = {name: ctx.attack(ATTACK.at(name), attack, b, sl) for name, attack in attacks.items()}
        x = ctx.data.images(sl)
        nulls = {name: geometry_null_batch(ctx, name, attack, b, sl, ssim(x, results[name].x_adv))
                 for name, attack in attacks.items()}
        return BatchStages(ctx.clean(b).pred, clean_cam(ctx, b), results, nulls)

    def accumulate(b: int, sl: slice, stages: BatchStages) -> None:
        x, y, ids = ctx.data.images(sl), ctx.data.labels[sl], ctx.data.ids[sl]
        correct = stages.pred == y
        composition = colocation.composition(x)
        found: dict[str, dict[str, torch.Tensor]] = {}
        for name in attacks:
            res = stages.results[name]
            image_ssim = ssim(x, res.x_adv)
            dist = ssim_distortion(x, res.x_adv)
            cols, cam_region, dist_region = map_statistics(stages.cam, dist, cfg.fraction, cfg.seed, ids)
            cols.update(geometry_columns(x, ids, stages.nulls[name], stages.cam, cfg))
            ok = correct & res.success
            columns = {"index": ids, "label": y, "clean_pred": stages.pred, "correct": correct,
                       "success": res.success, "adv_pred": res.adv_pred, "ssim": image_ssim,
                       "ssim_window": window_ssim(x, res.x_adv, cfg.window_value()), "l2": res.l2,
                       "linf": res.linf, **cols}
            out.rows.extend(per_image_rows(columns, attack=name))
            keep_first_images(out.stores[name].kept, cfg.permutation_images, ok,
                              Store(stages.cam, dist, cam_region, dist_region, y, composition))
            out.stores[name].ssim_values.append(image_ssim)
            found[name] = {"ok": ok, "x_adv": res.x_adv, "dist": dist, "dist_region": dist_region,
                           "adv_pred": res.adv_pred, "ssim": image_ssim}
        out.examples.collect(cfg.figure_images, x, y, stages.cam, cam_region, found)

    ctx.each_batch(compute, desc="pgd at matched SSIM; SSIM maps vs CAM", then=accumulate)
    return out


def geometry_null_batch(ctx: Context, name: str, attack: Attack, b: int, sl: slice,
                        target_ssim: torch.Tensor) -> torch.Tensor:
    """The geometry null of batch b (the stage ``GEOMETRY.at(name)``): a random feasible perturbation of the
    attack's set with the attack's per-image SSIM (:func:`.ssim_matching.geometry_null`)."""

    def compute() -> torch.Tensor:
        x, _, ids = ctx.batch(sl)
        return geometry_null(name, attack, x, target_ssim, ids, ctx.config.seed).cpu()

    return GEOMETRY.at(name).get(ctx.rundir, compute, b)


def geometry_columns(x: torch.Tensor, ids: torch.Tensor, x_null: torch.Tensor, cam: torch.Tensor,
                     config: PerceptualConfig) -> dict[str, torch.Tensor]:
    """The geometry null's SSIM and the share of its 1 − SSIM mass in the CAM region."""
    cols, _, _ = map_statistics(cam, ssim_distortion(x, x_null), config.fraction, config.seed, ids)
    return {"geometry_energy_in_cam": cols["energy_in_cam"], "geometry_ssim": ssim(x, x_null)}
