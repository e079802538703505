"""Experiment ``spatial`` (the main job): where attacks act vs where the model looks, and the
neutralization defence evaluated honestly (METHODS.md §1-2).

Stages, each streamed batch by batch and saved in the run directory so that
``--resume`` completes an interrupted run with identical numbers:

1. clean predictions and the importance map (RoI side) of every clean image;
2. every attack (FGSM, PGD-Linf, PGD-L2, CW-L2, DeepFool; one-pixel on a
   prefix subset) with per-sample seeds;
3. attack maps (RoA side: ``contribution`` for all, plus ``magnitude`` for
   L2/L0 attacks), regions, the four-part segregation and the overlap
   statistics per image; permutation baselines on the first
   ``permutation_images`` successful images (bounded memory for any n);
4. the neutralization defence per attack: deployable (gradient map; per-class
   prior), random-region controls, oracle (true delta) with its control inside
   RoA, the clean-pixels-back upper bound, the clean cost; a sweep over the
   neutralized fraction and the fills for ``defence_attack``; the adaptive
   attacks (BPDA-PGD through the defence, the RoI-restricted attack).

Statistics are over the images the model classifies correctly *and* the attack
fools ("successful"): only there does the perturbation explain a decision change.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..attacks import Attack, AttackResult, make_attack
from ..data import ImageDataset
from ..regions.fills import list_fills
from ..defense.neutralize import CONTROL_MATCHES, NeutralizedModel
from ..defense.transforms import TRANSFORMS
from ..errors import ConfigError, unknown_name
from ..maps import attack_map, feature_map_size, importance_map, list_attack_maps, list_importance_methods
from ..regions import MapAccumulator, binarize, overlap_statistics, segregate
from ..regions.claims import Claim, claim_from, judge
from ..regions.inference import compare_to_nulls, pool_to_scale
from ..runtime import RunDir, batch_slices
from . import colocation
from .base import (
    OPEN_UNIT_INTERVAL, ExperimentContext, ExperimentResult, mean_of, prepare_context, register_experiment, setting,
)
from .gate import GatedConfig, gate_stage, resolve_importance, roi_label

PARTS = ("both", "roi_only", "roa_only", "neither")
STATS = ("iou", "dice", "energy_in_roi", "pointing_game", "spearman", "pearson")


@dataclass
class MeasurementConfig(GatedConfig):
    """Settings of the RoI/RoA measurement (METHODS §1): attacks, maps, regions, statistics. The spatial
    experiment adds the defence's (:class:`SpatialConfig`); ``analyze`` measures examples made elsewhere."""

    attacks: list[str] = setting(["fgsm", "pgd", "pgd-l2", "cw-l2", "deepfool", "onepixel"],
                                 "attacks to run (advspatial list attacks)")
    eps_linf: float = setting(0.1, "L-inf budget of FGSM/PGD and of the adaptive attack", low=0, high=1)
    eps_l2: float = setting(1.5, "L2 budget of PGD-L2", low=0)
    steps: int = setting(20, "PGD iterations", low=1)
    cw_steps: int = setting(40, "Adam steps per CW-L2 binary-search round", low=1)
    cw_search_steps: int = setting(3, "CW-L2 binary-search rounds over c", low=1)
    onepixel_n: int = setting(100, "images given to the one-pixel attack (a prefix of the n images)", low=1)
    onepixel_popsize: int = setting(100, "one-pixel DE population per image (literature: 400)", low=1)
    onepixel_steps: int = setting(30, "one-pixel DE generations (literature: 75)", low=1)
    importance: str = setting("auto", "importance map of the RoI: auto (Grad-CAM for a GAP+linear head, HiResCAM "
                                      "for a flatten/FC head) or a name (advspatial list maps)")
    panel: list[str] = setting(["gradcam", "hirescam", "occlusion", "ig"],
                               "explainers of the sensitivity panel (each gated; the RoI's own is always added)")
    panel_fractions: list[float] = setting([0.05, 0.1, 0.2, 0.3, 0.5], "region fractions of the sensitivity panel",
                                           **OPEN_UNIT_INTERVAL)
    attack_map: str = setting("contribution", "attack map of the RoA; magnitude is added for L2 attacks")
    contribution_part: str = setting("drop", "contribution map: drop (pixels lowering the margin) or absolute")
    contribution_steps: int = setting(16, "initial Gauss-Legendre points of the contribution map (doubled per "
                                          "image until completeness is within the tolerance)", low=1)
    completeness_tolerance: float = setting(0.02, "completeness tolerance of the contribution map; images above "
                                                  "it after refinement are flagged and excluded",
                                            low=0, low_inclusive=False)
    max_flagged_share: float = setting(0.1, "completeness gate: at most this share of images flagged", low=0, high=1)
    fraction: float = setting(0.2, "top fraction of each map that forms RoI and RoA, and the neutralized fraction",
                              **OPEN_UNIT_INTERVAL)
    permutations: int = setting(10000, "random within-group permutations of each pair-based null (two-sided p)", low=1)
    permutation_images: int = setting(1000, "successful images per attack entering the statistics (N x N pairs)", low=1)
    strata: int = setting(4, "composition strata per class of the object-conditioned null", low=1)
    common_scale: bool = setting(False, "compare RoI and RoA at the CAM layer's resolution (both maps average-"
                                        "pooled to it) instead of the input's")
    defence_attack: str = setting("pgd", "attack whose examples feed the explainer panel and the defence's "
                                         "non-adaptive sweep")
    figure_images: int = setting(6, "example images per figure", low=0)

    PRESET_FIELDS = {"eps_linf": "eps_linf", "eps_l2": "eps_l2", "steps": "steps", "cw_steps": "cw_steps",
                     "cw_search_steps": "cw_search_steps", "onepixel_popsize": "onepixel_popsize",
                     "onepixel_steps": "onepixel_steps", "batch_size": "batch_size", "image_size": "image_size"}

    def validate(self) -> None:
        super().validate()
        self.validate_attacks()
        self.validate_measurement()

    def validate_attacks(self) -> None:
        """The attacks are registered; the defence's attack is one of them and runs on every image."""
        from ..attacks import list_attacks

        known = list_attacks()
        for name in self.attacks:
            if name not in known:
                raise unknown_name("attack", name, known)
        if not self.attacks:
            raise ConfigError("attacks must name at least one attack")
        if self.defence_attack not in self.attacks:
            raise ConfigError(f"defence_attack={self.defence_attack!r} must be one of attacks {self.attacks}")
        if known[self.defence_attack].cls.norm == "l0":
            raise ConfigError(f"defence_attack={self.defence_attack!r}: choose an attack run on all n images (not L0)")

    def validate_measurement(self) -> None:
        """The settings of the RoI/RoA measurement: explainers, maps, fractions, budgets, statistics."""
        for method in [self.importance, *self.panel]:
            if method not in list_importance_methods():
                raise unknown_name("importance method", method, list_importance_methods())
        if self.contribution_part not in ("drop", "absolute"):
            raise unknown_name("contribution part", self.contribution_part, ("drop", "absolute"))
        if self.attack_map not in list_attack_maps():
            raise unknown_name("attack map", self.attack_map, list_attack_maps())


@dataclass
class SpatialConfig(MeasurementConfig):
    """Settings of the spatial experiment (METHODS §1-2): the measurement's and the defence's; each is a CLI option."""

    fill: str = setting("zero", "fill of the neutralized region (zero, mean, blur, inpaint)")
    fills: list[str] = setting(["zero", "blur"], "fills compared in the sweep (--eval full: zero, mean, blur, inpaint)")
    fractions: list[float] = setting([0.1, 0.3], "neutralized fractions of the sweep, beside the main --fraction "
                                                 "(--eval full: 0.05, 0.1, 0.2, 0.3, 0.5)", **OPEN_UNIT_INTERVAL)
    inpaint_iterations: int = setting(100, "Jacobi sweeps of the diffusion inpainting fill (stops earlier at 1e-5)",
                                      low=1)
    prior_n: int = setting(500, "training images for the per-class prior of the deployable defence", low=1)
    control_draws: int = setting(10, "draws per image of every random control (keyed by the global image id)", low=1)
    control_match: str = setting("foreground", "what the random control matches besides its size and avoiding the "
                                               "RoI: foreground (object/background pixel counts), change (the fill's "
                                               "per-pixel change, so its L2 change) or none")
    eval: str = setting("default", "strength of the defence evaluation: default (the settings as given) or full "
                                   "(every image attacked adaptively, EOT 20, 200 convergence images, the whole "
                                   "sweep grid and three strengths per baseline)")
    adaptive_n: int = setting(50, "images of the adaptive evaluation (the first ones; all with --eval full)", low=1)
    adaptive_steps: int = setting(100, "APGD iterations per restart of the adaptive ensemble", low=1)
    adaptive_restarts: int = setting(5, "APGD restarts of the adaptive ensemble", low=1)
    adaptive_queries: int = setting(5000, "Square attack queries of the adaptive ensemble", low=1)
    eot_iter: int = setting(4, "EOT: forward passes averaged per gradient on a randomized defence (20 with --eval full)",
                            low=1)
    eot_early_stop: bool = setting(True, "EOT attacks stop an image once every pass of a step is fooled (cheaper, "
                                         "weaker; a control is then never judged more robust than its defence; "
                                         "--eval full: off)")
    sweep_adaptive: bool = setting(True, "attack every (fraction, fill) of the sweep adaptively too")
    convergence_n: int = setting(30, "images of the convergence curves (200 with --eval full)", low=1)
    convergence_steps: list[int] = setting([10, 50, 100, 500], "iteration counts of the convergence curve "
                                                                        "(must contain adaptive_steps and go beyond)")
    convergence_restarts: list[int] = setting([1, 5, 10], "restart counts of the convergence curve (must contain "
                                                             "adaptive_restarts and go beyond)")
    convergence_eps: list[float] = setting([0.25, 1.0, 2.0, 8.0], "eps of the eps curve, as multiples "
                                                                            "of eps_linf (capped at 1)",
                                           low=0, low_inclusive=False)
    baselines: list[str] = setting(["blur", "noise", "jpeg"], "trivial input transforms of the trade-off plot")
    blur_sigmas: list[float] = setting([1.0], "Gaussian blur baselines: sigma in pixels (--eval full: 0.5, 1, 2)")
    noise_sds: list[float] = setting([0.2], "Gaussian noise baselines: standard deviation (--eval full: 0.1, 0.2, 0.4)")
    jpeg_qualities: list[float] = setting([20], "JPEG-style quantization baselines: quality, lower is coarser "
                                                "(--eval full: 50, 20, 5)")

    #: what ``--eval full`` sets (None: every image)
    FULL_EVAL: ClassVar[dict[str, Any]] = {
        "adaptive_n": None, "eot_iter": 20, "eot_early_stop": False, "convergence_n": 200, "fractions": [0.05, 0.1, 0.2, 0.3, 0.5],
        "fills": ["zero", "mean", "blur", "inpaint"], "blur_sigmas": [0.5, 1.0, 2.0], "noise_sds": [0.1, 0.2, 0.4],
        "jpeg_qualities": [50, 20, 5], "convergence_steps": [10, 20, 50, 100, 200, 500],
        "convergence_restarts": [1, 2, 5, 10], "convergence_eps": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]}

    QUICK = {"n": 24, "batch_size": 12, "onepixel_n": 8, "onepixel_popsize": 40, "onepixel_steps": 5,
             "cw_steps": 10, "cw_search_steps": 2, "steps": 5, "contribution_steps": 8,
             "prior_n": 24, "fractions": [0.1, 0.3], "figure_images": 3, "adaptive_n": 12,
             "adaptive_steps": 5, "adaptive_restarts": 1, "adaptive_queries": 40, "eot_iter": 2, "control_draws": 3,
             "convergence_n": 6, "convergence_steps": [2, 5, 10], "convergence_restarts": [1, 2],
             "convergence_eps": [0.5, 1.0, 8.0], "fills": ["zero", "blur"], "blur_sigmas": [1.0],
             "noise_sds": [0.2], "jpeg_qualities": [20],
             "permutations": 200, "gate_n": 24, "gate_steps": 5, "randomization_images": 4,
             "panel": ["gradcam", "occlusion"], "panel_fractions": [0.1, 0.3]}

    def validate(self) -> None:
        super().validate()
        self.validate_defence()

    def validate_defence(self) -> None:
        """The defence's settings: fills and fractions of the sweep, the adaptive evaluation's preset (applied
        here, so config.yaml shows it), budgets, control matching, curve grids, baselines."""
        if not self.fills or not self.fractions:
            raise ConfigError("fills and fractions must each name at least one value (the defence sweep)")
        for fill in [self.fill, *self.fills]:
            if fill not in list_fills():
                raise unknown_name("fill", fill, list_fills())
        from ..defense.adaptive import AdaptiveBudget, CurveGrid
        from ..defense.transforms import check_strengths

        if self.eval not in ("default", "full"):
            raise unknown_name("eval preset", self.eval, ("default", "full"))
        if self.eval == "full":
            for name, value in self.FULL_EVAL.items():
                setattr(self, name, self.n if value is None else value)
        if self.control_match not in CONTROL_MATCHES:
            raise unknown_name("control_match", self.control_match, CONTROL_MATCHES)
        budget = AdaptiveBudget(steps=self.adaptive_steps, restarts=self.adaptive_restarts)
        CurveGrid(tuple(self.convergence_steps), tuple(self.convergence_restarts), tuple(self.convergence_eps)).check(budget)
        grids = {"blur": self.blur_sigmas, "noise": self.noise_sds, "jpeg": self.jpeg_qualities}
        for transform in self.baselines:
            if transform not in TRANSFORMS:
                raise unknown_name("baseline", transform, TRANSFORMS)
            check_strengths(transform, list(grids[transform]))


@dataclass
class Context(ExperimentContext):
    """The shared context plus the RoI method this run resolved (``auto`` picks by head type) and why."""

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


# -- attacks ---------------------------------------------------------------------------

def build_attack(name: str, model: nn.Module, config: SpatialConfig) -> Attack:
    """The attack ``name`` with the experiment's budgets."""
    eps, steps = config.eps_linf, config.steps
    params: dict[str, dict[str, Any]] = {
        "fgsm": {"eps": eps},
        "pgd": {"eps": eps, "alpha": "auto", "steps": steps},
        "pgd-linf": {"eps": eps, "alpha": "auto", "steps": steps},
        "bim": {"eps": eps, "alpha": "auto", "steps": steps},
        "pgd-l2": {"eps": config.eps_l2, "alpha": "auto", "steps": steps},
        "cw-l2": {"steps": config.cw_steps, "binary_search_steps": config.cw_search_steps},
        "onepixel": {"popsize": config.onepixel_popsize, "maxiter": config.onepixel_steps},
        "kpixel": {"popsize": config.onepixel_popsize, "maxiter": config.onepixel_steps},
    }
    return make_attack(name, model, seed=config.seed, **params.get(name, {}))


def images_for(name: str, attack: Attack, config: SpatialConfig, n: int) -> int:
    """How many images (a prefix) attack ``name`` gets: one-pixel attacks run on a subset."""
    return min(n, config.onepixel_n) if attack.norm == "l0" else n


def map_kinds(attack: Attack, config: SpatialConfig) -> list[str]:
    """Attack maps computed for an attack: the configured one, plus magnitude for L2 attacks.

    An L0 attack gets one map only: for a one-pixel perturbation every map marks
    the same pixel, and duplicate rows would count one result twice.
    """
    kinds = [config.attack_map]
    if attack.norm == "l2" and "magnitude" not in kinds:
        kinds.append("magnitude")
    return kinds


def contribution_kw(config: SpatialConfig) -> dict[str, Any]:
    """Settings of the contribution map (steps, signed part, per-image completeness refinement)."""
    return {"steps": config.contribution_steps, "part": config.contribution_part,
            "tolerance": config.completeness_tolerance}


# -- the per-batch pipeline ------------------------------------------------------------

def importance_fn(ctx: Context) -> Callable[[torch.Tensor], torch.Tensor]:
    """The deployable RoI map: importance of the input's predicted class."""
    return lambda z: importance_map(ctx.importance, ctx.model, z, target="pred", batch_size=len(z) or 1)


def gradient_fn(ctx: Context) -> Callable[[torch.Tensor], torch.Tensor]:
    """The deployable RoA map: the input gradient (needs no clean image)."""
    return lambda z: attack_map("gradient", ctx.model, z).map


def roi_batch(ctx: Context, b: int) -> dict[str, torch.Tensor]:
    """Clean prediction and importance map of batch b (cached)."""

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(ctx.slices[b])
        with torch.no_grad():
            pred = ctx.model(x).argmax(1)
        imp = importance_map(ctx.importance, ctx.model, x, target="pred", batch_size=len(x), sample_ids=ids)
        return {"pred": pred.cpu(), "importance": imp.cpu()}

    return ctx.rundir.cached(f"roi/batch-{b:05d}", compute)  # type: ignore[return-value]


def panel_batch(ctx: Context, method: str, b: int) -> torch.Tensor:
    """Importance map of another explainer (sensitivity panel) for batch b, predicted class (cached)."""
    if method == ctx.importance:
        return roi_batch(ctx, b)["importance"]

    def compute() -> torch.Tensor:
        x, _, ids = ctx.batch(ctx.slices[b])
        return importance_map(method, ctx.model, x, target="pred", batch_size=len(x), sample_ids=ids).cpu()

    return ctx.rundir.cached(f"panel/{method}/batch-{b:05d}", compute)  # type: ignore[return-value]


def attack_batch(ctx: Context, name: str, attack: Attack, b: int, sl: slice) -> AttackResult:
    """Attack ``name`` on batch b (cached)."""
    return ctx.attack_stage(f"attack/{name}", attack, b, sl)


def maps_batch(ctx: Context, name: str, kind: str, b: int, sl: slice, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    def compute() -> dict[str, torch.Tensor]:
        x, y, _ = ctx.batch(sl)
        kw = contribution_kw(ctx.config) if kind == "contribution" else {}
        amap = attack_map(kind, ctx.model, x, x_adv.to(ctx.device), y, **kw)
        out = {"map": amap.map.cpu()}
        if amap.completeness_error is not None:
            out["completeness_error"] = amap.completeness_error.cpu()
            out["flagged"] = amap.flagged.cpu()
            out["steps_used"] = amap.steps_used.cpu()
        return out

    return ctx.rundir.cached(f"maps/{name}/{kind}/batch-{b:05d}", compute)  # type: ignore[return-value]


def region_rows(
    imp: torch.Tensor, amap: torch.Tensor, ids: torch.Tensor, config: SpatialConfig
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


# -- aggregation -----------------------------------------------------------------------

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
        return sum(len(t) for t in self.stores[kind].get("labels", []))


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
    n_a = images_for(name, attack, cfg, len(data))
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
            from .spatial_defence import defence_batch

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
                 **{f"panel:{m}": ctx.at_scale(stages["panel"][m][:size]) for m in panel}}
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
            from .spatial_defence import split_columns

            row_cols, draws = split_columns(stages["defence"], y)
            cols.update(row_cols)
            for key, hits in draws.items():
                summary.draws[key].append(hits)
        rows.extend(batch_rows(name, attack.norm, ids, y, pred, result, cols))

    ctx.each_batch(compute, desc=f"{name}: attack, maps, defence", slices=list(batch_slices(n_a, cfg.batch_size)),
                   then=accumulate)
    return summary


def panel_methods(ctx: Context) -> list[str]:
    """The explainers of the sensitivity panel, the RoI's own first, duplicates left out."""
    return ctx.panel


def keep_first(store: dict[str, list[torch.Tensor]], limit: int, ok: torch.Tensor, **values: torch.Tensor) -> None:
    """Append the ``ok`` images of a batch until ``limit`` are kept (bounded memory for any n)."""
    have = sum(len(t) for t in store["labels"])
    keep = ok.nonzero().squeeze(1)[: max(limit - have, 0)]
    for key, value in values.items():
        store[key].append(value[keep])


def collect_examples(store: dict[str, list[torch.Tensor]], x: torch.Tensor, x_adv: torch.Tensor, imp: torch.Tensor,
                     amap: torch.Tensor, roi: torch.Tensor, roa: torch.Tensor, y: torch.Tensor, ok: torch.Tensor,
                     cfg: SpatialConfig) -> None:
    have = sum(len(t) for t in store["labels"])
    keep = ok.nonzero().squeeze(1)[: max(cfg.figure_images - have, 0)]
    for key, value in (("x", x), ("x_adv", x_adv), ("importance", imp), ("attack", amap), ("roi", roi),
                       ("roa", roa), ("labels", y)):
        store[key].append(value[keep].cpu())


def batch_rows(name: str, norm: str, ids: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, result: AttackResult,
               cols: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    base = {"index": ids, "label": y, "clean_pred": pred, "correct": pred == y, "success": result.success,
            "adv_pred": result.adv_pred, "l0": result.l0, "l2": result.l2, "linf": result.linf,
            "queries": result.queries}
    columns = {**base, **cols}
    lists = {k: v.tolist() for k, v in columns.items()}
    return [{"attack": name, "norm": norm, **{k: lists[k][i] for k in columns}} for i in range(len(ids))]


def iter_group(rows: list[dict[str, Any]], attack: str) -> Iterator[dict[str, Any]]:
    return (r for r in rows if r["attack"] == attack)


def attack_metrics(rows: list[dict[str, Any]], name: str, kinds: list[str]) -> dict[str, Any]:
    """Summary of one attack, computed from its per-image rows only (so the two always agree)."""
    group = list(iter_group(rows, name))
    correct = [r for r in group if r["correct"]]
    ok = [r for r in correct if r["success"]]
    out: dict[str, Any] = {
        "images": len(group),
        "clean_accuracy": mean_of([float(r["correct"]) for r in group]),
        "success_rate": mean_of([float(r["success"]) for r in correct]),
        "adversarial_accuracy": mean_of([float(r["adv_pred"] == r["label"]) for r in group]),
        "successful": len(ok),
        "mean_l0": mean_of([float(r["l0"]) for r in ok]),
        "mean_l2": mean_of([r["l2"] for r in ok]),
        "mean_linf": mean_of([r["linf"] for r in ok]),
        "maps": {},
    }
    for kind in kinds:
        complete = [r for r in ok if not r.get(f"{kind}:flagged", False)]  # flagged maps enter no statistic
        stats = {s: mean_of([r[f"{kind}:{s}"] for r in complete]) for s in (*STATS, *PARTS)}
        if f"{kind}:completeness_error" in group[0]:
            errors = sorted(e for r in ok if (e := r[f"{kind}:completeness_error"]) == e)
            stats["completeness_error_median"] = errors[len(errors) // 2] if errors else math.nan
            stats["completeness_error_max"] = errors[-1] if errors else math.nan
            stats["flagged_share"] = mean_of([float(r[f"{kind}:flagged"]) for r in ok])
        out["maps"][kind] = stats
    out["defence"] = defence_metrics(group)
    for kind in kinds:
        out["maps"][kind]["empty_roi_share"] = mean_of([float(r[f"{kind}:roi_pixels"] == 0) for r in ok])
    return out


def defence_metrics(group: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy of every defence column over all images of the attack (incl. those it did not fool).

    ``tag:pred_X`` columns are predicted classes; ``tag:correct_X`` columns are a
    control's share of correct draws per image (its accuracy is their mean).
    """
    out = {}
    for key in (group[0] if group else {}):
        if ":pred_" in key:
            out[key.replace(":pred_", ":")] = mean_of([float(r[key] == r["label"]) for r in group])
        elif ":correct_" in key:
            out[key.replace(":correct_", ":")] = mean_of([float(r[key]) for r in group])
    return out


# -- the experiment --------------------------------------------------------------------

@register_experiment("spatial", SpatialConfig,
                     "RoI vs RoA: where attacks act vs where the model looks, and the neutralization defence")
def run_spatial(config: SpatialConfig, rundir: RunDir) -> ExperimentResult:
    from . import spatial_defence, spatial_report

    ctx = spatial_context(config, rundir)
    ctx.each_batch(lambda b, sl: roi_batch(ctx, b), desc="clean: predictions, importance maps", then=lambda *_: None)
    gates = run_gates(ctx)
    prior = spatial_defence.class_prior(ctx)
    rows: list[dict[str, Any]] = []
    defences = spatial_defence.deployable_defences(ctx, prior)
    summaries = [process_attack(ctx, name, defences, rows) for name in config.attacks]
    sweep = spatial_defence.aggregate_sweep(ctx)
    outcomes = spatial_defence.adaptive_stage(ctx, prior)
    convergence = spatial_defence.convergence_stage(ctx, prior)
    metrics = build_metrics(ctx, summaries, rows)
    metrics["sweep"] = spatial_defence.sweep_summary(ctx, sweep)
    claims = measure(ctx, summaries, metrics, gates)
    metrics["adaptive"] = spatial_defence.summarize_adaptive(ctx, outcomes, convergence, metrics["roi"]["faithful"],
                                                             prior is not None)
    sections = spatial_report.build_sections(ctx, summaries, metrics, claims, rows)
    return ExperimentResult(metrics, rows, spatial_report.summary_table(metrics), sections)


def run_gates(ctx: Context) -> dict[str, dict[str, Any]]:
    """The faithfulness gate of the RoI's explainer and of every panel explainer, on the run's own maps."""
    cfg = ctx.config
    return {m: gate_stage(ctx, m, cfg.fraction, cfg.eps_linf, maps=lambda b, m=m: panel_batch(ctx, m, b))
            for m in panel_methods(ctx)}


def spatial_context(config: SpatialConfig, rundir: RunDir, images: ImageDataset | None = None) -> Context:
    """The shared context with the RoI method resolved (``auto``: by the model's head type); ``images``: the
    test images when they are not ``config.dataset``'s (see :func:`~.base.prepare_context`)."""
    base = prepare_context(config, rundir, images)
    probe, _, _ = base.batch(slice(0, 1))
    method, reason = resolve_importance(config.importance, base.model, probe)
    scale = feature_map_size(base.model, probe) if config.common_scale else None
    ctx = base.derive(Context, importance=method, importance_reason=reason, scale=scale)
    ctx.panel, ctx.panel_duplicates = distinct_explainers(ctx, [method, *config.panel])
    return ctx


def distinct_explainers(ctx: Context, methods: list[str]) -> tuple[list[str], dict[str, str]]:
    """``methods`` without repeats and without explainers whose maps equal an earlier one's up to scale.

    Checked on the first batch (e.g. HiResCAM equals Grad-CAM / (h*w) on a GAP +
    linear head): a duplicate would cost a gate and add a copy of a test to a
    correction family. Returns (kept, {dropped: the explainer it duplicates}).
    """
    kept: list[str] = []
    duplicates: dict[str, str] = {}
    for method in dict.fromkeys(methods):
        normalized = max_normalized(panel_batch(ctx, method, 0))
        twin = next((k for k in kept if torch.allclose(normalized, max_normalized(panel_batch(ctx, k, 0)),
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


def measure(ctx: Context, summaries: list[AttackSummary], metrics: dict[str, Any],
            gates: dict[str, dict[str, Any]]) -> list[Claim]:
    """The RoI/RoA inference: engine results, claims, corrections and verdicts, written into ``metrics``."""
    cfg = ctx.config
    roi_gate = gates[ctx.importance]
    label = roi_label(roi_gate)
    metrics["faithfulness"] = gates
    metrics["roi"] = {"method": ctx.importance, "why": ctx.importance_reason, "faithful": bool(roi_gate["passed"]),
                      "interpretation": label or "interpretable"}
    metrics["inference"], claims = {}, []
    for s in summaries:
        main = map_kinds_of(s)[0]
        for kind in map_kinds_of(s):
            subject = f"{s.name} ({kind} RoA)"
            gate_set = claim_gates(roi_gate, metrics["attacks"][s.name]["maps"][kind], cfg)
            if s.kept(kind) < 3:
                continue
            if s.norm == "l0":
                claims.append(colocation.pixel_claim(s.store(kind), subject, gate_set, cfg.seed))
                continue
            comparisons = colocation.compare_store(s.store(kind), cfg.permutations, cfg.seed, cfg.strata)
            metrics["inference"].setdefault(s.name, {})[kind] = colocation.comparisons_dict(comparisons)
            claims += colocation.attack_claims(subject, comparisons, gate_set, primary=kind == main)
        for kind, stats in metrics["attacks"][s.name]["maps"].items():
            stats["interpretation"] = label or "interpretable"
    main_attack = next((s for s in summaries if s.name == cfg.defence_attack), None)
    if main_attack is not None and main_attack.kept(cfg.attack_map) >= 3:
        claims += panel_claims(ctx, main_attack, gates, metrics)
    judge(claims, sesoi=cfg.sesoi, alpha=cfg.significance)
    metrics["claims"] = [c.as_dict() for c in claims]
    metrics["defence_interpretation"] = label or "interpretable"
    return claims


def map_kinds_of(summary: AttackSummary) -> list[str]:
    return list(summary.stores)


def claim_gates(roi_gate: dict[str, Any], map_stats: dict[str, Any], cfg: SpatialConfig) -> dict[str, bool]:
    """The validity gates of a co-location claim: the RoI is faithful; the RoA map is complete enough."""
    gates = {"RoI faithfulness": bool(roi_gate["passed"])}
    if "flagged_share" in map_stats:
        share = map_stats["flagged_share"]
        gates["completeness"] = not (share > cfg.max_flagged_share)
    return gates


def panel_claims(ctx: Context, summary: AttackSummary, gates: dict[str, dict[str, Any]],
                 metrics: dict[str, Any]) -> list[Claim]:
    """Explainer-sensitivity panel: the primary statistic under each gated explainer and each region fraction."""
    cfg = ctx.config
    kind = cfg.attack_map
    store = summary.store(kind)
    map_stats = metrics["attacks"][summary.name]["maps"][kind]
    out = []
    ids = store["ids"]
    roa = store["roa"]
    for method in panel_methods(ctx)[1:]:
        imp = store[f"panel:{method}"]
        roi = binarize(imp, fraction=cfg.fraction, seed=cfg.seed, sample_ids=ids).mask
        out.append(panel_claim(ctx, f"{summary.name}: {method} RoI, top {cfg.fraction:.0%}", imp, store["attack"], roi,
                               roa, store, claim_gates(gates[method], map_stats, cfg)))
    for fraction in cfg.panel_fractions:
        if fraction == cfg.fraction:
            continue
        roi = binarize(store["importance"], fraction=fraction, seed=cfg.seed, sample_ids=ids).mask
        roa_f = binarize(store["attack"], fraction=fraction, seed=cfg.seed + 1, sample_ids=ids).mask
        out.append(panel_claim(ctx, f"{summary.name}: {ctx.importance} RoI, top {fraction:.0%}", store["importance"],
                               store["attack"], roi, roa_f, store, claim_gates(gates[ctx.importance], map_stats, cfg)))
    metrics["panel"] = [{"subject": c.subject, "observed": c.observed, "null": c.null_value,
                         "effect": c.effect.as_dict(), "p": c.p} for c in out]
    return out


def panel_claim(ctx: Context, subject: str, imp: torch.Tensor, attack: torch.Tensor, roi: torch.Tensor,
                roa: torch.Tensor, store: dict[str, torch.Tensor], gates: dict[str, bool]) -> Claim:
    cfg = ctx.config
    result = compare_to_nulls(imp, attack, roi, roa, store["labels"], statistics=(colocation.PRIMARY_STATISTIC,),
                              n_permutations=cfg.permutations, seed=cfg.seed, nulls=(colocation.PRIMARY_NULL,))
    comparison = result[colocation.PRIMARY_STATISTIC][colocation.PRIMARY_NULL]
    return claim_from(comparison, colocation.CLAIM, subject, gates, primary=False)


def build_metrics(ctx: Context, summaries: list[AttackSummary], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-adaptive metrics: per attack, the clean cost, paired defence comparisons, the controls' spread."""
    from .spatial_defence import draw_spread, nonadaptive_comparisons

    cfg = ctx.config
    first = [r for r in rows if r["attack"] == cfg.attacks[0]]
    attacks = {s.name: attack_metrics(rows, s.name, map_kinds_of(s)) for s in summaries}
    for s in summaries:
        attacks[s.name]["control_draws"] = draw_spread(s.draws)
    return {
        "n": len(ctx.data),
        "clean_accuracy": mean_of([float(r["correct"]) for r in first]),
        "nonadaptive": nonadaptive_comparisons(rows, list(cfg.attacks), cfg.seed),
        "clean_cost": {k: v for k, v in attacks[cfg.attacks[0]]["defence"].items() if k.endswith("_clean")},
        "attacks": attacks,
        "defence_attack": cfg.defence_attack,
    }


def maps_analysis(config: MeasurementConfig, rundir: RunDir, images: ImageDataset | None = None,
                  attacks: dict[str, Callable[[nn.Module], Attack]] | None = None,
                  ) -> tuple[list[dict[str, Any]], dict[str, Any], list[Any]]:
    """RoI/RoA maps, regions, the faithfulness gate, statistics and verdicts for ``config.attacks`` - no defence.

    Backs the ``advspatial maps`` command and the ``analyze`` experiment, which passes its own ``images``
    and, in ``attacks``, a maker ``model -> Attack`` per name (the examples made elsewhere) in place of the
    registered attack; returns (per-image rows, metrics, report sections).
    """
    from . import spatial_report

    ctx = spatial_context(config, rundir, images)
    gates = run_gates(ctx)
    rows: list[dict[str, Any]] = []
    makers = attacks or {}
    summaries = [process_attack(ctx, name, None, rows, makers[name](ctx.model) if name in makers else None)
                 for name in config.attacks]
    metrics = {"n": len(ctx.data),
               "clean_accuracy": mean_of([float(r["correct"]) for r in rows if r["attack"] == config.attacks[0]]),
               "attacks": {s.name: attack_metrics(rows, s.name, map_kinds_of(s)) for s in summaries}}
    claims = measure(ctx, summaries, metrics, gates)
    sections = [spatial_report.verdict_section(ctx, summaries, metrics, claims),
                spatial_report.gate_section(ctx, metrics),
                spatial_report.setup_section(ctx, metrics),
                spatial_report.where_section(ctx, summaries, metrics),
                spatial_report.overlap_section(ctx, claims)]
    return rows, metrics, sections
