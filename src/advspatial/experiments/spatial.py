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
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks import Attack, AttackResult, make_attack
from ..data import load_dataset
from ..defense.adaptive import bpda_pgd, roi_restricted_attack
from ..defense.evaluate import evaluate_defence
from ..defense.fills import list_fills, make_fill
from ..defense.neutralize import ClassPriorVulnerability, NeutralizedModel, select_regions
from ..errors import ConfigError, check_range, unknown_name
from ..maps import attack_map, feature_map_size, importance_map, list_attack_maps, list_importance_methods
from ..regions import MapAccumulator, binarize, overlap_statistics, random_region_like, segregate
from ..regions.claims import Claim, claim_from, judge
from ..regions.inference import bootstrap_mean_ci, compare_to_nulls, pool_to_scale
from ..runtime import RunDir, batch_slices
from . import colocation
from .base import ExperimentContext, ExperimentResult, mean_of, prepare_context, register_experiment, setting
from .gate import GatedConfig, gate_stage, resolve_importance, roi_label

PARTS = ("both", "roi_only", "roa_only", "neither")
STATS = ("iou", "dice", "energy_in_roi", "pointing_game", "spearman", "pearson")


@dataclass
class SpatialConfig(GatedConfig):
    """Settings of the spatial experiment (METHODS §1-2); every one is a CLI option."""

    attacks: list[str] = setting(["fgsm", "pgd", "pgd-l2", "cw-l2", "deepfool", "onepixel"],
                                 "attacks to run (advspatial list attacks)")
    eps_linf: float = setting(0.1, "L-inf budget of FGSM/PGD and of the adaptive attack")
    eps_l2: float = setting(1.5, "L2 budget of PGD-L2")
    steps: int = setting(20, "PGD iterations")
    cw_steps: int = setting(40, "Adam steps per CW-L2 binary-search round")
    cw_search_steps: int = setting(3, "CW-L2 binary-search rounds over c")
    onepixel_n: int = setting(100, "images given to the one-pixel attack (a prefix of the n images)")
    onepixel_popsize: int = setting(100, "one-pixel DE population per image (literature: 400)")
    onepixel_steps: int = setting(30, "one-pixel DE generations (literature: 75)")
    importance: str = setting("auto", "importance map of the RoI: auto (Grad-CAM for a GAP+linear head, HiResCAM "
                                      "for a flatten/FC head) or a name (advspatial list maps)")
    panel: list[str] = setting(["gradcam", "hirescam", "occlusion", "ig"],
                               "explainers of the sensitivity panel (each gated; the RoI's own is always added)")
    panel_fractions: list[float] = setting([0.05, 0.1, 0.2, 0.3, 0.5], "region fractions of the sensitivity panel")
    attack_map: str = setting("contribution", "attack map of the RoA; magnitude is added for L2 attacks")
    contribution_part: str = setting("drop", "contribution map: drop (pixels lowering the margin) or absolute")
    contribution_steps: int = setting(16, "initial Gauss-Legendre points of the contribution map (doubled per "
                                          "image until completeness is within the tolerance)")
    completeness_tolerance: float = setting(0.02, "completeness tolerance of the contribution map; images above "
                                                  "it after refinement are flagged and excluded")
    max_flagged_share: float = setting(0.1, "completeness gate: at most this share of images flagged")
    fraction: float = setting(0.2, "top fraction of each map that forms RoI and RoA, and the neutralized fraction")
    permutations: int = setting(10000, "random within-group permutations of each pair-based null (two-sided p)")
    permutation_images: int = setting(1000, "successful images per attack entering the statistics (N x N pairs)")
    strata: int = setting(4, "composition strata per class of the object-conditioned null")
    common_scale: bool = setting(False, "compare RoI and RoA at the CAM layer's resolution (both maps average-"
                                        "pooled to it) instead of the input's")
    fill: str = setting("zero", "fill of the neutralized region (zero, mean, blur, inpaint)")
    fills: list[str] = setting(["zero", "mean", "blur", "inpaint"], "fills compared in the sweep")
    fractions: list[float] = setting([0.05, 0.1, 0.2, 0.3, 0.5], "neutralized fractions of the sweep")
    inpaint_iterations: int = setting(100, "Jacobi sweeps of the diffusion inpainting fill (stops earlier at 1e-5)")
    defence_attack: str = setting("pgd", "attack whose examples feed the sweep and the adaptive attacks")
    prior_n: int = setting(500, "training images for the per-class prior of the deployable defence")
    adaptive_steps: int = setting(10, "steps of the adaptive attacks")
    figure_images: int = setting(6, "example images per figure")

    QUICK = {"n": 24, "batch_size": 12, "onepixel_n": 8, "onepixel_popsize": 40, "onepixel_steps": 5,
             "cw_steps": 10, "cw_search_steps": 2, "steps": 5, "contribution_steps": 8,
             "prior_n": 24, "adaptive_steps": 3, "fractions": [0.1, 0.3], "figure_images": 3,
             "permutations": 200, "gate_n": 24, "gate_steps": 5, "randomization_images": 4,
             "panel": ["gradcam", "occlusion"], "panel_fractions": [0.1, 0.3]}

    def validate(self) -> None:
        super().validate()
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
        for method in [self.importance, *self.panel]:
            if method not in list_importance_methods():
                raise unknown_name("importance method", method, list_importance_methods())
        if self.contribution_part not in ("drop", "absolute"):
            raise unknown_name("contribution part", self.contribution_part, ("drop", "absolute"))
        for f in self.panel_fractions:
            check_range("panel_fractions", f, 0, 1, low_inclusive=False, high_inclusive=False)
        check_range("completeness_tolerance", self.completeness_tolerance, 0, low_inclusive=False)
        check_range("max_flagged_share", self.max_flagged_share, 0, 1)
        check_range("strata", self.strata, 1)
        if self.attack_map not in list_attack_maps():
            raise unknown_name("attack map", self.attack_map, list_attack_maps())
        for fill in [self.fill, *self.fills]:
            if fill not in list_fills():
                raise unknown_name("fill", fill, list_fills())
        check_range("fraction", self.fraction, 0, 1, low_inclusive=False, high_inclusive=False)
        for f in self.fractions:
            check_range("fractions", f, 0, 1, low_inclusive=False, high_inclusive=False)
        check_range("eps_linf", self.eps_linf, 0, 1)
        check_range("eps_l2", self.eps_l2, 0)
        for name in ("steps", "cw_steps", "cw_search_steps", "inpaint_iterations", "onepixel_n", "onepixel_popsize", "onepixel_steps",
                     "contribution_steps", "permutations", "permutation_images", "prior_n", "adaptive_steps"):
            check_range(name, getattr(self, name), 1)
        check_range("figure_images", self.figure_images, 0)


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
        "pgd": {"eps": eps, "alpha": 2.5 * eps / steps, "steps": steps},
        "pgd-linf": {"eps": eps, "alpha": 2.5 * eps / steps, "steps": steps},
        "bim": {"eps": eps, "alpha": 2.5 * eps / steps, "steps": steps},
        "pgd-l2": {"eps": config.eps_l2, "alpha": 2.5 * config.eps_l2 / steps, "steps": steps},
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
        x, y, _ = ctx.batch(ctx.slices[b])
        with torch.no_grad():
            pred = ctx.model(x).argmax(1)
        imp = importance_map(ctx.importance, ctx.model, x, target="pred", batch_size=len(x))
        return {"pred": pred.cpu(), "importance": imp.cpu()}

    return ctx.rundir.cached(f"roi/batch-{b:05d}", compute)  # type: ignore[return-value]


def panel_batch(ctx: Context, method: str, b: int) -> torch.Tensor:
    """Importance map of another explainer (sensitivity panel) for batch b, predicted class (cached)."""
    if method == ctx.importance:
        return roi_batch(ctx, b)["importance"]

    def compute() -> torch.Tensor:
        x, _, _ = ctx.batch(ctx.slices[b])
        return importance_map(method, ctx.model, x, target="pred", batch_size=len(x)).cpu()

    return ctx.rundir.cached(f"panel/{method}/batch-{b:05d}", compute)  # type: ignore[return-value]


def attack_batch(ctx: Context, name: str, attack: Attack, b: int, sl: slice) -> AttackResult:
    def compute() -> dict[str, Any]:
        x, y, ids = ctx.batch(sl)
        result = attack.run(x, y, sample_ids=ids).to("cpu")
        return {k: getattr(result, k) for k in result.__dataclass_fields__}

    return AttackResult(**ctx.rundir.cached(f"attack/{name}/batch-{b:05d}", compute))


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


# -- the defence -----------------------------------------------------------------------

def deployable_defences(ctx: Context, prior: torch.Tensor | None) -> dict[str, NeutralizedModel]:
    cfg = ctx.config
    defences = {"gradient": NeutralizedModel(ctx.model, importance_fn(ctx), gradient_fn(ctx), cfg.fraction,
                                             cfg.fill, seed=cfg.seed, fill_params=fill_params(ctx, cfg.fill))}
    if prior is not None:
        defences["prior"] = NeutralizedModel(ctx.model, importance_fn(ctx),
                                             ClassPriorVulnerability(prior.to(ctx.device), ctx.model), cfg.fraction,
                                             cfg.fill, seed=cfg.seed, fill_params=fill_params(ctx, cfg.fill))
    return defences


def fill_params(ctx: Context, fill: str) -> dict[str, Any]:
    """Extra parameters of a fill: the training-set mean for ``mean``, the sweep count for ``inpaint``."""
    if fill == "mean":
        return {"dataset_mean": dataset_mean(ctx)}
    if fill == "inpaint":
        return {"iterations": ctx.config.inpaint_iterations}
    return {}


def dataset_mean(ctx: Context) -> torch.Tensor:
    """Per-channel mean of the training images (first 10000), for the ``mean`` fill."""

    def compute() -> torch.Tensor:
        train = load_dataset(ctx.config.dataset, "train").head(10000)
        total = torch.zeros(train.image_shape[0], dtype=torch.float64)
        for x, _, _ in train.batches(2000):
            total += x.double().sum(dim=(0, 2, 3))
        return (total / (len(train) * train.image_shape[1] * train.image_shape[2])).float()

    return ctx.rundir.cached("dataset-mean", compute).to(ctx.device)  # type: ignore[union-attr]


def class_prior(ctx: Context) -> torch.Tensor:
    """(K,H,W) mean attack map per predicted adversarial class, on training images (METHODS §2).

    The prior is indexed by the class predicted on the *attacked* training image,
    because at deployment the defence only sees the (possibly adversarial) input.
    """
    cfg = ctx.config

    def compute() -> torch.Tensor:
        train = load_dataset(cfg.dataset, "train").head(cfg.prior_n)
        attack = build_attack(cfg.defence_attack, ctx.model, cfg)
        acc = MapAccumulator(train.num_classes, train.image_shape[1:])
        for sl in tqdm(list(batch_slices(len(train), cfg.batch_size)), desc="prior (training images)",
                       disable=not cfg.progress, unit="batch"):
            x, y = train.images(sl).to(ctx.device), train.labels[sl].to(ctx.device)
            result = attack.run(x, y, sample_ids=torch.arange(sl.start, sl.stop) + 10_000_000)
            kw = contribution_kw(cfg) if cfg.attack_map == "contribution" else {}
            amap = attack_map(cfg.attack_map, ctx.model, x, result.x_adv, y, **kw).map
            acc.update(amap.cpu(), result.adv_pred.cpu())
        return torch.nan_to_num(acc.means(), nan=0.0)

    return ctx.rundir.cached("prior", compute)  # type: ignore[return-value]


def defence_batch(
    ctx: Context, name: str, b: int, sl: slice, x_adv: torch.Tensor, amap: torch.Tensor,
    defences: dict[str, NeutralizedModel],
) -> dict[str, torch.Tensor]:
    """Per-image defence columns for one attack and batch (cached).

    The clean-cost columns do not depend on the attack: they are computed with the
    first attack of the run only (its rows carry them).
    """
    with_clean = name == ctx.config.attacks[0]

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(sl)
        roi = roi_batch(ctx, b)["importance"][: sl.stop - sl.start].to(ctx.device)
        oracle = select_regions(roi, amap.to(ctx.device), ctx.config.fraction, seed=ctx.config.seed, sample_ids=ids)
        out: dict[str, torch.Tensor] = {}
        for tag, defended in defences.items():
            ev = evaluate_defence(ctx.model, defended, x, y, x_adv.to(ctx.device),
                                  oracle.neutralized if tag == "gradient" else None,
                                  oracle.roa if tag == "gradient" else None,
                                  seed=ctx.config.seed, batch_size=len(x), clean=with_clean)
            for col, values in ev.columns().items():
                if col.startswith("pred_") or col.startswith("n_region"):
                    out[f"{tag}:{col}"] = values
        return out

    return ctx.rundir.cached(f"defence/{name}/batch-{b:05d}", compute)  # type: ignore[return-value]


def sweep_batch(ctx: Context, b: int, sl: slice, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """Correct-prediction counts for every (fraction, fill): defended and random control, adv and clean."""
    cfg = ctx.config

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(sl)
        counts: dict[str, torch.Tensor] = {}
        for tag, images in (("adv", x_adv.to(ctx.device)), ("clean", x)):
            imp = importance_fn(ctx)(images)
            vul = gradient_fn(ctx)(images)
            for fraction in cfg.fractions:
                region = select_regions(imp, vul, fraction, seed=cfg.seed, sample_ids=ids).neutralized
                control = random_region_like(region, cfg.seed, sample_ids=ids)
                for fill in cfg.fills:
                    fill_fn = make_fill(fill, **fill_params(ctx, fill))
                    with torch.no_grad():
                        defended = ctx.model(fill_fn(images, region)).argmax(1) == y
                        random = ctx.model(fill_fn(images, control)).argmax(1) == y
                    counts[f"{tag}|{fraction}|{fill}|defended"] = defended.sum().cpu()
                    counts[f"{tag}|{fraction}|{fill}|random"] = random.sum().cpu()
        return counts

    return ctx.rundir.cached(f"sweep/batch-{b:05d}", compute)  # type: ignore[return-value]


def adaptive_batch(ctx: Context, b: int, sl: slice, defended: NeutralizedModel) -> dict[str, torch.Tensor]:
    """Adaptive attacks on the deployable defence: BPDA-PGD through it, and the RoI-restricted PGD."""
    cfg = ctx.config

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(sl)
        eps, steps = cfg.eps_linf, cfg.adaptive_steps
        x_bpda, _ = bpda_pgd(defended, x, y, eps, 2.5 * eps / steps, steps, seed=cfg.seed, sample_ids=ids)
        pgd = make_attack("pgd", defended, eps=eps, alpha=2.5 * eps / steps, steps=steps, seed=cfg.seed)
        x_roi, _ = roi_restricted_attack(lambda z, t, mask: pgd.run(z, t, mask=mask, sample_ids=ids).x_adv,
                                         x, y, importance_fn(ctx), cfg.fraction, seed=cfg.seed, sample_ids=ids)
        with torch.no_grad():
            return {
                "bpda:defended": defended(x_bpda).argmax(1).cpu(),
                "bpda:undefended": ctx.model(x_bpda).argmax(1).cpu(),
                "roi:defended": defended(x_roi).argmax(1).cpu(),
                "roi:undefended": ctx.model(x_roi).argmax(1).cpu(),
            }

    return ctx.rundir.cached(f"adaptive/batch-{b:05d}", compute)  # type: ignore[return-value]


# -- aggregation -----------------------------------------------------------------------

@dataclass
class AttackSummary:
    """What the report needs of one attack, beyond the per-image rows.

    ``stores[kind]`` keeps the first ``permutation_images`` successful,
    completeness-checked images (maps, regions, labels, composition, ids and,
    for the defence attack, the panel explainers' maps) for the statistics;
    ``frequency`` accumulates the regions per class (P(pixel in region | class)).
    """

    name: str
    norm: str
    n: int
    stores: dict[str, dict[str, list[torch.Tensor]]]
    frequency: dict[str, MapAccumulator]
    examples: dict[str, list[torch.Tensor]]

    def store(self, kind: str) -> dict[str, torch.Tensor]:
        """The kept images of one attack map, concatenated."""
        return {k: torch.cat(v) for k, v in self.stores[kind].items() if v}

    def kept(self, kind: str) -> int:
        return sum(len(t) for t in self.stores[kind].get("labels", []))


def process_attack(
    ctx: Context, name: str, defences: dict[str, NeutralizedModel] | None, rows: list[dict[str, Any]]
) -> AttackSummary:
    """Run one attack over its images; append per-image rows; collect what aggregates need.

    ``defences`` None skips the defence columns (the ``advspatial maps`` command).
    Images whose contribution map stays outside the completeness tolerance are
    flagged and enter no statistic.
    """
    cfg, data = ctx.config, ctx.data
    attack = build_attack(name, ctx.model, cfg)
    n_a = images_for(name, attack, cfg, len(data))
    kinds = map_kinds(attack, cfg)
    shape = tuple(ctx.scale or data.image_shape[1:])
    summary = AttackSummary(name, attack.norm, n_a, {k: defaultdict(list) for k in kinds},
                            {k: MapAccumulator(data.num_classes, shape) for k in ("roi", *kinds)}, defaultdict(list))
    panel = panel_methods(ctx) if name == cfg.defence_attack else []
    slices = list(batch_slices(n_a, cfg.batch_size))
    for b, sl in enumerate(tqdm(slices, desc=f"{name}: attack, maps, defence", disable=not cfg.progress, unit="batch")):
        result = attack_batch(ctx, name, attack, b, sl)
        clean = roi_batch(ctx, b)
        size = sl.stop - sl.start
        imp, pred = ctx.at_scale(clean["importance"][:size]), clean["pred"][:size]
        y, ids = data.labels[sl], torch.arange(sl.start, sl.stop)
        success = (pred == y) & result.success
        x = data.images(sl)
        extra = {"composition": colocation.composition(x), "ids": ids,
                 **{f"panel:{m}": ctx.at_scale(panel_batch(ctx, m, b)[:size]) for m in panel}}
        cols: dict[str, torch.Tensor] = {}
        for kind in kinds:
            maps = maps_batch(ctx, name, kind, b, sl, result.x_adv)
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
            if kind == kinds[0]:  # the main attack map: figure examples, the RoI frequency, the oracle defence's RoA
                oracle_map = maps["map"]
                summary.frequency["roi"].update(roi[ok].float(), y[ok])
                collect_examples(summary.examples, x, result.x_adv, clean["importance"][:size], maps["map"],
                                 ctx.at_input(roi), ctx.at_input(roa), y, ok, cfg)
        if defences is not None:
            cols.update(defence_batch(ctx, name, b, sl, result.x_adv, oracle_map, defences))
        rows.extend(batch_rows(name, attack.norm, ids, y, pred, result, cols))
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


def defence_vs_control(rows: list[dict[str, Any]], attack: str, seed: int) -> dict[str, Any]:
    """Per deployable defence: paired per-image accuracy defended - random control, mean with a bootstrap CI."""
    group = list(iter_group(rows, attack))
    out = {}
    for tag in ("gradient", "prior"):
        if group and f"{tag}:pred_defended_adv" in group[0]:
            diff = [float(r[f"{tag}:pred_defended_adv"] == r["label"]) - float(r[f"{tag}:pred_random_adv"] == r["label"])
                    for r in group]
            out[tag] = bootstrap_mean_ci(diff, seed=seed).as_dict()
    return out


def defence_metrics(group: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy of every defence column over all images of the attack (incl. those it did not fool)."""
    keys = [k for k in group[0] if ":pred_" in k] if group else []
    return {k.replace(":pred_", ":"): mean_of([float(r[k] == r["label"]) for r in group]) for k in keys}


# -- the experiment --------------------------------------------------------------------

@register_experiment("spatial", SpatialConfig,
                     "RoI vs RoA: where attacks act vs where the model looks, and the neutralization defence")
def run_spatial(config: SpatialConfig, rundir: RunDir) -> ExperimentResult:
    from . import spatial_report

    ctx = spatial_context(config, rundir)
    data = ctx.data
    for b in tqdm(range(len(ctx.slices)), desc="clean: predictions, importance maps", disable=not config.progress,
                  unit="batch"):
        roi_batch(ctx, b)
    gates = run_gates(ctx)
    prior = class_prior(ctx)
    rows: list[dict[str, Any]] = []
    defences = deployable_defences(ctx, prior)
    summaries = [process_attack(ctx, name, defences, rows) for name in config.attacks]
    defence_slices = list(batch_slices(len(data), config.batch_size))
    sweep = aggregate_sweep(ctx, defence_slices)
    adaptive = aggregate_adaptive(ctx, defence_slices, prior)
    metrics = build_metrics(ctx, summaries, rows, sweep, adaptive)
    claims = measure(ctx, summaries, metrics, gates)
    sections = spatial_report.build_sections(ctx, summaries, metrics, claims, rows)
    return ExperimentResult(metrics, rows, spatial_report.summary_table(metrics), sections)


def run_gates(ctx: Context) -> dict[str, dict[str, Any]]:
    """The faithfulness gate of the RoI's explainer and of every panel explainer, on the run's own maps."""
    cfg = ctx.config
    return {m: gate_stage(ctx, m, cfg.fraction, cfg.eps_linf, maps=lambda b, m=m: panel_batch(ctx, m, b))
            for m in panel_methods(ctx)}


def spatial_context(config: SpatialConfig, rundir: RunDir) -> Context:
    """The shared context with the RoI method resolved (``auto``: by the model's head type)."""
    base = prepare_context(config, rundir)
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


def aggregate_sweep(ctx: Context, slices: list[slice]) -> dict[str, float]:
    """Accuracy per (adv|clean, fraction, fill, defended|random) for the defence attack's examples."""
    cfg = ctx.config
    attack = build_attack(cfg.defence_attack, ctx.model, cfg)
    totals: dict[str, float] = defaultdict(float)
    for b, sl in enumerate(tqdm(slices, desc="defence sweep", disable=not cfg.progress, unit="batch")):
        result = attack_batch(ctx, cfg.defence_attack, attack, b, sl)
        for key, count in sweep_batch(ctx, b, sl, result.x_adv).items():
            totals[key] += float(count)
    n = len(ctx.data)
    return {k: v / n for k, v in totals.items()}


def aggregate_adaptive(ctx: Context, slices: list[slice], prior: torch.Tensor | None) -> dict[str, float]:
    cfg = ctx.config
    defended = deployable_defences(ctx, prior)["gradient"]
    correct: dict[str, float] = defaultdict(float)
    for b, sl in enumerate(tqdm(slices, desc="adaptive attacks", disable=not cfg.progress, unit="batch")):
        preds = adaptive_batch(ctx, b, sl, defended)
        y = ctx.data.labels[sl]
        for key, pred in preds.items():
            correct[key] += float((pred == y).sum())
    return {k: v / len(ctx.data) for k, v in correct.items()}


def build_metrics(ctx: Context, summaries: list[AttackSummary], rows: list[dict[str, Any]],
                  sweep: dict[str, float], adaptive: dict[str, float]) -> dict[str, Any]:
    cfg = ctx.config
    first = [r for r in rows if r["attack"] == cfg.attacks[0]]
    attacks = {s.name: attack_metrics(rows, s.name, map_kinds_of(s)) for s in summaries}
    return {
        "n": len(ctx.data),
        "clean_accuracy": mean_of([float(r["correct"]) for r in first]),
        "defence_vs_control": defence_vs_control(rows, cfg.defence_attack, cfg.seed),
        "clean_cost": {k: v for k, v in attacks[cfg.attacks[0]]["defence"].items() if k.endswith("_clean")},
        "attacks": attacks,
        "sweep": sweep,
        "adaptive": adaptive,
        "defence_attack": cfg.defence_attack,
    }


def maps_analysis(config: SpatialConfig, rundir: RunDir) -> tuple[list[dict[str, Any]], dict[str, Any], list[Any]]:
    """RoI/RoA maps, regions, the faithfulness gate, statistics and verdicts for ``config.attacks`` - no defence.

    Backs the ``advspatial maps`` command; returns (per-image rows, metrics, report sections).
    """
    from . import spatial_report

    ctx = spatial_context(config, rundir)
    gates = run_gates(ctx)
    rows: list[dict[str, Any]] = []
    summaries = [process_attack(ctx, name, None, rows) for name in config.attacks]
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
