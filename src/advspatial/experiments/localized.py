"""Experiment ``localized``: localized attacks and localized adversarial training (METHODS.md §4).

Three models of the same architecture are trained (or loaded from the model
cache) on the same data: ``natural`` (clean cross-entropy), ``pgd`` (Madry PGD
adversarial training) and ``localized`` (each batch: clean plus
background-only PGD examples, mixed with weight ``mix``). Each model is then
attacked on the first ``n`` test images by

- full-image PGD (the usual L-inf or L2 ball),
- PGD restricted to the ``mask`` region (default ``background``: the pixels
  with ``x <= 0.05`` on MNIST-like data, the exact object complement on the
  synthetic shapes), and
- PGD restricted to the complement of that region (``foreground``), optional.

Besides accuracy, the experiment measures what a background-only attack does
to where the model looks: the share of the Grad-CAM energy of the true class
that lies in the complement of the attacked region (the foreground), before
and after the attack.

Stages streamed batch by batch and saved in the run directory (``--resume``):
``attack/<model>/<region|complement|full>/batch-*`` (via
:func:`advspatial.pipeline.attack_dataset`) and ``gradcam/<model>/batch-*``.
Trained models live in the model cache (``$ADVSPATIAL_CACHE/models``), keyed by
every training setting, so a resumed or repeated run does not train again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks import Attack, make_attack
from ..data import ImageDataset, load_dataset
from ..errors import ConfigError, check_range
from ..maps import importance_map
from ..masks import MASK_KINDS, attack_mask
from ..pipeline import attack_dataset
from ..report.html import Figure, Section, Table
from ..report.localized_figures import plot_accuracy_bars, plot_gradcam_shift, plot_localized_examples
from ..runtime import RunDir, batch_slices, model_device, pick_device
from ..training import TrainConfig, TrainedModel, get_or_train
from .base import ExperimentConfig, ExperimentResult, mean_of, register_experiment, setting

#: the three training modes compared, in table order
MODES = ("natural", "pgd", "localized")
#: attack conditions: no attack, full image, the mask region only, its complement only
CONDITIONS = ("clean", "full", "region", "complement")


@dataclass
class LocalizedConfig(ExperimentConfig):
    """Settings of the localized experiment (METHODS §4); every one is a CLI option."""

    natural_epochs: int = setting(5, "epochs of the naturally trained model (5 = the shared default model)")
    train_epochs: int = setting(2, "epochs of the adversarially trained models (pgd, localized)")
    train_attack_steps: int = setting(5, "PGD steps that make the training examples")
    train_limit: int = setting(0, "training images used (the first ones; 0 = all)")
    eps: float = setting(0.1, "attack budget for training and evaluation (L-inf: max change per pixel)")
    norm: str = setting("linf", "norm of the budget: linf or l2")
    steps: int = setting(20, "PGD steps of the evaluation attacks")
    mix: float = setting(0.5, "weight of the background-only adversarial loss in localized training")
    mask: str = setting("background", "where the localized attack acts: background, foreground, roi, "
                                      "roi-complement, or a .pt/.npy file of (N,H,W) masks")
    fraction: float = setting(0.2, "top fraction of Grad-CAM forming the roi masks (roi, roi-complement)")
    complement: bool = setting(True, "also attack the complement of the mask (foreground-only PGD)")
    figure_images: int = setting(4, "example images per figure")

    QUICK = {"n": 16, "batch_size": 8, "natural_epochs": 1, "train_epochs": 1, "train_attack_steps": 2,
             "train_limit": 512, "steps": 3, "figure_images": 2}

    def validate(self) -> None:
        super().validate()
        from ..models import list_models

        if self.model not in list_models():
            raise ConfigError(f"model={self.model!r}: this experiment trains its three models, so model must be a "
                              f"registered architecture; valid: {', '.join(sorted(list_models()))}")
        for name in ("natural_epochs", "train_epochs", "train_attack_steps", "steps"):
            check_range(name, getattr(self, name), 1)
        check_range("train_limit", self.train_limit, 0)
        check_range("figure_images", self.figure_images, 0)
        check_range("mix", self.mix, 0, 1)
        check_range("fraction", self.fraction, 0, 1, low_inclusive=False, high_inclusive=False)
        if self.norm not in ("linf", "l2"):
            raise ConfigError(f"norm={self.norm!r} is not valid; valid: linf, l2")
        check_range("eps", self.eps, 0, 1 if self.norm == "linf" else None, low_inclusive=False)
        if self.mask not in MASK_KINDS and not Path(self.mask).is_file():
            raise ConfigError(f"mask={self.mask!r} is neither one of {', '.join(MASK_KINDS)} nor an existing file")
        for mode in MODES:
            train_config(self, mode).validate()


# -- models ------------------------------------------------------------------------------

def train_config(config: LocalizedConfig, mode: str) -> TrainConfig:
    """The training settings of model ``mode``.

    The natural model with the default settings is the same checkpoint every other
    experiment uses. The ``pgd`` model keeps TrainConfig's default ``mix`` (it does
    not use it), so changing ``mix`` does not retrain it.
    """
    common: dict[str, Any] = {"dataset": config.dataset, "arch": config.model, "seed": config.model_seed,
                              "train_limit": config.train_limit or None}
    if mode == "natural":
        return TrainConfig(mode="natural", epochs=config.natural_epochs, **common)
    adversarial = {"eps": config.eps, "norm": config.norm, "attack_steps": config.train_attack_steps}
    if mode == "localized":
        adversarial["mix"] = config.mix
    return TrainConfig(mode=mode, epochs=config.train_epochs, **adversarial, **common)


def train_models(config: LocalizedConfig, device: torch.device, timings: dict[str, float]) -> dict[str, TrainedModel]:
    """The three models, trained on first use and cached; wall time per model in ``timings``."""
    models = {}
    for mode in MODES:
        started = time.perf_counter()
        models[mode] = get_or_train(train_config(config, mode), device, config.progress)
        models[mode].model.eval()
        timings[f"train/{mode}"] = round(time.perf_counter() - started, 2)
    return models


# -- attacks and masks -----------------------------------------------------------------

def eval_attack(model: nn.Module, config: LocalizedConfig) -> Attack:
    """The evaluation PGD (random start, ``steps`` steps of 2.5*eps/steps) in the configured norm."""
    name = "pgd" if config.norm == "linf" else "pgd-l2"
    return make_attack(name, model, eps=config.eps, alpha=2.5 * config.eps / config.steps, steps=config.steps,
                       seed=config.seed)


def region_mask_fn(config: LocalizedConfig, data: ImageDataset, model: nn.Module) -> Callable[[slice], torch.Tensor]:
    """(N,1,H,W) mask in [0,1] of the attacked region for a batch (Grad-CAM masks use ``model``)."""

    def fn(sl: slice) -> torch.Tensor:
        mask = attack_mask(config.mask, data, sl, model, fraction=config.fraction, seed=config.seed)
        assert mask is not None  # validate() excludes "none"
        return mask

    return fn


def complement_mask_fn(region: Callable[[slice], torch.Tensor]) -> Callable[[slice], torch.Tensor]:
    """1 - the region mask: the foreground when the region is the background."""
    return lambda sl: 1.0 - region(sl)


@dataclass
class ModelEvaluation:
    """Per-image columns of one model (predictions per condition, region share, Grad-CAM energies)
    and the region-only adversarial images (for the figures)."""

    preds: dict[str, torch.Tensor]
    region_share: torch.Tensor
    cam_energy_clean: torch.Tensor
    cam_energy_adv: torch.Tensor
    region_x_adv: torch.Tensor
    seconds: float


def foreground_energy(cam: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(N,) share of each map's mass inside ``keep`` (N,H,W) in [0,1]; NaN for an all-zero map."""
    total = cam.flatten(1).sum(1)
    inside = (cam * keep).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.full_like(total, math.nan))


def gradcam_batch(rundir: RunDir, name: str, b: int, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
                  y: torch.Tensor, region: torch.Tensor) -> dict[str, torch.Tensor]:
    """Share of the true class's Grad-CAM outside the attacked region, on clean and attacked images (cached)."""

    def compute() -> dict[str, torch.Tensor]:
        keep = 1.0 - region[:, 0].cpu()
        device = model_device(model)
        cams = [importance_map("gradcam", model, z.to(device), target="true", y=y.to(device), batch_size=len(z)).cpu()
                for z in (x, x_adv)]
        return {"clean": foreground_energy(cams[0], keep), "adv": foreground_energy(cams[1], keep)}

    return rundir.cached(f"gradcam/{name}/batch-{b:05d}", compute)  # type: ignore[return-value]


def evaluate_model(name: str, model: nn.Module, config: LocalizedConfig, data: ImageDataset,
                   rundir: RunDir) -> ModelEvaluation:
    """Attack ``model`` full-image, region-only and (optionally) complement-only; Grad-CAM shift per image."""
    started = time.perf_counter()
    attack = eval_attack(model, config)
    region = region_mask_fn(config, data, model)
    kw: dict[str, Any] = {"batch_size": config.batch_size, "progress": config.progress, "rundir": rundir}
    full = attack_dataset(attack, data, stage=f"attack/{name}/full", desc=f"{name}: full-image PGD", **kw)
    local = attack_dataset(attack, data, mask_fn=region, stage=f"attack/{name}/region",
                           desc=f"{name}: {config.mask}-only PGD", **kw)
    preds = {"clean": full.clean_pred, "full": full.adv_pred, "region": local.adv_pred}
    if config.complement:
        comp = attack_dataset(attack, data, mask_fn=complement_mask_fn(region), stage=f"attack/{name}/complement",
                              desc=f"{name}: complement-only PGD", **kw)
        preds["complement"] = comp.adv_pred
    shares, clean_e, adv_e = [], [], []
    slices = list(batch_slices(len(data), config.batch_size))
    for b, sl in enumerate(tqdm(slices, desc=f"{name}: Grad-CAM shift", disable=not config.progress, unit="batch")):
        mask = region(sl)
        energies = gradcam_batch(rundir, name, b, model, data.images(sl), local.x_adv[sl], data.labels[sl], mask)
        shares.append(mask.flatten(1).mean(1))
        clean_e.append(energies["clean"])
        adv_e.append(energies["adv"])
    return ModelEvaluation(preds, torch.cat(shares), torch.cat(clean_e), torch.cat(adv_e), local.x_adv,
                           round(time.perf_counter() - started, 2))


# -- rows and metrics ------------------------------------------------------------------

def model_rows(name: str, data: ImageDataset, ev: ModelEvaluation) -> list[dict[str, Any]]:
    """One row per image for one model."""
    labels = data.labels.tolist()
    cols: dict[str, list[Any]] = {f"{c}_pred": p.tolist() for c, p in ev.preds.items()}
    cols["region_share"] = ev.region_share.tolist()
    cols["cam_energy_clean"] = ev.cam_energy_clean.tolist()
    cols["cam_energy_region_adv"] = ev.cam_energy_adv.tolist()
    return [{"model": name, "index": i, "label": labels[i], **{k: v[i] for k, v in cols.items()}}
            for i in range(len(labels))]


def model_metrics(rows: list[dict[str, Any]], name: str) -> dict[str, float]:
    """Accuracies and Grad-CAM energies of one model, computed from its per-image rows only."""
    group = [r for r in rows if r["model"] == name]
    out: dict[str, float] = {"images": float(len(group))}
    for cond in CONDITIONS:
        if f"{cond}_pred" in group[0]:
            out[f"{cond}_accuracy"] = mean_of([float(r[f"{cond}_pred"] == r["label"]) for r in group])
    out["region_share"] = mean_of([r["region_share"] for r in group])
    # before/after means over the same images: those whose Grad-CAM is not all zero on either image
    both = [r for r in group if r["cam_energy_clean"] == r["cam_energy_clean"]
            and r["cam_energy_region_adv"] == r["cam_energy_region_adv"]]
    out["cam_energy_clean"] = mean_of([r["cam_energy_clean"] for r in both])
    out["cam_energy_region_adv"] = mean_of([r["cam_energy_region_adv"] for r in both])
    out["cam_zero_images"] = float(len(group) - len(both))
    return out


def region_names(spec: str) -> tuple[str, str]:
    """Readable names of the attacked region and its complement."""
    names = {"background": ("background", "foreground"), "foreground": ("foreground", "background"),
             "roi": ("Grad-CAM RoI", "outside the RoI"), "roi-complement": ("outside the RoI", "Grad-CAM RoI")}
    return names.get(spec, ("mask file region", "outside the mask"))


# -- the experiment --------------------------------------------------------------------

@register_experiment("localized-training", LocalizedConfig,
                     "localized (background-only) attacks vs natural, PGD and localized adversarial training")
def run_localized(config: LocalizedConfig, rundir: RunDir) -> ExperimentResult:
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    timings: dict[str, float] = {}
    trained = train_models(config, device, timings)
    data = load_dataset(config.dataset, "test").head(config.n)
    rows: list[dict[str, Any]] = []
    evaluations: dict[str, ModelEvaluation] = {}
    for mode in MODES:
        evaluations[mode] = evaluate_model(mode, trained[mode].model, config, data, rundir)
        timings[f"evaluate/{mode}"] = evaluations[mode].seconds
        rows.extend(model_rows(mode, data, evaluations[mode]))
    metrics: dict[str, Any] = {
        "n": len(data), "mask": config.mask, "eps": config.eps, "norm": config.norm,
        "models": {mode: {**model_metrics(rows, mode), **training_facts(trained[mode])} for mode in MODES},
    }
    started = time.perf_counter()
    ctx = ReportContext(config, rundir, data, {m: t.model for m, t in trained.items()}, evaluations, metrics)
    sections = build_sections(ctx)
    timings["report"] = round(time.perf_counter() - started, 2)
    metrics["timings"] = timings
    return ExperimentResult(metrics, rows, summary_table(config, metrics), sections)


def training_facts(trained: TrainedModel) -> dict[str, Any]:
    """What the model cache knows about a model: full test-set accuracy, training time, checkpoint."""
    meta = trained.metadata
    return {"test_accuracy": meta.get("test_accuracy", math.nan), "train_seconds": meta.get("train_seconds", math.nan),
            "epochs": trained.config.epochs, "checkpoint": str(trained.path) if trained.path else ""}


# -- report ------------------------------------------------------------------------------

@dataclass
class ReportContext:
    config: LocalizedConfig
    rundir: RunDir
    data: ImageDataset
    models: dict[str, nn.Module]
    evaluations: dict[str, ModelEvaluation]
    metrics: dict[str, Any]


def fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def condition_labels(config: LocalizedConfig) -> dict[str, str]:
    """Column names of the robustness table, keyed by condition."""
    region, complement = region_names(config.mask)
    labels = {"clean": "clean", "full": "full-image PGD", "region": f"{region}-only PGD"}
    if config.complement:
        labels["complement"] = f"{complement}-only PGD"
    return labels


def build_sections(ctx: ReportContext) -> list[Section]:
    return [setup_section(ctx), models_section(ctx), robustness_section(ctx), gradcam_section(ctx),
            limits_section(ctx)]


def budget_text(config: LocalizedConfig) -> str:
    return f"{'L-inf' if config.norm == 'linf' else 'L2'} eps={config.eps:g}"


def setup_section(ctx: ReportContext) -> Section:
    cfg = ctx.config
    region, complement = region_names(cfg.mask)
    limit = f"the first {cfg.train_limit}" if cfg.train_limit else "all"
    return Section("Setup", [
        f"Three {cfg.model} models trained on {limit} {cfg.dataset} training images: natural "
        f"({cfg.natural_epochs} epochs), PGD adversarial training (Madry; {cfg.train_epochs} epochs) and localized "
        f"adversarial training ({cfg.train_epochs} epochs; loss = {1 - cfg.mix:g} x clean cross-entropy + "
        f"{cfg.mix:g} x "
        f"cross-entropy of background-only PGD examples). Training attacks: PGD {budget_text(cfg)}, "
        f"{cfg.train_attack_steps} steps, random start.",
        f"Evaluation on the first {ctx.metrics['n']} test images: PGD {budget_text(cfg)}, {cfg.steps} steps of "
        f"2.5*eps/steps, random start (seed {cfg.seed}), on the whole image, only on the {region} "
        f"(mask '{cfg.mask}')" + (f", and only on the {complement}." if cfg.complement else "."),
        "Background (METHODS 4): for grey MNIST-like data, the pixels with x <= 0.05 (the dataset's own foreground "
        "mask, also used by localized training); exact object masks for synthetic-shapes; otherwise the "
        f"complement of the top {cfg.fraction:.0%} Grad-CAM region of the true class.",
    ])


def models_section(ctx: ReportContext) -> Section:
    cfg = ctx.config
    rows = []
    for mode in MODES:
        m = ctx.metrics["models"][mode]
        tc = train_config(cfg, mode)
        attack = "-" if mode == "natural" else f"PGD {budget_text(cfg)}, {tc.attack_steps} steps"
        rows.append([mode, m["epochs"], attack, "-" if mode != "localized" else f"{tc.mix:g}",
                     fmt(m["test_accuracy"], 4), fmt(m["train_seconds"], 1), Path(m["checkpoint"]).name or "-"])
    table = Table("Models (test accuracy on the full test split, as stored with the cached checkpoint)",
                  ["model", "epochs", "training attack", "mix", "test accuracy", "training seconds", "checkpoint"],
                  rows)
    return Section("Models", ["Checkpoints are cached by every training setting and the seed; training seconds are "
                              "those of the run that trained the model."], tables=[table])


def robustness_section(ctx: ReportContext) -> Section:
    cfg, models = ctx.config, ctx.metrics["models"]
    labels = condition_labels(cfg)
    rows = [[mode] + [fmt(models[mode][f"{c}_accuracy"]) for c in labels] for mode in MODES]
    table = Table(f"Accuracy on {ctx.metrics['n']} test images (PGD {budget_text(cfg)}, {cfg.steps} steps)",
                  ["model", *labels.values()], rows)
    path = plot_accuracy_bars({m: {c: models[m][f"{c}_accuracy"] for c in labels} for m in MODES}, labels,
                              ctx.rundir.figures / "accuracy.png",
                              title=f"Accuracy under full-image and localized PGD ({budget_text(cfg)})")
    region = region_names(cfg.mask)[0]
    nat, pgd, loc = (models[m] for m in MODES)
    paragraphs = [
        f"{region.capitalize()}-only PGD: natural {fmt(nat['region_accuracy'])}, PGD-trained "
        f"{fmt(pgd['region_accuracy'])}, localized {fmt(loc['region_accuracy'])}. Full-image PGD: natural "
        f"{fmt(nat['full_accuracy'])}, PGD-trained {fmt(pgd['full_accuracy'])}, localized {fmt(loc['full_accuracy'])}.",
        f"The attacked region covers on average {fmt(nat['region_share'])} of the image. Robust accuracies are "
        f"upper bounds: they hold against this PGD ({cfg.steps} steps, one random start), not against every attack.",
    ]
    return Section("Robustness", paragraphs, tables=[table],
                   figures=[Figure(path, "Accuracy of the three models on clean images and under each attack.")],
                   anchor="robustness")


def figure_indices(ev: ModelEvaluation, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Up to k images correct when clean: those the region-only attack fools first, then the others."""
    correct = ev.preds["clean"] == labels
    fooled = correct & (ev.preds["region"] != labels)
    order = torch.cat([fooled.nonzero().squeeze(1), (correct & ~fooled).nonzero().squeeze(1)])
    return order[:k]


def gradcam_section(ctx: ReportContext) -> Section:
    cfg, models = ctx.config, ctx.metrics["models"]
    region, complement = region_names(cfg.mask)
    rows = [[mode, fmt(models[mode]["cam_energy_clean"]), fmt(models[mode]["cam_energy_region_adv"]),
             fmt(models[mode]["cam_energy_region_adv"] - models[mode]["cam_energy_clean"]),
             int(models[mode]["cam_zero_images"])] for mode in MODES]
    table = Table(f"Share of the true class's Grad-CAM inside the {complement} (mean over images), before and after "
                  f"the {region}-only attack",
                  ["model", "clean", f"after {region}-only PGD", "change", "images left out (Grad-CAM all zero)"],
                  rows)
    figures = []
    for mode in ("natural", "localized"):
        figures += example_figures(ctx, mode, region, complement)
    paragraphs = [
        f"A {region}-only attack changes no {complement} pixel, yet it can move where the model looks: the table "
        f"gives how much of the Grad-CAM energy of the true class stays in the {complement} after the attack.",
    ]
    return Section("Background attacks and Grad-CAM", paragraphs, tables=[table], figures=figures,
                   anchor="background-attacks")


def example_figures(ctx: ReportContext, mode: str, region: str, complement: str) -> list[Figure]:
    """Example images of the region-only attack against ``mode`` and their Grad-CAM before/after."""
    cfg, data, ev = ctx.config, ctx.data, ctx.evaluations[mode]
    idx = figure_indices(ev, data.labels, cfg.figure_images)
    if cfg.figure_images == 0 or len(idx) == 0:
        return []
    model = ctx.models[mode]
    device = model_device(model)
    x, x_adv, y = data.images(idx), ev.region_x_adv[idx], data.labels[idx]
    mask = torch.cat([region_mask_fn(cfg, data, model)(slice(int(i), int(i) + 1)) for i in idx])
    names = data.class_names
    labels = [f"#{int(i)} {names[int(y[j])]}\nafter attack: {names[int(ev.preds['region'][i])]}"
              for j, i in enumerate(idx)]
    ex = plot_localized_examples(x, x_adv, mask, ctx.rundir.figures / f"examples-{mode}.png", row_labels=labels,
                                 region_name=region, title=f"{region.capitalize()}-only PGD ({budget_text(cfg)}) "
                                                           f"against the {mode} model")
    cams = [importance_map("gradcam", model, z.to(device), target="true", y=y.to(device)).cpu() for z in (x, x_adv)]
    shift = plot_gradcam_shift(x, x_adv, cams[0], cams[1], ev.cam_energy_clean[idx], ev.cam_energy_adv[idx],
                               ctx.rundir.figures / f"gradcam-{mode}.png", row_labels=labels, inside_name=complement,
                               title=f"{mode} model: Grad-CAM of the true class before and after {region}-only PGD")
    return [Figure(ex, f"{mode} model: clean image, {region}-only adversarial image, the signed perturbation and "
                       f"the region the attack may change (white). Rows: images the attack fools first."),
            Figure(shift, f"{mode} model: Grad-CAM of the true class on the clean and the attacked image, and the "
                          f"change; titles give the share of Grad-CAM energy in the {complement}.")]


def limits_section(ctx: ReportContext) -> Section:
    cfg = ctx.config
    paragraphs = [
        f"The adversarially trained models get {cfg.train_epochs} epoch(s) with {cfg.train_attack_steps}-step PGD so "
        "that the whole run fits a laptop; longer training (and more attack steps) gives more robust models, and the "
        "ranking of the three models, not the absolute numbers, is what this run shows.",
        "One training seed and one evaluation seed: differences of a few points between models may lie within the "
        "seed-to-seed variation, which this run does not measure.",
        "PGD with one random start is not the strongest attack; robust accuracies are upper bounds.",
        "The background of MNIST-like data is a brightness threshold (x <= 0.05): dark pixels inside the object count "
        "as background, and on the background an L-inf attack can mostly only brighten (pixels are at or near 0).",
        "Grad-CAM on the last convolutional block is coarse (7x7 on 28x28 images); the foreground share of its "
        "energy is an indication of where the model looks, not ground truth.",
    ]
    if cfg.mask != "background":
        paragraphs.append(f"The localized model is always trained against background-only examples (the dataset's "
                          f"foreground masks); here it is evaluated with mask '{cfg.mask}', which it was not trained "
                          "against.")
    return Section("Limits", paragraphs, anchor="limits")


def summary_table(config: LocalizedConfig, metrics: dict[str, Any]) -> str:
    """The table printed at the end of ``advspatial run localized``."""
    labels = condition_labels(config)
    header = f"{'model':<10}" + "".join(f"{v:>24}" for v in labels.values())
    lines = [f"accuracy on {metrics['n']} images, PGD {budget_text(config)}, {config.steps} steps", header,
             "-" * len(header)]
    for mode, m in metrics["models"].items():
        lines.append(f"{mode:<10}" + "".join(f"{fmt(m[f'{c}_accuracy']):>24}" for c in labels))
    return "\n".join(lines)
