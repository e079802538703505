"""Experiment ``perceptual``: the SSIM-ball attack vs L-inf PGD at matched mean SSIM, and where each
one lowers SSIM compared with where the model looks (METHODS.md §3, with §1's gate and inference).

Stages, each streamed batch by batch and saved in the run directory so that
``--resume`` completes an interrupted run with identical numbers:

1. ``clean/batch-*``: clean predictions and the class activation map (``importance``:
   ``auto`` = Grad-CAM for a GAP+linear head, HiResCAM for a flatten/FC head) of the
   *true* class on the clean image -- the Region of Importance (RoI) side;
2. ``attack/ssim-ball/batch-*``: the SSIM-ball attack (its default parameters) and the
   SSIM of every adversarial image;
3. ``calibration/eps-*/batch-*``: the PGD budget at matched mean SSIM (below);
4. ``gate/<method>/...``: the faithfulness gate of that CAM (:func:`advspatial.experiments.gate.gate_stage`)
   on the run's own cached maps, with the experiment's L-inf PGD at the calibrated budget;
5. ``attack/pgd/batch-*``: L-inf PGD at that budget, with its SSIMs.

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
one primary per attack (energy in CAM vs the same-class null, Holm), every
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
from ..errors import ConfigError, check_range, unknown_name
from ..maps import importance_map, list_importance_methods
from ..regions import binarize, overlap_statistics
from ..regions.claims import NOT_INTERPRETABLE_ROI, Claim, claim_from, judge, sentence_case
from ..regions.inference import NullComparison
from ..report.html import Figure, Section, Table
from ..runtime import RunDir, batch_slices
from . import colocation
from .base import ExperimentContext, ExperimentResult, mean_of, prepare_context, register_experiment, setting
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
    alpha: float = setting(0.9, "SSIM-ball: every window keeps its contrast-structure term >= alpha")
    beta: float = setting(0.05, "SSIM-ball: bound on each window's mean (luminance) change")
    ssim_steps: int = setting(50, "SSIM-ball: gradient steps")
    step_size: float = setting(0.1, "SSIM-ball: step length as a fraction of each window's ball size")
    window: str = setting("auto", "SSIM-ball: window side, or auto (4 up to 28 pixels, 8 above)")
    rounds: int = setting(5, "SSIM-ball: Dykstra projection rounds per step")
    pgd_steps: int = setting(20, "PGD iterations (step 2.5*eps/steps, seeded random start)")
    eps_max: float = setting(0.3, "upper end of the PGD budget bracket searched by the calibration")
    calibration_n: int = setting(100, "images (a prefix of the n) on which the PGD budget is calibrated")
    calibration_iters: int = setting(8, "at most this many bisection halvings of the budget bracket")
    ssim_tolerance: float = setting(0.005, "calibration stops when |mean SSIM(PGD) - target| <= this")
    fraction: float = setting(0.2, "top fraction of each map forming the CAM region (RoI) and the SSIM-map region "
                                   "(RoA); also the region fraction of the faithfulness gate")
    permutations: int = setting(10000, "random within-group permutations of each pair-based null (two-sided p)")
    permutation_images: int = setting(1000, "successful images per attack entering the statistics (N x N pairs)")
    strata: int = setting(4, "composition strata per class of the object-conditioned null")
    figure_images: int = setting(4, "example images in the side-by-side figure")

    PRESET_FIELDS = {"eps_max": "eps_max", "steps": "pgd_steps", "batch_size": "batch_size", "image_size": "image_size"}
    QUICK = {"n": 16, "batch_size": 8, "ssim_steps": 5, "pgd_steps": 5, "calibration_n": 8,
             "calibration_iters": 4, "ssim_tolerance": 0.01, "permutations": 200, "figure_images": 2,
             "gate_n": 16, "gate_steps": 5, "randomization_images": 4}

    def validate(self) -> None:
        super().validate()
        if self.importance != "auto" and self.importance not in list_importance_methods():
            raise unknown_name("importance method", self.importance, ["auto", *list_importance_methods()])
        check_range("alpha", self.alpha, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_range("beta", self.beta, 0.0, 1.0)
        check_range("step_size", self.step_size, 0.0, None, low_inclusive=False)
        check_range("eps_max", self.eps_max, 0.0, 1.0, low_inclusive=False)
        check_range("ssim_tolerance", self.ssim_tolerance, 0.0, 1.0, low_inclusive=False)
        check_range("fraction", self.fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        for name in ("ssim_steps", "rounds", "pgd_steps", "calibration_n", "calibration_iters", "permutations",
                     "permutation_images", "strata"):
            check_range(name, getattr(self, name), 1)
        check_range("figure_images", self.figure_images, 0)
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

def ssim_attack(model: nn.Module, config: PerceptualConfig) -> Attack:
    """The SSIM-ball attack with the experiment's parameters."""
    return make_attack("ssim-ball", model, alpha=config.alpha, beta=config.beta, steps=config.ssim_steps,
                       step_size=config.step_size, window=config.window_value(), rounds=config.rounds,
                       seed=config.seed)


def pgd_attack(model: nn.Module, eps: float, steps: int, seed: int) -> Attack:
    """L-inf PGD with budget ``eps`` (> 0), step ``2.5·eps/steps`` (Madry et al.) and a seeded random start."""
    return make_attack("pgd", model, eps=eps, alpha=2.5 * eps / steps, steps=steps, seed=seed)


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
        x, y, _ = ctx.batch(ctx.slices[b])
        with torch.no_grad():
            pred = ctx.model(x).argmax(1)
        cam = importance_map(ctx.method, ctx.model, x, target="true", y=y, batch_size=len(x))
        return {"pred": pred.cpu(), "cam": cam.cpu()}

    return ctx.rundir.cached(f"clean/batch-{b:05d}", compute)  # type: ignore[return-value]


def attack_stage(ctx: Context, stage: str, attack: Attack, sl: slice) -> dict[str, torch.Tensor]:
    """Run ``attack`` on the images of ``sl``; keep what the rows need plus the SSIM per image (cached)."""

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(sl)
        result = attack.run(x, y, sample_ids=ids)
        with torch.no_grad():
            values = ssim(x, result.x_adv)
        out = {k: getattr(result, k) for k in ("x_adv", "success", "adv_pred", "l2", "linf")}
        return {**{k: v.cpu() for k, v in out.items()}, "ssim": values.cpu()}

    return ctx.rundir.cached(stage, compute)  # type: ignore[return-value]


def calibration_slices(ctx: Context) -> list[slice]:
    return list(batch_slices(min(ctx.config.calibration_n, len(ctx.data)), ctx.config.batch_size))


def pgd_mean_ssim(ctx: Context, eps: float) -> float:
    """PGD(eps)'s mean SSIM over the calibration images (each batch a cached stage)."""
    cfg = ctx.config
    attack = pgd_attack(ctx.model, eps, cfg.pgd_steps, cfg.seed)
    values = [attack_stage(ctx, f"calibration/eps-{eps:.8f}/batch-{b:05d}", attack, sl)["ssim"]
              for b, sl in enumerate(calibration_slices(ctx))]
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
               "adv_pred": res["adv_pred"], "ssim": res["ssim"], "l2": res["l2"], "linf": res["linf"], **cols}
    lists = {k: v.tolist() for k, v in columns.items()}
    return [{"attack": name, **{k: lists[k][i] for k in columns}} for i in range(len(ids))]


def process_batches(ctx: Context, eps: float,
                    rows: list[dict[str, Any]]) -> tuple[dict[str, AttackStore], dict[str, list]]:
    """PGD at ``eps`` batch by batch; per-image rows of both attacks; the engine's inputs and examples."""
    cfg = ctx.config
    attacks = {"ssim-ball": ssim_attack(ctx.model, cfg), "pgd": pgd_attack(ctx.model, eps, cfg.pgd_steps, cfg.seed)}
    stores = {name: AttackStore() for name in ATTACKS}
    examples: dict[str, list] = defaultdict(list)
    for b, sl in enumerate(progress_bar(ctx.slices, desc="pgd at matched SSIM; SSIM maps vs CAM", disable=not cfg.progress,
                                unit="batch")):
        clean = clean_batch(ctx, b)
        x, y, ids = ctx.data.images(sl), ctx.data.labels[sl], ctx.data.ids[sl]
        correct = clean["pred"] == y
        composition = colocation.composition(x)
        found: dict[str, dict[str, torch.Tensor]] = {}
        for name, attack in attacks.items():
            res = attack_stage(ctx, f"attack/{name}/batch-{b:05d}", attack, sl)
            dist = ssim_distortion(x, res["x_adv"])
            cols, cam_region, dist_region = map_statistics(clean["cam"], dist, cfg.fraction, cfg.seed, ids)
            ok = correct & res["success"]
            rows.extend(batch_rows(name, ids, y, clean["pred"], res, cols))
            keep_first(stores[name].kept, cfg.permutation_images, ok, importance=clean["cam"], attack=dist,
                       roi=cam_region, roa=dist_region, labels=y, composition=composition)
            stores[name].ssim_values.append(res["ssim"])
            found[name] = {"ok": ok, "x_adv": res["x_adv"], "dist": dist, "dist_region": dist_region,
                           "adv_pred": res["adv_pred"], "ssim": res["ssim"]}
        collect_examples(examples, cfg.figure_images, x, y, clean["cam"], cam_region, found)
    return stores, examples


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
        "mean_ssim_successful": mean_of([r["ssim"] for r in ok]),
        "mean_l2": mean_of([r["l2"] for r in ok]),
        "mean_linf": mean_of([r["linf"] for r in ok]),
        "maps": {s: mean_of([r[s] for r in ok]) for s in STATS},
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
            gates: dict[str, dict[str, Any]]) -> list[Claim]:
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
    judge(claims, sesoi=cfg.sesoi, alpha=cfg.significance)
    metrics["claims"] = [c.as_dict() for c in claims]
    return claims


# -- the experiment --------------------------------------------------------------------

@register_experiment("perceptual", PerceptualConfig,
                     "SSIM-ball attack vs L-inf PGD at matched mean SSIM; SSIM maps vs class activation maps")
def run_perceptual(config: PerceptualConfig, rundir: RunDir) -> ExperimentResult:
    ctx = perceptual_context(config, rundir)
    for b in progress_bar(range(len(ctx.slices)), desc="clean: predictions, CAM of the true class",
                  disable=not config.progress, unit="batch"):
        clean_batch(ctx, b)
    attack = ssim_attack(ctx.model, config)
    ball = [attack_stage(ctx, f"attack/ssim-ball/batch-{b:05d}", attack, sl)["ssim"]
            for b, sl in enumerate(progress_bar(ctx.slices, desc="ssim-ball attack", disable=not config.progress,
                                        unit="batch"))]
    calibration = calibrate(ctx, torch.cat(ball))
    gates = run_gates(ctx, calibration.eps)
    rows: list[dict[str, Any]] = []
    stores, examples = process_batches(ctx, calibration.eps, rows)
    metrics = build_metrics(rows, calibration)
    claims = measure(ctx, stores, metrics, gates)
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


# -- report ------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def build_sections(ctx: Context, metrics: dict[str, Any], calibration: Calibration, claims: list[Claim],
                   stores: dict[str, AttackStore], examples: dict[str, list]) -> list[Section]:
    return [
        verdict_section(ctx, metrics, claims),
        gate_section(ctx, metrics),
        setup_section(ctx, metrics),
        attacks_section(ctx, metrics, calibration, stores),
        maps_section(ctx, metrics, examples),
        overlap_section(ctx, metrics, claims),
        limits_section(ctx, metrics),
    ]


def verdict_section(ctx: Context, metrics: dict[str, Any], claims: list[Claim]) -> Section:
    """The top of the report: terms, what the run shows, one row per primary claim, a forest plot per attack."""
    from ..report.verdicts import forest_groups, plot_forest, verdict_legend, verdict_table, what_this_run_shows

    cfg = ctx.config
    primary = [c for c in claims if c.primary]
    roi = metrics["roi"]
    paragraphs = [TERMS, f"RoI explainer: {roi['method']} of the true class ({roi['why']})."]
    if not roi["faithful"]:
        reason = metrics["faithfulness"][roi["method"]].get("reason", "")
        paragraphs.append(f"{sentence_case(NOT_INTERPRETABLE_ROI)} ({roi['method']}: {reason}): every "
                          "RoI-dependent result below (where the 1 − SSIM map lies relative to the CAM: the "
                          "verdicts, the map statistics, the overlap tables) is not evidence about the model. The "
                          "fooling rates and SSIMs of the attacks do not depend on the RoI and stay valid.")
    shows = what_this_run_shows(claims)
    paragraphs += ["What this run shows:"] + (shows or [
        "No claim could be tested: fewer than 3 successful images per attack."])
    notes = [verdict_legend() + f" Primary endpoint: {ENGINE_LABELS[PRIMARY_STATISTIC]} (energy_in_roi) vs the "
             f"same-class null, one per attack, Holm across the attacks; every other statistic x null "
             f"Benjamini-Hochberg; alpha (the significance level, setting 'significance') {cfg.significance} after "
             f"correction; smallest effect of "
             f"interest ±{cfg.sesoi}; n >= 30."]
    figures = []
    groups = forest_groups(claims)
    if any(len(v) > 1 for v in groups.values()):
        path = plot_forest(groups, ctx.rundir.figures / "forest.png",
                           title="Energy in CAM: observed minus each null, per-image mean with 95% bootstrap CI")
        figures.append(Figure(path, "Forest plot per attack: the share of the 1 − SSIM mass inside the CAM region "
                                    "against each null (uniform placement, any class, same class, same class and "
                                    "foreground share). Grey: a gate failed."))
    tables = [verdict_table(primary, "Verdicts: one row per pre-declared claim (primary endpoint per attack)")]
    return Section("Verdicts", paragraphs, tables=tables, figures=figures, notes=notes, anchor="verdicts")


def gate_section(ctx: Context, metrics: dict[str, Any]) -> Section:
    """The faithfulness gate of the CAM and the cascading model-randomization check."""
    from ..report.verdicts import gate_tables
    from .gate import gate_rule

    cfg = ctx.config
    gates = metrics["faithfulness"]
    roi = metrics["roi"]
    gate = gates[roi["method"]]
    paragraphs = [
        f"RoI explainer: {roi['method']} of the true class ({roi['why']}). It is "
        f"{'FAITHFUL' if roi['faithful'] else 'NOT faithful'} by the gate below ({gate.get('reason', '')}).",
        gate_rule(cfg, min(cfg.gate_n, metrics["n"]), cfg.fraction, metrics["pgd_eps"], "the CAM")
        + f" {gate.get('n', 0)} images entered; eps is the calibrated budget of the PGD baseline.",
    ]
    tables = gate_tables(gates, per_class_of=[roi["method"]])
    return Section("Faithfulness gate", paragraphs, tables=tables, anchor="faithfulness")


def setup_section(ctx: Context, metrics: dict[str, Any]) -> Section:
    cfg = ctx.config
    window = cfg.window_value()
    return Section("Setup", [
        f"Model {cfg.model} on the first {metrics['n']} {cfg.dataset} test images; clean accuracy "
        f"{fmt(metrics['clean_accuracy'])}. Seed {cfg.seed}; device {ctx.device}.",
        f"SSIM-ball attack: margin PGD for {cfg.ssim_steps} steps (step {cfg.step_size} of each window's size) inside "
        f"the intersection of per-window SSIM balls (contrast-structure term >= {cfg.alpha} in every non-overlapping "
        f"{'4x4 (28 px) / 8x8' if window == 'auto' else f'{window}x{window}'} window), the luminance bound "
        f"|mean change| <= {cfg.beta} per window, and the box [0,1].",
        f"Baseline: L-inf PGD ({cfg.pgd_steps} steps, step 2.5*eps/steps, seeded random start, cross-entropy) with "
        f"its budget eps calibrated so that its mean SSIM matches the SSIM-ball attack's (see below).",
        "SSIM is Wang et al.'s, as scikit-image computes it (Gaussian window sigma 1.5, 11 taps, population "
        "statistics; the image score averages the map away from a 5-pixel border). The SSIM map is "
        "1 - SSIM_local(x, x') at every pixel (borders reflected): the RoA side.",
        f"Class activation map (the RoI side): {ctx.method} of the TRUE class on the clean image "
        f"({metrics['roi']['why']}). Regions: the top {cfg.fraction:.0%} of each map (strictly positive pixels; ties "
        "at the cut broken by a seeded random order).",
        "Fooling rate: share of correctly classified images whose prediction the attack changes. Map statistics: "
        f"over images classified correctly and fooled (successful), the first {cfg.permutation_images} per attack "
        "entering the nulls.",
    ])


def attacks_section(ctx: Context, metrics: dict[str, Any], calibration: Calibration,
                    stores: dict[str, AttackStore]) -> Section:
    from ..report.perceptual_figures import plot_attack_summary, plot_calibration

    cfg = ctx.config
    rows = []
    for name, m in metrics["attacks"].items():
        budget = (f"alpha {cfg.alpha}, beta {cfg.beta}" if name == "ssim-ball" else f"eps {calibration.eps:.4f}")
        rows.append([name, budget, m["images"], fmt(m["fooling_rate"]), m["successful"], fmt(m["mean_ssim"], 4),
                     fmt(m["mean_ssim_successful"], 4), fmt(m["mean_l2"]), fmt(m["mean_linf"])])
    table = Table("Attacks at matched mean SSIM (SSIM over all attacked images; norms over successful ones)",
                  ["attack", "budget", "images", "fooling rate", "successful", "mean SSIM (all)",
                   "mean SSIM (successful)", "mean L2", "mean Linf"], rows)
    n_cal = min(cfg.calibration_n, metrics["n"])
    state = ("matched within the tolerance" if calibration.matched else
             "NOT matched within the tolerance" + ("" if calibration.reachable else
                                                  f": even eps_max={cfg.eps_max} keeps SSIM above the target"))
    paragraphs = [
        f"Calibration on the first {n_cal} images: target mean SSIM {calibration.target:.4f} (SSIM-ball attack), "
        f"PGD budget eps = {calibration.eps:.4f} gives {calibration.mean_ssim:.4f} after {len(calibration.history)} "
        f"PGD runs ({state}, tolerance {calibration.tolerance}). Over all {metrics['n']} images the PGD mean SSIM "
        f"minus the SSIM-ball mean SSIM is {metrics['ssim_gap']:+.4f}.",
        "At equal mean SSIM, the attack with the higher fooling rate uses its perceptual budget better. These numbers "
        "do not depend on the RoI.",
    ]
    values = {name: torch.cat(store.ssim_values) for name, store in stores.items()}
    summary = plot_attack_summary({n: m["fooling_rate"] for n, m in metrics["attacks"].items()}, values,
                                  ctx.rundir.figures / "attacks-summary.png", target=calibration.target)
    curve = plot_calibration(calibration.history, calibration.target, calibration.eps,
                             ctx.rundir.figures / "calibration.png", tolerance=calibration.tolerance)
    return Section("Attacks at matched SSIM", paragraphs, tables=[table], figures=[
        Figure(summary, "Fooling rate (left) and the per-image SSIM of every attacked image (right) for both attacks."),
        Figure(curve, "Calibration of the PGD budget: mean SSIM on the calibration images at each budget tried."),
    ], anchor="attacks-at-matched-ssim")


def maps_section(ctx: Context, metrics: dict[str, Any], examples: dict[str, list]) -> Section:
    from ..report.perceptual_figures import plot_ssim_vs_cam

    cfg = ctx.config
    rows = [[name, m["successful"]] + [fmt(m["maps"][s]) for s in STATS] + [m["maps"]["interpretation"]]
            for name, m in metrics["attacks"].items()]
    table = Table(f"SSIM map vs {ctx.method} of the true class (means over successful images)",
                  ["attack", "images"] + [STAT_LABELS[s] for s in STATS] + ["interpretation"], rows)
    figures = []
    if examples.get("labels") and sum(len(t) for t in examples["labels"]):
        ex = {k: torch.cat(v) for k, v in examples.items()}
        names = list(ctx.data.class_names)
        adversarial = {a: ex[f"{a}:x_adv"] for a in ATTACKS}
        captions = {a: [f"pred {names[int(p)]}, SSIM {float(s):.3f}" for p, s in zip(ex[f"{a}:adv_pred"],
                                                                                   ex[f"{a}:ssim"])] for a in ATTACKS}
        path = plot_ssim_vs_cam(ex["x"], ex["cam"], ex["cam_region"], adversarial,
                                {a: ex[f"{a}:dist"] for a in ATTACKS}, {a: ex[f"{a}:dist_region"] for a in ATTACKS},
                                ctx.rundir.figures / "ssim-maps-vs-cam.png",
                                row_labels=[names[int(c)] for c in ex["labels"]], adversarial_captions=captions,
                                importance_name=ctx.method, fraction=cfg.fraction)
        figures.append(Figure(path, "Images fooled by both attacks: clean image, CAM of the true class, then per "
                                    "attack the adversarial image and its 1-SSIM map; cyan contour: CAM top region "
                                    "(RoI), white dashed contour: top region of the 1-SSIM map (RoA)."))
    notes = [] if figures else ["No image was fooled by both attacks, so no side-by-side example is shown."]
    if not metrics["roi"]["faithful"]:
        notes.append(f"{sentence_case(NOT_INTERPRETABLE_ROI)}: these statistics describe the map "
                     f"{ctx.method}, not what the model uses.")
    return Section("SSIM maps vs CAM", ["Where each attack lowers SSIM (1 - SSIM_local) compared with where the "
                                        "model looks for the true class. Means only: whether they differ from "
                                        "chance is in the next section and the verdicts."], tables=[table],
                   figures=figures, notes=notes, anchor="ssim-maps-vs-cam")


def overlap_section(ctx: Context, metrics: dict[str, Any], claims: list[Claim]) -> Section:
    """Every statistic against every null (folded), with corrected p-values and verdicts, and their levels."""
    from ..report.perceptual_figures import plot_overlap_vs_baseline
    from ..report.verdicts import plot_forest, verdict_table

    cfg = ctx.config
    rest = [c for c in claims if not c.primary]
    tables = [verdict_table(rest, f"Every statistic vs every null ({cfg.permutations} permutations per pair-based "
                                  "null; two-sided p; Benjamini-Hochberg)", folded=True)]
    figures, notes = [], []
    inference = metrics.get("inference", {})
    if inference:
        levels = plot_overlap_vs_baseline(inference, ctx.rundir.figures / "overlap-vs-baseline.png",
                                          labels=ENGINE_LABELS)
        figures.append(Figure(levels, "Observed mean of each statistic next to the mean each null expects, per "
                                      "attack (confidence intervals of the differences: forest plot below, verdict "
                                      "tables)."))
        groups = {name: [c for c in claims if c.subject == name] for name in ATTACKS}
        if any(groups.values()):
            path = plot_forest(groups, ctx.rundir.figures / "forest-all.png",
                               title="Every statistic: observed minus each null (95% bootstrap CI)")
            figures.append(Figure(path, "Every statistic x null per attack: per-image excess over the null with its "
                                        "95% bootstrap CI. Grey: a gate failed."))
    else:
        notes.append("Fewer than 3 successful images per attack: no comparison with the nulls.")
    if not metrics["roi"]["faithful"]:
        notes.append(f"{sentence_case(NOT_INTERPRETABLE_ROI)}: every row here is RoI-dependent.")
    return Section("Overlap vs the nulls", [
        "Nulls, from the weakest to the most matched: uniform (the CAM region placed at random, analytic), "
        "any-class (the 1 − SSIM map of image i paired with the CAM of any other image), same-class (of another "
        "image of the same class), object-conditioned (same class and same foreground-share stratum). Observed below "
        "a null means the attack lowers SSIM away from where the model looks, more than that null: a finding in its "
        "own right, never hidden as p = 1."], tables=tables, figures=figures, notes=notes,
        anchor="overlap-vs-baseline")


def limits_section(ctx: Context, metrics: dict[str, Any]) -> Section:
    cfg = ctx.config
    return Section("Limits", [
        "The source study attacks MobileNetV2 on ImageNet (224x224 colour images); here a small CNN on 28x28 "
        "grey Fashion-MNIST images, whose black backgrounds are flat. There SSIM collapses under tiny changes: "
        "its luminance term (2 mx my + C1) / (mx^2 + my^2 + C1) with C1 = 1e-4 drops from 1 to 0.04 when a black "
        "region (mx = 0) is brightened by 0.05, and its contrast term likewise (almost no local variance). Any "
        "attack allowed to touch the background therefore lowers SSIM there first - the SSIM-ball attack "
        "included, whose luminance bound beta permits such shifts in every window - so the 1-SSIM map marks the "
        "background more than the object on this dataset.",
        "SSIM-ball windows are non-overlapping 4x4 blocks, while the reported SSIM uses an 11-tap Gaussian window: "
        "the constraint bounds the attack's own per-window SSIM term, not the reported SSIM, which is why the "
        "PGD budget is calibrated on the reported SSIM instead.",
        f"The PGD budget is calibrated on {min(cfg.calibration_n, metrics['n'])} images; the matched quantity is "
        "the mean SSIM over all attacked images, not the SSIM of each image, and the two attacks spread it "
        "differently (see the SSIM distributions).",
        f"The CAM ({ctx.method}) of a small CNN is coarse (upsampled from its last feature maps) and is interpreted "
        f"only where it passes the faithfulness gate; regions are the top {cfg.fraction:.0%} of each map, so IoU "
        "depends on that choice, and only observed-vs-null differences are interpreted.",
    ], anchor="limits")


def summary_text(metrics: dict[str, Any]) -> str:
    """The summary printed at the end of ``advspatial run perceptual``."""
    cal = metrics["calibration"]
    roi = metrics["roi"]
    lines = [f"clean accuracy {fmt(metrics['clean_accuracy'], 4)} on {metrics['n']} images; PGD eps "
             f"{cal['eps']:.4f} matches mean SSIM {cal['target']:.4f} -> {cal['mean_ssim']:.4f} on the calibration "
             f"images ({'matched' if cal['matched'] else 'NOT matched'})",
             f"RoI: {roi['method']} of the true class, faithfulness gate "
             f"{'passed' if roi['faithful'] else 'FAILED (' + metrics['faithfulness'][roi['method']]['reason'] + ')'}"]
    header = f"{'attack':<10} {'fooling':>8} {'SSIM':>7} " + " ".join(f"{s:>14}" for s in STATS)
    lines += ["map statistics: mean over successful images", header, "-" * len(header)]
    for name, m in metrics["attacks"].items():
        lines.append(f"{name:<10} {fmt(m['fooling_rate']):>8} {fmt(m['mean_ssim'], 4):>7} "
                     + " ".join(f"{fmt(m['maps'][s]):>14}" for s in STATS))
    for c in metrics.get("claims", []):
        if c["primary"]:
            e = c["effect"]
            lines.append(f"{c['subject']}: energy in CAM {fmt(c['observed'])} vs same-class null {fmt(c['null_value'])}"
                         f", excess {fmt(e['mean'])} [{fmt(e['low'])}, {fmt(e['high'])}], p_adj "
                         f"{c['p_adjusted']:.3g} -> {c['verdict']}")
    if not roi["faithful"]:
        lines.append(f"map statistics and verdicts: {NOT_INTERPRETABLE_ROI}")
    return "\n".join(lines)
