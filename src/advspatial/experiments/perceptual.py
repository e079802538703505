"""Experiment ``perceptual``: the SSIM-ball attack vs L-inf PGD at matched mean SSIM, and where each
one lowers SSIM compared with where the model looks (METHODS.md §3, with §1's gate and inference).

Stages, each streamed batch by batch and saved in the run directory so that
``--resume`` completes an interrupted run with identical numbers:

1. ``clean/batch-*``: clean predictions and the class activation map (``importance``:
   ``auto`` = Grad-CAM for a GAP+linear head, HiResCAM for a flatten/FC head) of the
   *true* class on the clean image -- the Region of Importance (RoI) side;
2. ``attack/ssim-ball/batch-*``: the SSIM-ball attack (luminance kept by SSIM's own
   luminance term by default) and the SSIM of every adversarial image, both the
   reported (Gaussian-window) SSIM and the window SSIM its constraint bounds;
3. ``calibration/eps-*/batch-*``: the PGD budget at matched mean SSIM (below); both
   attacks use the same loss (``loss``, margin) and step budget (``steps``);
4. ``curve/...``: fooling rate vs mean SSIM of both attacks at several budgets on the
   calibration images, and per image the highest SSIM at which each fools it
   (:mod:`.perceptual_controls`);
5. ``gate/<method>/...``: the faithfulness gate of that CAM (:func:`advspatial.experiments.gate.gate_stage`)
   on the run's own cached maps, with the experiment's L-inf PGD at the calibrated budget;
6. ``attack/pgd/batch-*``: L-inf PGD at that budget, with its SSIMs; ``geometry/<attack>/batch-*``:
   the geometry null of each attack, a random feasible perturbation of its set with its per-image
   SSIM (:mod:`.perceptual_controls`).

Matched mean SSIM, precisely. The calibration images are the first
``calibration_n`` of the ``n`` images. The *target* is the SSIM-ball attack's mean
SSIM over all calibration images (every image given to the attack, fooled or not,
correctly classified or not). For a budget ``eps`` let ``s(eps)`` be the mean SSIM
of PGD(eps) over the same images; ``s`` decreases with ``eps``. :func:`bisect_eps`
brackets the root of ``s(eps) = target`` in ``(0, eps_max]`` and halves the
bracket up to ``calibration_iters`` times, stopping as soon as
``|s(eps) − target| <= ssim_tolerance``; the chosen budget is the evaluated one
closest to the target. PGD's random start is seeded per image, so ``s`` is a
deterministic function and every evaluation is a cached stage. PGD then runs on
all ``n`` images at that budget; both mean SSIMs over all ``n`` images are
reported (they differ from the calibration ones by sampling only).

The SSIM map ``D = 1 − SSIM_local(x, x')`` (Gaussian window, σ = 1.5, full
resolution, clamped at 0) plays the Region of Attack (RoA) side: it is compared
with the class activation map ``I`` of the true class -- Spearman correlation of
the continuous maps, IoU of their top-``fraction`` regions, and the share of D's
mass inside the CAM region ("energy in CAM", the engine's ``energy_in_roi``).
Every statistic goes through the one statistics engine
(:func:`advspatial.regions.inference.compare_to_nulls`): per-image excess over
the uniform, any-class, same-class and object-conditioned nulls (composition =
the image's foreground share, :func:`advspatial.experiments.colocation.composition`),
a bootstrap CI and a two-sided p. Claims (:mod:`advspatial.regions.claims`):
two primaries per attack (energy in CAM vs the same-class null, and vs the
geometry null, paired per image), one for the minimal-distortion comparison of
the two attacks (not RoI-dependent), Holm across them; every
other statistic x null secondary (Benjamini-Hochberg), all gated on the RoI's
faithfulness; a failed gate makes them "not interpretable". Statistics are
over the images the model classifies correctly *and* the attack fools
("successful").
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from ..progress import progress_bar

from ..analysis.ssim import ssim, ssim_map
from ..attacks import Attack, make_attack
from ..attacks.ssim_ball import window_ssim
from ..errors import ConfigError, check_range, unknown_name
from ..maps import importance_map, list_importance_methods
from ..regions import binarize, overlap_statistics
from ..regions.claims import Claim, claim_from, judge
from ..regions.inference import NullComparison, uniform_comparison
from ..runtime import RunDir, batch_slices
from . import colocation
from .perceptual_controls import geometry_null, minimal_distortion
from .base import (
    OPEN_UNIT_INTERVAL, ExperimentContext, ExperimentResult, mean_of, prepare_context, register_experiment, setting,
)
from .gate import GatedConfig, gate_stage, resolve_importance, roi_label

ATTACKS = ("ssim-ball", "pgd")
#: the statistics reported, and the name :func:`advspatial.regions.overlap_statistics` (and the engine) gives each
STATS = {"spearman": "spearman", "iou": "iou", "energy_in_cam": "energy_in_roi"}
STAT_LABELS = {
    "spearman": "Spearman(CAM, 1-SSIM map)",
    "iou": "IoU of the top regions",
    "energy_in_cam": "share of 1-SSIM mass in the CAM region",
}
#: the engine's statistic names, in report order
ENGINE_STATS = tuple(STATS.values())
#: report label of an engine statistic
ENGINE_LABELS = {key: STAT_LABELS[name] for name, key in STATS.items()}
PRIMARY_STATISTIC = colocation.PRIMARY_STATISTIC  # energy_in_roi = energy in the CAM region
PRIMARY_NULL = colocation.PRIMARY_NULL  # same-class
CLAIM = "the attack lowers SSIM where the model looks"

TERMS = ("Region of Importance (RoI): the pixels the model looks at when it classifies, here the top fraction of "
         "the class activation map of the TRUE class on the clean image. Region of Attack (RoA): the pixels the "
         "attack acts through, here the top fraction of the 1 − SSIM map, 1 − SSIM_local(x, x'), i.e. where the "
         "adversarial image loses structural similarity.")


@dataclass
class PerceptualConfig(GatedConfig):
    """Settings of the perceptual experiment (METHODS §3, gate and inference of §1); every one is a CLI option."""

    n: int = setting(200, "number of test images (the first n)")
    batch_size: int = setting(100, "images per batch (memory does not grow with n)")
    importance: str = setting("auto", "class activation map of the true class, the RoI: auto (Grad-CAM for a "
                                      "GAP+linear head, HiResCAM for a flatten/FC head) or a name "
                                      "(advspatial list maps)")
    alpha: float = setting(0.9, "SSIM-ball: every window keeps its contrast-structure term >= alpha",
                           **OPEN_UNIT_INTERVAL)
    luminance: str = setting("term", "SSIM-ball luminance constraint: term (SSIM's luminance term >= alpha_l in "
                                     "every window, so window SSIM >= alpha*alpha_l) or absolute (|mean change| <= "
                                     "beta)")
    alpha_l: float = setting(0.99, "SSIM-ball: bound on every window's luminance term (luminance term)",
                             low=0.0, high=1.0, low_inclusive=False)
    beta: float = setting(0.05, "SSIM-ball: bound on each window's mean change (luminance absolute)", low=0.0, high=1.0)
    steps: int = setting(50, "gradient steps of both attacks (the same budget for both)", low=1)
    loss: str = setting("margin", "loss both attacks ascend: margin (logit margin) or ce (cross-entropy)")
    step_size: float = setting(0.1, "SSIM-ball: step length as a fraction of each window's ball size",
                               low=0.0, low_inclusive=False)
    window: str = setting("auto", "SSIM-ball: window side, or auto (4 up to 28 pixels, 8 above)")
    rounds: int = setting(5, "SSIM-ball: Dykstra projection rounds per step", low=1)
    curve_alphas: list[float] = setting([0.7, 0.8, 0.95, 0.99], "SSIM-ball budgets (alpha) of the fooling-rate vs "
                                                                "SSIM curve, beside the main alpha",
                                        **OPEN_UNIT_INTERVAL)
    curve_eps_factors: list[float] = setting([0.1, 0.25, 0.5, 2.0], "PGD budgets of the curve, as multiples of the "
                                                                    "calibrated eps (capped at eps_max)",
                                             low=0.0, low_inclusive=False)
    eps_max: float = setting(0.3, "upper end of the PGD budget bracket searched by the calibration",
                             low=0.0, high=1.0, low_inclusive=False)
    calibration_n: int = setting(100, "images (a prefix of the n) on which the PGD budget is calibrated", low=1)
    calibration_iters: int = setting(8, "at most this many bisection halvings of the budget bracket", low=1)
    ssim_tolerance: float = setting(0.005, "calibration stops when |mean SSIM(PGD) - target| <= this",
                                    low=0.0, high=1.0, low_inclusive=False)
    fraction: float = setting(0.2, "top fraction of each map forming the CAM region (RoI) and the SSIM-map region "
                                   "(RoA); also the region fraction of the faithfulness gate",
                              **OPEN_UNIT_INTERVAL)
    permutations: int = setting(10000, "random within-group permutations of each pair-based null (two-sided p)", low=1)
    permutation_images: int = setting(1000, "successful images per attack entering the statistics (N x N pairs)", low=1)
    strata: int = setting(4, "composition strata per class of the object-conditioned null", low=1)
    figure_images: int = setting(4, "example images in the side-by-side figure", low=0)

    PRESET_FIELDS = {"eps_max": "eps_max", "steps": "steps", "batch_size": "batch_size", "image_size": "image_size"}
    QUICK = {"n": 16, "batch_size": 8, "steps": 5, "calibration_n": 8, "curve_alphas": [0.8],
             "curve_eps_factors": [0.5],
             "calibration_iters": 4, "ssim_tolerance": 0.01, "permutations": 200, "figure_images": 2,
             "gate_n": 16, "gate_steps": 5, "randomization_images": 4}

    def validate(self) -> None:
        super().validate()
        if self.importance != "auto" and self.importance not in list_importance_methods():
            raise unknown_name("importance method", self.importance, ["auto", *list_importance_methods()])
        check_choice_of("luminance", self.luminance, ("term", "absolute"))
        check_choice_of("loss", self.loss, ("margin", "ce"))
        self.window_value()

    def window_value(self) -> int | str:
        """``window`` as the attack takes it: ``"auto"`` or an int >= 2."""
        if self.window == "auto":
            return "auto"
        try:
            size = int(self.window)
        except ValueError:
            size = 0
        if size < 2 or str(size) != str(self.window).strip():
            raise ConfigError(f"window={self.window!r} is invalid; valid: 'auto' or an integer >= 2")
        return size


@dataclass
class Context(ExperimentContext):
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
    """The SSIM-ball attack with the experiment's parameters (``alpha``: another contrast-structure bound)."""
    return make_attack("ssim-ball", model, alpha=config.alpha if alpha is None else alpha, beta=config.beta,
                       luminance=config.luminance, alpha_l=config.alpha_l, steps=config.steps, loss=config.loss,
                       step_size=config.step_size, window=config.window_value(), rounds=config.rounds,
                       seed=config.seed)


def pgd_attack(model: nn.Module, eps: float, steps: int, seed: int, loss: str = "ce") -> Attack:
    """L-inf PGD with budget ``eps`` (> 0), step ``2.5·eps/steps`` (Madry et al.) and a seeded random start."""
    return make_attack("pgd", model, eps=eps, alpha="auto", steps=steps, seed=seed, loss=loss)


def check_choice_of(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not valid; valid: {', '.join(valid)}")


def ssim_distortion(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """The SSIM map ``1 − SSIM_local(x, x')``, (N,H,W) >= 0 (0 where nothing changed; channels averaged)."""
    return (1.0 - ssim_map(x, x_adv)).clamp_min(0.0)


@dataclass
class Calibration:
    """The PGD budget found at matched mean SSIM.

    Attributes:
        target: the mean SSIM to match (SSIM-ball attack on the calibration images).
        eps: the chosen budget (the evaluated one whose mean SSIM is closest to ``target``).
        mean_ssim: PGD's mean SSIM at ``eps`` on the calibration images.
        matched: ``|mean_ssim − target| <= tolerance``.
        reachable: False when even ``eps_max`` keeps the mean SSIM above the target.
        history: every evaluation ``(eps, mean SSIM)`` in order.
    """

    target: float
    eps: float
    mean_ssim: float
    matched: bool
    reachable: bool
    tolerance: float
    history: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "eps": self.eps, "mean_ssim": self.mean_ssim, "matched": self.matched,
                "reachable": self.reachable, "tolerance": self.tolerance,
                "history": [list(h) for h in self.history]}


def bisect_eps(
    mean_ssim_at: Callable[[float], float], target: float, eps_max: float, iters: int = 8, tolerance: float = 0.005,
) -> Calibration:
    """Find ``eps`` in ``(0, eps_max]`` with ``mean_ssim_at(eps) ≈ target``, for a function decreasing in eps.

    ``eps_max`` is evaluated first: if its mean SSIM is still above
    ``target + tolerance`` the target cannot be reached, and ``eps_max`` is
    returned with ``reachable=False``. Otherwise the bracket ``[0, eps_max]``
    (the SSIM at 0 is 1) is halved up to ``iters`` times, stopping when an
    evaluation lies within ``tolerance``. Returns the evaluated budget closest
    to the target (the smaller one on ties).
    """
    check_range("eps_max", eps_max, 0.0, None, low_inclusive=False)
    check_range("iters", iters, 0)
    history = [(float(eps_max), float(mean_ssim_at(eps_max)))]
    reachable = history[0][1] <= target + tolerance
    low, high = 0.0, float(eps_max)
    if reachable:
        for _ in range(iters):
            if abs(history[-1][1] - target) <= tolerance:
                break
            mid = (low + high) / 2
            value = float(mean_ssim_at(mid))
            history.append((mid, value))
            if value > target:  # not enough distortion yet: a larger budget
                low = mid
            else:
                high = mid
    eps, value = min(history, key=lambda h: (abs(h[1] - target), h[0]))
    return Calibration(float(target), eps, value, abs(value - target) <= tolerance, reachable, float(tolerance),
                       history)


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


# -- the per-batch pipeline ------------------------------------------------------------

def clean_batch(ctx: Context, b: int) -> dict[str, torch.Tensor]:
    """Clean predictions and the CAM of the true class on the clean images of batch b (cached)."""

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(ctx.slices[b])
        with torch.no_grad():
            pred = ctx.model(x).argmax(1)
        cam = importance_map(ctx.method, ctx.model, x, target="true", y=y, batch_size=len(x), sample_ids=ids)
        return {"pred": pred.cpu(), "cam": cam.cpu()}

    return ctx.rundir.cached(f"clean/batch-{b:05d}", compute)  # type: ignore[return-value]


def attack_stage(ctx: Context, stage: str, attack: Attack, sl: slice) -> dict[str, torch.Tensor]:
    """Run ``attack`` on the images of ``sl``; keep what the rows need plus the SSIM per image (cached)."""

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(sl)
        result = attack.run(x, y, sample_ids=ids)
        with torch.no_grad():
            values = ssim(x, result.x_adv)
            windowed = window_ssim(x, result.x_adv, ctx.config.window_value())
        out = {k: getattr(result, k) for k in ("x_adv", "success", "adv_pred", "l2", "linf")}
        return {**{k: v.cpu() for k, v in out.items()}, "ssim": values.cpu(), "ssim_window": windowed.cpu()}

    return ctx.rundir.cached(stage, compute)  # type: ignore[return-value]


def calibration_slices(ctx: Context) -> list[slice]:
    return list(batch_slices(min(ctx.config.calibration_n, len(ctx.data)), ctx.config.batch_size))


def pgd_mean_ssim(ctx: Context, eps: float) -> float:
    """PGD(eps)'s mean SSIM over the calibration images (each batch a cached stage)."""
    cfg = ctx.config
    attack = pgd_attack(ctx.model, eps, cfg.steps, cfg.seed, cfg.loss)

    def batch_ssim(b: int, sl: slice) -> torch.Tensor:
        return attack_stage(ctx, f"calibration/eps-{eps:.8f}/batch-{b:05d}", attack, sl)["ssim"]

    values = ctx.each_batch(batch_ssim, slices=calibration_slices(ctx), desc=f"pgd eps {eps:.4g} (calibration)")
    return float(torch.cat(values).double().mean())


def calibrate(ctx: Context, ssim_ball_values: torch.Tensor) -> Calibration:
    """The PGD budget whose mean SSIM on the calibration images matches the SSIM-ball attack's."""
    cfg = ctx.config
    n_cal = min(cfg.calibration_n, len(ctx.data))
    target = float(ssim_ball_values[:n_cal].double().mean())
    with progress_bar(total=cfg.calibration_iters + 1, desc="calibrating the PGD budget", disable=not cfg.progress,
              unit="run") as bar:

        def evaluate(eps: float) -> float:
            bar.update(1)
            return pgd_mean_ssim(ctx, eps)

        return bisect_eps(evaluate, target, cfg.eps_max, cfg.calibration_iters, cfg.ssim_tolerance)


# -- fooling rate vs SSIM curves, minimal distortion ---------------------------------------------

@dataclass
class Curves:
    """Each attack at several budgets on the calibration images: per budget the mean SSIM and fooling rate,
    and per image (budgets x images) whether it was fooled (correct and attacked successfully) and its SSIM."""

    points: dict[str, list[dict[str, float]]]
    fooled: dict[str, torch.Tensor]
    ssims: dict[str, torch.Tensor]

    def minimal_distortion(self) -> dict[str, torch.Tensor]:
        """Per attack and image, the highest SSIM among the budgets that fool it (NaN: none does)."""
        return {name: minimal_distortion(self.fooled[name], self.ssims[name]) for name in self.points}


def curve_budgets(config: PerceptualConfig, calibration: Calibration) -> dict[str, list[float]]:
    """The budgets of each curve: SSIM-ball alphas (the main one included), PGD eps (the calibrated one,
    every budget the calibration tried, and multiples of the calibrated one capped at eps_max)."""
    eps = {calibration.eps, *(h[0] for h in calibration.history),
           *(min(f * calibration.eps, config.eps_max) for f in config.curve_eps_factors)}
    return {"ssim-ball": sorted({config.alpha, *config.curve_alphas}), "pgd": sorted(e for e in eps if e > 0)}


def curve_results(ctx: Context, name: str, budget: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(success, SSIM) of attack ``name`` at ``budget`` on the calibration images (cached stages; the main
    SSIM-ball budget and the PGD budgets the calibration tried are not recomputed)."""
    cfg = ctx.config

    def batch(b: int, sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
        if name == "pgd":
            res = attack_stage(ctx, f"calibration/eps-{budget:.8f}/batch-{b:05d}",
                               pgd_attack(ctx.model, budget, cfg.steps, cfg.seed, cfg.loss), sl)
        elif budget == cfg.alpha:  # the main attack's stage: per-sample results, so a prefix of a batch is exact
            res = {k: v[: sl.stop - sl.start] for k, v in attack_stage(
                ctx, f"attack/ssim-ball/batch-{b:05d}", ssim_attack(ctx.model, cfg), ctx.slices[b]).items()}
        else:
            res = attack_stage(ctx, f"curve/ssim-ball/alpha-{budget:.6f}/batch-{b:05d}",
                               ssim_attack(ctx.model, cfg, budget), sl)
        return res["success"], res["ssim"]

    parts = ctx.each_batch(batch, slices=calibration_slices(ctx), desc=f"{name} at {budget:.4g}")
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def curves_stage(ctx: Context, calibration: Calibration) -> Curves:
    """Fooling rate vs mean SSIM of both attacks over their budgets, on the calibration images."""
    cfg = ctx.config
    n_cal = min(cfg.calibration_n, len(ctx.data))
    pred = torch.cat([clean_batch(ctx, b)["pred"] for b in range(len(ctx.slices))])[:n_cal]  # stages of run_perceptual
    correct = pred == ctx.data.labels[:n_cal]
    points: dict[str, list[dict[str, float]]] = {}
    fooled: dict[str, torch.Tensor] = {}
    ssims: dict[str, torch.Tensor] = {}
    budgets = curve_budgets(cfg, calibration)
    with progress_bar(total=sum(len(v) for v in budgets.values()), desc="fooling rate vs SSIM curves",
                      disable=not cfg.progress, unit="budget") as bar:
        for name, values in budgets.items():
            rows_f, rows_s = [], []
            for budget in values:
                success, image_ssim = curve_results(ctx, name, budget)
                hit = correct & success
                rows_f.append(hit)
                rows_s.append(image_ssim)
                points.setdefault(name, []).append({
                    "budget": budget, "mean_ssim": float(image_ssim.double().mean()),
                    "fooling_rate": mean_of([float(h) for h, c in zip(hit, correct) if c])})
                bar.update(1)
            fooled[name], ssims[name] = torch.stack(rows_f), torch.stack(rows_s)
    return Curves(points, fooled, ssims)


# -- per-image rows and what the report needs ---------------------------------------------

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


def keep_first(store: dict[str, list[torch.Tensor]], limit: int, keep: torch.Tensor, **values: torch.Tensor) -> None:
    """Append ``values[keep]`` to ``store`` up to ``limit`` images in all (bounded memory for any n)."""
    have = sum(len(t) for t in store.get("labels", []))
    chosen = keep.nonzero().squeeze(1)[: max(limit - have, 0)]
    for key, value in values.items():
        store[key].append(value[chosen].cpu())


def batch_rows(name: str, ids: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, res: dict[str, torch.Tensor],
               cols: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    columns = {"index": ids, "label": y, "clean_pred": pred, "correct": pred == y, "success": res["success"],
               "adv_pred": res["adv_pred"], "ssim": res["ssim"], "ssim_window": res["ssim_window"], "l2": res["l2"],
               "linf": res["linf"], **cols}
    lists = {k: v.tolist() for k, v in columns.items()}
    return [{"attack": name, **{k: lists[k][i] for k in columns}} for i in range(len(ids))]


def process_batches(ctx: Context, eps: float,
                    rows: list[dict[str, Any]]) -> tuple[dict[str, AttackStore], dict[str, list]]:
    """PGD at ``eps`` batch by batch; per-image rows of both attacks; the engine's inputs and examples."""
    cfg = ctx.config
    attacks = {"ssim-ball": ssim_attack(ctx.model, cfg), "pgd": pgd_attack(ctx.model, eps, cfg.steps, cfg.seed, cfg.loss)}
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
    attack's per-image SSIM (:mod:`.perceptual_controls`)."""

    def compute() -> dict[str, torch.Tensor]:
        x, _, ids = ctx.batch(sl)
        return {"x_null": geometry_null(name, attack, x, target_ssim, ids, ctx.config.seed).cpu()}

    return ctx.rundir.cached(f"geometry/{name}/batch-{b:05d}", compute)["x_null"]  # type: ignore[index]


def geometry_columns(ctx: Context, sl: slice, x_null: torch.Tensor, cam: torch.Tensor) -> dict[str, torch.Tensor]:
    """The geometry null's SSIM and the share of its 1 − SSIM mass in the CAM region."""
    x = ctx.data.images(sl)
    cols, _, _ = map_statistics(cam, ssim_distortion(x, x_null), ctx.config.fraction, ctx.config.seed, ctx.data.ids[sl])
    return {"geometry_energy_in_cam": cols["energy_in_cam"], "geometry_ssim": ssim(x, x_null)}


def collect_examples(examples: dict[str, list], limit: int, x: torch.Tensor, y: torch.Tensor, cam: torch.Tensor,
                     cam_region: torch.Tensor, found: dict[str, dict[str, torch.Tensor]]) -> None:
    """Keep the first ``limit`` images that every attack fooled (for the side-by-side figure)."""
    both = torch.stack([f["ok"] for f in found.values()]).all(0)
    store: dict[str, list[torch.Tensor]] = examples  # type: ignore[assignment]
    values = {"x": x, "labels": y, "cam": cam, "cam_region": cam_region}
    for name, f in found.items():
        values.update({f"{name}:{k}": f[k] for k in ("x_adv", "dist", "dist_region", "adv_pred", "ssim")})
    keep_first(store, limit, both, **values)


# -- aggregation: metrics from the rows -----------------------------------------------------

def attack_metrics(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Summary of one attack, computed from its per-image rows only (so the two always agree)."""
    group = [r for r in rows if r["attack"] == name]
    correct = [r for r in group if r["correct"]]
    ok = [r for r in correct if r["success"]]
    return {
        "images": len(group),
        "clean_accuracy": mean_of([float(r["correct"]) for r in group]),
        "fooling_rate": mean_of([float(r["success"]) for r in correct]),
        "adversarial_accuracy": mean_of([float(r["adv_pred"] == r["label"]) for r in group]),
        "successful": len(ok),
        "mean_ssim": mean_of([r["ssim"] for r in group]),
        "mean_ssim_window": mean_of([r.get("ssim_window", math.nan) for r in group]),
        "mean_ssim_successful": mean_of([r["ssim"] for r in ok]),
        "geometry_mean_ssim": mean_of([r.get("geometry_ssim", math.nan) for r in ok]),
        "mean_l2": mean_of([r["l2"] for r in ok]),
        "mean_linf": mean_of([r["linf"] for r in ok]),
        "maps": {s: mean_of([r[s] for r in ok]) for s in STATS},
        "geometry_energy_in_cam": mean_of([r.get("geometry_energy_in_cam", math.nan) for r in ok]),
    }


# -- inference: the engine, the claims, the gate ----------------------------------------------

def compare_attack(store: AttackStore, config: PerceptualConfig) -> dict[str, dict[str, NullComparison]]:
    """Every reported statistic (engine names, :data:`ENGINE_STATS`) against every null; {} with < 3 images."""
    if store.images() < 3:
        return {}
    return colocation.compare_store(store.store(), config.permutations, config.seed, config.strata,
                                    statistics=ENGINE_STATS)


def attack_claims(subject: str, comparisons: Mapping[str, Mapping[str, NullComparison]],
                  gates: Mapping[str, bool]) -> list[Claim]:
    """The claims of one attack: energy in CAM vs the same-class null first (primary), then every other row."""
    out = [claim_from(c, CLAIM, subject, gates, primary=stat == PRIMARY_STATISTIC and null == PRIMARY_NULL)
           for stat, by_null in comparisons.items() for null, c in by_null.items()]
    out.sort(key=lambda c: not c.primary)
    return out


def run_gates(ctx: Context, eps: float) -> dict[str, dict[str, Any]]:
    """The faithfulness gate of the CAM on the run's own cached clean maps, with L-inf PGD at budget ``eps``."""
    cfg = ctx.config
    return {ctx.method: gate_stage(ctx, ctx.method, cfg.fraction, eps, target="true",
                                   maps=lambda b: clean_batch(ctx, b)["cam"])}


def measure(ctx: Context, stores: Mapping[str, AttackStore], metrics: dict[str, Any],
            gates: dict[str, dict[str, Any]], rows: list[dict[str, Any]] | None = None,
            curves: Curves | None = None) -> list[Claim]:
    """Engine results, claims, corrections and verdicts, written into ``metrics`` (which holds ``attacks``).

    Every RoI-dependent number carries ``interpretation``: "interpretable", or
    :data:`~advspatial.regions.claims.NOT_INTERPRETABLE_ROI` when the CAM failed the gate.
    """
    cfg = ctx.config
    roi_gate = gates[ctx.method]
    label = roi_label(roi_gate) or "interpretable"
    metrics["faithfulness"] = gates
    metrics["roi"] = {"method": ctx.method, "why": ctx.importance_reason or "chosen in the config",
                      "faithful": bool(roi_gate["passed"]), "interpretation": label}
    gate_set = {"RoI faithfulness": bool(roi_gate["passed"])}
    metrics["inference"], claims = {}, []
    for name in ATTACKS:
        metrics["attacks"][name]["maps"]["interpretation"] = label
        comparisons = compare_attack(stores[name], cfg)
        if not comparisons:
            continue
        metrics["inference"][name] = {stat: {null: {**c, "interpretation": label} for null, c in by_null.items()}
                                      for stat, by_null in colocation.comparisons_dict(comparisons).items()}
        claims += attack_claims(name, comparisons, gate_set)
    for name in ATTACKS:
        if rows is not None:
            claims += geometry_claims(rows, name, gate_set, cfg.seed)
    if curves is not None:
        claims.append(minimal_distortion_claim(curves, metrics, cfg.seed))
    judge(claims, sesoi=cfg.sesoi, alpha=cfg.significance)
    metrics["claims"] = [c.as_dict() for c in claims]
    return claims


GEOMETRY_CLAIM = "the attack lowers SSIM where the model looks more than a random feasible perturbation of equal SSIM"
DISTORTION_CLAIM = "the SSIM-ball attack fools images at a higher SSIM than L-inf PGD"


def geometry_claims(rows: list[dict[str, Any]], name: str, gates: Mapping[str, bool], seed: int) -> list[Claim]:
    """Energy in CAM of the attack vs its geometry null, paired per successful image (primary; gated)."""
    ok = [r for r in rows if r["attack"] == name and r["correct"] and r["success"]]
    if len(ok) < 3:
        return []
    comparison = uniform_comparison([r["energy_in_cam"] for r in ok], [r["geometry_energy_in_cam"] for r in ok],
                                    seed, statistic=PRIMARY_STATISTIC, null="geometry")
    return [claim_from(comparison, GEOMETRY_CLAIM, name, gates, primary=True)]


def minimal_distortion_claim(curves: Curves, metrics: dict[str, Any], seed: int) -> Claim:
    """Per image fooled by both attacks at some budget: SSIM-ball's highest fooling SSIM minus PGD's (primary;
    it does not rest on the RoI). Writes ``metrics["minimal_distortion"]``."""
    best = curves.minimal_distortion()
    ball, pgd = best["ssim-ball"], best["pgd"]
    both = torch.isfinite(ball) & torch.isfinite(pgd)
    comparison = uniform_comparison(ball[both], pgd[both], seed, statistic="highest fooling SSIM", null="pgd")
    ceilings = {name: max(p["mean_ssim"] for p in points) for name, points in curves.points.items()}
    metrics["minimal_distortion"] = {
        "images_both": int(both.sum()), "only_ssim_ball": int((torch.isfinite(ball) & ~torch.isfinite(pgd)).sum()),
        "only_pgd": int((~torch.isfinite(ball) & torch.isfinite(pgd)).sum()), "ceilings": ceilings,
        **comparison.as_dict()}
    return claim_from(comparison, DISTORTION_CLAIM, "ssim-ball vs pgd", {}, primary=True)


# -- the experiment --------------------------------------------------------------------

@register_experiment("perceptual", PerceptualConfig,
                     "SSIM-ball attack vs L-inf PGD at matched mean SSIM; SSIM maps vs class activation maps")
def run_perceptual(config: PerceptualConfig, rundir: RunDir) -> ExperimentResult:
    ctx = perceptual_context(config, rundir)
    ctx.each_batch(lambda b, sl: clean_batch(ctx, b), desc="clean: predictions, CAM of the true class",
                   then=lambda *_: None)
    attack = ssim_attack(ctx.model, config)
    ball = ctx.each_batch(lambda b, sl: attack_stage(ctx, f"attack/ssim-ball/batch-{b:05d}", attack, sl)["ssim"],
                          desc="ssim-ball attack")
    calibration = calibrate(ctx, torch.cat(ball))
    curves = curves_stage(ctx, calibration)
    gates = run_gates(ctx, calibration.eps)
    rows: list[dict[str, Any]] = []
    stores, examples = process_batches(ctx, calibration.eps, rows)
    metrics = build_metrics(rows, calibration)
    metrics["curves"] = curves.points
    claims = measure(ctx, stores, metrics, gates, rows, curves)
    from .perceptual_report import build_sections, summary_text

    sections = build_sections(ctx, metrics, calibration, claims, stores, examples)
    return ExperimentResult(metrics, rows, summary_text(metrics), sections)


def build_metrics(rows: list[dict[str, Any]], calibration: Calibration) -> dict[str, Any]:
    attacks = {name: attack_metrics(rows, name) for name in ATTACKS}
    return {
        "n": attacks["ssim-ball"]["images"],
        "clean_accuracy": attacks["ssim-ball"]["clean_accuracy"],
        "calibration": calibration.as_dict(),
        "pgd_eps": calibration.eps,
        "ssim_gap": attacks["pgd"]["mean_ssim"] - attacks["ssim-ball"]["mean_ssim"],
        "attacks": attacks,
    }
