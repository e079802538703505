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
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks import Attack, AttackResult, make_attack
from ..data import load_dataset
from ..defense.adaptive import bpda_pgd, roi_restricted_attack
from ..defense.evaluate import evaluate_defence
from ..defense.fills import list_fills, make_fill
from ..defense.neutralize import ClassPriorVulnerability, NeutralizedModel, random_region_like, select_regions
from ..errors import ConfigError, check_range, unknown_name
from ..maps import attack_map, importance_map, list_attack_maps, list_importance_methods
from ..regions import MapAccumulator, binarize, overlap_statistics, permutation_test, segregate
from ..runtime import RunDir, batch_slices
from .base import ExperimentConfig, ExperimentResult, mean_of, prepare_context, register_experiment, setting
from .base import ExperimentContext as Context

PARTS = ("both", "roi_only", "roa_only", "neither")
STATS = ("iou", "dice", "energy_in_roi", "pointing_game", "spearman", "pearson")
L2_LIKE = ("l2", "l0")


@dataclass
class SpatialConfig(ExperimentConfig):
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
    importance: str = setting("gradcam", "importance map of the RoI (advspatial list maps)")
    attack_map: str = setting("contribution", "attack map of the RoA; magnitude is added for L2/L0 attacks")
    contribution_steps: int = setting(16, "Gauss-Legendre points of the contribution map's path integral "
                                          "(completeness error is reported per image)")
    fraction: float = setting(0.2, "top fraction of each map that forms RoI and RoA, and the neutralized fraction")
    permutations: int = setting(200, "permutations of the baseline")
    permutation_images: int = setting(1000, "successful images per attack entering the permutation test")
    fill: str = setting("zero", "fill of the neutralized region (zero, mean, blur, inpaint)")
    fills: list[str] = setting(["zero", "mean", "blur", "inpaint"], "fills compared in the sweep")
    fractions: list[float] = setting([0.05, 0.1, 0.2, 0.3, 0.5], "neutralized fractions of the sweep")
    inpaint_iterations: int = setting(100, "Jacobi sweeps of the diffusion inpainting fill (stops earlier at 1e-5)")
    defence_attack: str = setting("pgd", "attack whose examples feed the sweep and the adaptive attacks")
    prior_n: int = setting(500, "training images for the per-class prior of the deployable defence")
    adaptive_steps: int = setting(10, "steps of the adaptive attacks")
    figure_images: int = setting(6, "example images per figure")

    QUICK = {"n": 24, "batch_size": 12, "onepixel_n": 8, "onepixel_popsize": 40, "onepixel_steps": 5,
             "cw_steps": 10, "cw_search_steps": 2, "steps": 5, "contribution_steps": 8, "permutations": 20,
             "prior_n": 24, "adaptive_steps": 3, "fractions": [0.1, 0.3], "figure_images": 3}

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
        if self.importance not in list_importance_methods():
            raise unknown_name("importance method", self.importance, list_importance_methods())
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
    """Attack maps computed for an attack: the configured one, plus magnitude for L2/L0 attacks."""
    kinds = [config.attack_map]
    if attack.norm in L2_LIKE and "magnitude" not in kinds:
        kinds.append("magnitude")
    return kinds


# -- the per-batch pipeline ------------------------------------------------------------

def importance_fn(ctx: Context) -> Callable[[torch.Tensor], torch.Tensor]:
    """The deployable RoI map: importance of the input's predicted class."""
    return lambda z: importance_map(ctx.config.importance, ctx.model, z, target="pred", batch_size=len(z) or 1)


def gradient_fn(ctx: Context) -> Callable[[torch.Tensor], torch.Tensor]:
    """The deployable RoA map: the input gradient (needs no clean image)."""
    return lambda z: attack_map("gradient", ctx.model, z).map


def roi_batch(ctx: Context, b: int) -> dict[str, torch.Tensor]:
    """Clean prediction and importance map of batch b (cached)."""

    def compute() -> dict[str, torch.Tensor]:
        x, y, _ = ctx.batch(ctx.slices[b])
        with torch.no_grad():
            pred = ctx.model(x).argmax(1)
        imp = importance_map(ctx.config.importance, ctx.model, x, target="pred", batch_size=len(x))
        return {"pred": pred.cpu(), "importance": imp.cpu()}

    return ctx.rundir.cached(f"roi/batch-{b:05d}", compute)  # type: ignore[return-value]


def attack_batch(ctx: Context, name: str, attack: Attack, b: int, sl: slice) -> AttackResult:
    def compute() -> dict[str, Any]:
        x, y, ids = ctx.batch(sl)
        result = attack.run(x, y, sample_ids=ids).to("cpu")
        return {k: getattr(result, k) for k in result.__dataclass_fields__}

    return AttackResult(**ctx.rundir.cached(f"attack/{name}/batch-{b:05d}", compute))


def maps_batch(ctx: Context, name: str, kind: str, b: int, sl: slice, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    def compute() -> dict[str, torch.Tensor]:
        x, y, _ = ctx.batch(sl)
        kw = {"steps": ctx.config.contribution_steps} if kind == "contribution" else {}
        amap = attack_map(kind, ctx.model, x, x_adv.to(ctx.device), y, **kw)
        out = {"map": amap.map.cpu()}
        if amap.completeness_error is not None:
            out["completeness_error"] = amap.completeness_error.cpu()
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
            kw = {"steps": cfg.contribution_steps} if cfg.attack_map == "contribution" else {}
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
    """What the report needs of one attack, beyond the per-image rows."""

    name: str
    norm: str
    n: int
    perm_inputs: dict[str, dict[str, list[torch.Tensor]]]
    mean_maps: dict[str, MapAccumulator]
    examples: dict[str, list[torch.Tensor]]


def process_attack(
    ctx: Context, name: str, defences: dict[str, NeutralizedModel] | None, rows: list[dict[str, Any]]
) -> AttackSummary:
    """Run one attack over its images; append per-image rows; collect what aggregates need.

    ``defences`` None skips the defence columns (the ``advspatial maps`` command).
    """
    cfg, data = ctx.config, ctx.data
    attack = build_attack(name, ctx.model, cfg)
    n_a = images_for(name, attack, cfg, len(data))
    kinds = map_kinds(attack, cfg)
    shape = data.image_shape[1:]
    summary = AttackSummary(name, attack.norm, n_a, {k: defaultdict(list) for k in kinds},
                            {"roi": MapAccumulator(data.num_classes, shape),
                             **{k: MapAccumulator(data.num_classes, shape) for k in kinds}}, defaultdict(list))
    slices = list(batch_slices(n_a, cfg.batch_size))
    for b, sl in enumerate(tqdm(slices, desc=f"{name}: attack, maps, defence", disable=not cfg.progress, unit="batch")):
        result = attack_batch(ctx, name, attack, b, sl)
        clean = roi_batch(ctx, b)
        size = sl.stop - sl.start
        imp, pred = clean["importance"][:size], clean["pred"][:size]
        y, ids = data.labels[sl], torch.arange(sl.start, sl.stop)
        ok = (pred == y) & result.success
        cols: dict[str, torch.Tensor] = {}
        for kind in kinds:
            maps = maps_batch(ctx, name, kind, b, sl, result.x_adv)
            stats, roi, roa = region_rows(imp, maps["map"], ids, cfg)
            cols.update({f"{kind}:{k}": v for k, v in stats.items()})
            if "completeness_error" in maps:
                cols[f"{kind}:completeness_error"] = maps["completeness_error"]
            collect_permutation_inputs(summary.perm_inputs[kind], imp, maps["map"], roi, roa, y, ok, cfg)
            summary.mean_maps[kind].update(maps["map"][ok], y[ok])
            if kind == kinds[0]:  # the main attack map: figure examples and the oracle defence's RoA
                oracle_map = maps["map"]
                collect_examples(summary.examples, data.images(sl), result.x_adv, imp, maps["map"], roi, roa, y, ok, cfg)
        summary.mean_maps["roi"].update(imp[ok], y[ok])
        if defences is not None:
            cols.update(defence_batch(ctx, name, b, sl, result.x_adv, oracle_map, defences))
        rows.extend(batch_rows(name, attack.norm, ids, y, pred, result, cols))
    return summary


def collect_permutation_inputs(store: dict[str, list[torch.Tensor]], imp: torch.Tensor, amap: torch.Tensor,
                               roi: torch.Tensor, roa: torch.Tensor, y: torch.Tensor, ok: torch.Tensor,
                               cfg: SpatialConfig) -> None:
    """Keep the maps of the first ``permutation_images`` successful images (bounded memory)."""
    have = sum(len(t) for t in store["labels"])
    room = max(cfg.permutation_images - have, 0)
    keep = ok.nonzero().squeeze(1)[:room]
    for key, value in (("importance", imp), ("attack", amap), ("roi", roi), ("roa", roa), ("labels", y)):
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
        stats = {s: mean_of([r[f"{kind}:{s}"] for r in ok]) for s in (*STATS, *PARTS)}
        if f"{kind}:completeness_error" in group[0]:
            errors = sorted(r[f"{kind}:completeness_error"] for r in ok if r[f"{kind}:completeness_error"] == r[f"{kind}:completeness_error"])
            stats["completeness_error_median"] = errors[len(errors) // 2] if errors else math.nan
            stats["completeness_error_max"] = errors[-1] if errors else math.nan
        out["maps"][kind] = stats
    out["defence"] = defence_metrics(group)
    for kind in kinds:
        out["maps"][kind]["empty_roi_share"] = mean_of([float(r[f"{kind}:roi_pixels"] == 0) for r in ok])
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

    ctx = prepare_context(config, rundir)
    data = ctx.data
    for b in tqdm(range(len(ctx.slices)), desc="clean: predictions, importance maps", disable=not config.progress,
                  unit="batch"):
        roi_batch(ctx, b)
    prior = class_prior(ctx)
    rows: list[dict[str, Any]] = []
    defences = deployable_defences(ctx, prior)
    summaries = [process_attack(ctx, name, defences, rows) for name in config.attacks]
    defence_slices = list(batch_slices(len(data), config.batch_size))
    sweep = aggregate_sweep(ctx, defence_slices)
    adaptive = aggregate_adaptive(ctx, defence_slices, prior)
    metrics = build_metrics(ctx, summaries, rows, sweep, adaptive)
    permutation = {s.name: permutation_results(s, config) for s in summaries}
    metrics["permutation"] = {a: {k: {s: {"observed": r.observed_mean, "baseline_mean": r.baseline_mean,
                                          "baseline_std": r.baseline_std, "p_value": r.p_value}
                                      for s, r in res.items()} for k, res in by_kind.items()}
                              for a, by_kind in permutation.items()}
    sections = spatial_report.build_sections(ctx, summaries, metrics, permutation, rows)
    return ExperimentResult(metrics, rows, spatial_report.summary_table(metrics), sections)


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


def permutation_results(summary: AttackSummary, config: SpatialConfig) -> dict[str, dict[str, Any]]:
    """Permutation tests per attack map, within class and over any class."""
    out: dict[str, dict[str, Any]] = {}
    for kind, store in summary.perm_inputs.items():
        labels = torch.cat(store["labels"]) if store["labels"] else torch.zeros(0, dtype=torch.long)
        if len(labels) < 3:
            continue
        args = [torch.cat(store[k]) for k in ("importance", "attack", "roi", "roa")]
        out[f"{kind}|same-class"] = permutation_test(*args, labels=labels, n_permutations=config.permutations,
                                                     within_class=True, seed=config.seed)
        out[f"{kind}|any-class"] = permutation_test(*args, labels=labels, n_permutations=config.permutations,
                                                    within_class=False, seed=config.seed)
    return out


def build_metrics(ctx: Context, summaries: list[AttackSummary], rows: list[dict[str, Any]],
                  sweep: dict[str, float], adaptive: dict[str, float]) -> dict[str, Any]:
    cfg = ctx.config
    first = [r for r in rows if r["attack"] == cfg.attacks[0]]
    attacks = {s.name: attack_metrics(rows, s.name, list(s.perm_inputs)) for s in summaries}
    return {
        "n": len(ctx.data),
        "clean_accuracy": mean_of([float(r["correct"]) for r in first]),
        "clean_cost": {k: v for k, v in attacks[cfg.attacks[0]]["defence"].items() if k.endswith("_clean")},
        "attacks": attacks,
        "sweep": sweep,
        "adaptive": adaptive,
        "defence_attack": cfg.defence_attack,
    }


def maps_analysis(config: SpatialConfig, rundir: RunDir) -> tuple[list[dict[str, Any]], dict[str, Any], list[Any]]:
    """RoI/RoA maps, regions, statistics and baselines for ``config.attacks`` - no defence.

    Backs the ``advspatial maps`` command; returns (per-image rows, metrics, figure paths).
    """
    from . import spatial_report

    ctx = prepare_context(config, rundir)
    data = ctx.data
    rows: list[dict[str, Any]] = []
    summaries = [process_attack(ctx, name, None, rows) for name in config.attacks]
    metrics = {"n": len(data), "clean_accuracy": mean_of([float(r["correct"]) for r in rows if r["attack"] == config.attacks[0]]),
               "attacks": {s.name: attack_metrics(rows, s.name, list(s.perm_inputs)) for s in summaries}}
    permutation = {s.name: permutation_results(s, config) for s in summaries}
    sections = [spatial_report.where_section(ctx, summaries, metrics),
                spatial_report.overlap_section(ctx, summaries, permutation)]
    metrics["permutation"] = {a: {k: {s: {"observed": r.observed_mean, "baseline_mean": r.baseline_mean,
                                          "p_value": r.p_value} for s, r in res.items()}
                                  for k, res in by_kind.items()} for a, by_kind in permutation.items()}
    return rows, metrics, [fig.path for section in sections for fig in section.figures]
