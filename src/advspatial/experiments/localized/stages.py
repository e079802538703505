"""The evaluation stages of experiment ``localized-training``, each cached in the run directory: every model
attacked on the whole image, on the region, on its complement, by the ensemble and at the eps sweep's budgets
(:func:`advspatial.pipeline.attack_dataset`), the shift of its importance map under the region-only attack, its
faithfulness gate, and the example images of the report's figures."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...attacks import Attack, make_attack
from ...data import ImageDataset
from ...distributed import map_batches
from ...finetuning import FinetuneConfig
from ...maps import importance_map
from ...pipeline import attack_dataset
from ...rundir import RunDir
from ...runtime import batch_slices, model_device
from ...training import TrainedModel, evaluate_accuracy
from ..context import ExperimentContext, shared_splits
from ..gate import gate_stage
from .config import MODES, LocalizedConfig, finetunes, gate_eps, sweep_eps
from .models import Start, finetune_models, resolve_methods, seed_name, train_models
from .region import complement_mask_fn, mask_uses_importance, region_mask_fn

# -- the attacks -------------------------------------------------------------------------

def eval_attack(model: nn.Module, config: LocalizedConfig, eps: float | None = None) -> Attack:
    """The evaluation PGD (random start, ``steps`` steps of 2.5*eps/steps) in the configured norm, at budget ``eps``
    (default: the configured one; the eps sweep passes its own)."""
    name = "pgd" if config.norm == "linf" else "pgd-l2"
    return make_attack(name, model, eps=config.eps if eps is None else eps, alpha="auto", steps=config.steps,
                       seed=config.seed)


def ensemble_attack(model: nn.Module, config: LocalizedConfig) -> Attack:
    """The autoattack-style ensemble at the evaluation budget (worst case per image over its components)."""
    name = "autoattack" if config.norm == "linf" else "autoattack-l2"
    return make_attack(name, model, eps=config.eps, steps=config.ensemble_steps, n_restarts=config.ensemble_restarts,
                       n_queries=config.ensemble_queries, seed=config.seed)


# -- one model's evaluation --------------------------------------------------------------

@dataclass
class ModelEvaluation:
    """Per-image columns of one model (predictions per condition, region share, importance-map energies)
    and the region-only adversarial images (for the figures)."""

    preds: dict[str, torch.Tensor]
    region_share: torch.Tensor
    cam_energy_clean: torch.Tensor
    cam_energy_adv: torch.Tensor
    region_x_adv: torch.Tensor
    seconds: float
    importance: str = "gradcam"


def foreground_energy(cam: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(N,) share of each map's mass inside ``keep`` (N,H,W) in [0,1]; NaN for an all-zero map."""
    total = cam.flatten(1).sum(1)
    inside = (cam * keep).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.full_like(total, math.nan))


def energy_batch(rundir: RunDir, name: str, method: str, b: int, model: nn.Module, x: torch.Tensor,
                 x_adv: torch.Tensor, y: torch.Tensor, region: torch.Tensor) -> dict[str, torch.Tensor]:
    """Share of the true class's ``method`` map outside the attacked region, on clean and attacked images
    (cached)."""

    def compute() -> dict[str, torch.Tensor]:
        keep = 1.0 - region[:, 0].cpu()
        device = model_device(model)
        cams = [importance_map(method, model, z.to(device), target="true", y=y.to(device), batch_size=len(z)).cpu()
                for z in (x, x_adv)]
        return {"clean": foreground_energy(cams[0], keep), "adv": foreground_energy(cams[1], keep)}

    return rundir.cached(f"importance/{name}/{method}/batch-{b:05d}", compute)


def evaluate_model(name: str, model: nn.Module, config: LocalizedConfig, data: ImageDataset,
                   rundir: RunDir, method: str | None = None) -> ModelEvaluation:
    """Attack ``model`` full-image, region-only and (optionally) complement-only; importance-map shift per image.

    ``method``: the importance map (default: ``config.importance`` resolved for ``model``).
    """
    started = time.perf_counter()
    if method is None:
        method = resolve_methods(config, {name: model}, data)[name]["method"]
    attack = eval_attack(model, config)
    region = region_mask_fn(config, data, model, method)
    kw: dict[str, Any] = {"batch_size": config.batch_size, "progress": config.progress, "rundir": rundir}
    full = attack_dataset(attack, data, stage=f"attack/{name}/full", desc=f"{name}: full-image PGD", **kw)
    local = attack_dataset(attack, data, mask_fn=region, stage=f"attack/{name}/region",
                           desc=f"{name}: {config.mask}-only PGD", **kw)
    preds = {"clean": full.clean_pred, "full": full.adv_pred, "region": local.adv_pred}
    if config.complement:
        comp = attack_dataset(attack, data, mask_fn=complement_mask_fn(region), stage=f"attack/{name}/complement",
                              desc=f"{name}: complement-only PGD", **kw)
        preds["complement"] = comp.adv_pred
    preds.update(robustness_conditions(name, model, config, data, kw, region))
    shares, clean_e, adv_e = [], [], []

    def energies(b: int, sl: slice) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(each image's region share, the importance energies of batch b): the region mask computed once."""
        mask = region(sl)
        return mask.flatten(1).mean(1), energy_batch(rundir, name, method, b, model, data.images(sl),
                                                     local.x_adv[sl], data.labels[sl], mask)

    def collect(b: int, sl: slice, values: tuple[torch.Tensor, dict[str, torch.Tensor]]) -> None:
        share, energy = values
        shares.append(share)
        clean_e.append(energy["clean"])
        adv_e.append(energy["adv"])

    map_batches(energies, list(batch_slices(len(data), config.batch_size)), desc=f"{name}: {method} shift",
                progress=config.progress, then=collect)
    return ModelEvaluation(preds, torch.cat(shares), torch.cat(clean_e), torch.cat(adv_e), local.x_adv,
                           round(time.perf_counter() - started, 2), method)


def robustness_conditions(name: str, model: nn.Module, config: LocalizedConfig, data: ImageDataset,
                          kw: dict[str, Any], region: Callable[[slice], torch.Tensor] | None = None,
                          ) -> dict[str, torch.Tensor]:
    """Adversarial predictions of the ensemble on the whole image and, with ``region``, restricted to the region
    (the first ``ensemble_n`` images; -1 for the others), and of full-image PGD at each budget of the eps sweep
    (every image)."""
    preds: dict[str, torch.Tensor] = {}
    if config.ensemble_n:
        first = data.head(min(config.ensemble_n, len(data)))  # the same first images: region(sl) slices apply
        masks = {"ensemble": None, **({"region-ensemble": region} if region is not None else {})}
        for cond, mask_fn in masks.items():
            result = attack_dataset(ensemble_attack(model, config), first, mask_fn=mask_fn,
                                    stage=f"attack/{name}/{cond}", desc=f"{name}: {cond}", **kw)
            pred = torch.full((len(data),), -1, dtype=torch.int64)
            pred[: len(first)] = result.adv_pred.cpu()
            preds[cond] = pred
    for cond, eps in sweep_eps(config).items():
        preds[cond] = attack_dataset(eval_attack(model, config, eps), data, stage=f"attack/{name}/{cond}",
                                     desc=f"{name}: {cond} PGD", **kw).adv_pred
    return preds


def model_rows(name: str, data: ImageDataset, ev: ModelEvaluation) -> list[dict[str, Any]]:
    """One row per image for one model."""
    labels = data.labels.tolist()
    cols: dict[str, list[Any]] = {f"{c}_pred": p.tolist() for c, p in ev.preds.items()}
    cols["region_share"] = ev.region_share.tolist()
    cols["cam_energy_clean"] = ev.cam_energy_clean.tolist()
    cols["cam_energy_region_adv"] = ev.cam_energy_adv.tolist()
    return [{"model": name, "index": i, "label": labels[i], **{k: v[i] for k, v in cols.items()}}
            for i in range(len(labels))]


# -- every model: the other training seeds, the gates, what fine-tuning did ----------------

def other_seeds(config: LocalizedConfig, rundir: RunDir, data: ImageDataset, device: torch.device,
                methods: dict[str, dict[str, str]], timings: dict[str, float],
                rows: list[dict[str, Any]]) -> dict[str, list[ModelEvaluation]]:
    """The models of training seeds 1 .. training_seeds-1 (same recipe, seed ``model_seed + k``), trained or
    fine-tuned and evaluated like the first; their rows appended (model ``<mode>@seed<k>``)."""
    out: dict[str, list[ModelEvaluation]] = {mode: [] for mode in MODES}
    for k in range(1, config.training_seeds):
        seeded = dataclasses.replace(config, model_seed=config.model_seed + k)
        step: dict[str, float] = {}
        if finetunes(config):
            trained, _ = finetune_models(seeded, rundir, data, device, step)
        else:
            trained = train_models(seeded, device, step)
        timings.update({f"{key}@seed{k}": value for key, value in step.items()})
        torch.manual_seed(config.seed)
        for mode in MODES:
            name = seed_name(mode, k)
            ev = evaluate_model(name, trained[mode].model, config, data, rundir, methods[mode]["method"])
            timings[f"evaluate/{name}"] = ev.seconds
            rows.extend(model_rows(name, data, ev))
            out[mode].append(ev)
    return out


def run_gates(config: LocalizedConfig, rundir: RunDir, models: dict[str, nn.Module], data: ImageDataset,
              device: torch.device, methods: dict[str, dict[str, str]],
              timings: dict[str, float]) -> dict[str, dict[str, Any]]:
    """The faithfulness gate of each model's importance map (true class), on that model; cached per batch."""
    ctx = ExperimentContext(config, rundir, models["natural"], data, device,
                            list(batch_slices(len(data), config.batch_size)))
    gates = {}
    for mode in MODES:
        started = time.perf_counter()
        gates[mode] = gate_stage(ctx, methods[mode]["method"], config.fraction, gate_eps(config), target="true",
                                 model=models[mode], tag=mode)
        timings[f"gate/{mode}"] = round(time.perf_counter() - started, 2)
    return gates


def finetune_facts(config: LocalizedConfig, rundir: RunDir, data: ImageDataset, start: Start,
                   trained: dict[str, TrainedModel], device: torch.device,
                   timings: dict[str, float]) -> dict[str, Any]:
    """What the report says about fine-tuning: the start (checksum, clean accuracy on the evaluated images,
    the faithfulness gate of the map that cut the training background), the recipe and the training images."""
    fc = trained["natural"].config
    assert isinstance(fc, FinetuneConfig)
    started = time.perf_counter()
    gate = None
    if mask_uses_importance("background", start.train):
        ctx = ExperimentContext(config, rundir, start.model, data, device,
                                list(batch_slices(len(data), config.batch_size)))
        gate = gate_stage(ctx, start.method, config.fraction, gate_eps(config), target="true", model=start.model,
                          tag="start")
    timings["gate/start"] = round(time.perf_counter() - started, 2)
    excluded = shared_splits(config.dataset)
    return {
        "start": config.model, "weights": config.weights, "start_sha256": start.sha256,
        "start_clean_accuracy": evaluate_accuracy(start.model, data, config.batch_size),
        "epochs": fc.epochs, "steps": int(trained["natural"].metadata.get("steps", 0)), "lr": fc.lr,
        "momentum": fc.momentum, "weight_decay": fc.weight_decay, "batch_size": fc.batch_size,
        "bn": config.finetune_bn, "seed": fc.seed, "train_images": len(start.train),
        "train_ids_sha": fc.train_ids, "excludes_evaluated": excluded,
        "train_source": (f"a class-stratified draw (seed {config.seed}) from the same image set as the test images, "
                         f"leaving out the {len(data)} evaluated images" if excluded else
                         f"a class-stratified draw (seed {config.seed}) from the training split"),
        "mask_method": start.method, "mask_why": start.why, "mask_source": start.mask_source,
        "start_gate": gate,
    }


# -- example images of the figures -------------------------------------------------------

@dataclass
class Examples:
    """A few images of one model for the report's figures: clean and region-only adversarial images, the region
    the attack could change, the true class's importance map on both, and each image's prediction after the
    attack. ``index`` are the images' positions among the evaluated ones."""

    index: torch.Tensor
    x: torch.Tensor
    x_adv: torch.Tensor
    labels: torch.Tensor
    adv_pred: torch.Tensor
    mask: torch.Tensor
    cam_clean: torch.Tensor
    cam_adv: torch.Tensor
    energy_clean: torch.Tensor
    energy_adv: torch.Tensor
    method: str


def figure_indices(ev: ModelEvaluation, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Up to k images correct when clean: those the region-only attack fools first, then the others."""
    correct = ev.preds["clean"] == labels
    fooled = correct & (ev.preds["region"] != labels)
    order = torch.cat([fooled.nonzero().squeeze(1), (correct & ~fooled).nonzero().squeeze(1)])
    return order[:k]


def example_images(config: LocalizedConfig, data: ImageDataset, model: nn.Module,
                   ev: ModelEvaluation) -> Examples | None:
    """The first ``figure_images`` examples of ``model`` (:func:`figure_indices`); None when there is none."""
    idx = figure_indices(ev, data.labels, config.figure_images)
    if config.figure_images == 0 or len(idx) == 0:
        return None
    method, device = ev.importance, model_device(model)
    x, x_adv, y = data.images(idx), ev.region_x_adv[idx], data.labels[idx]
    mask_fn = region_mask_fn(config, data, model, method)
    mask = torch.cat([mask_fn(slice(int(i), int(i) + 1)) for i in idx])
    cams = [importance_map(method, model, z.to(device), target="true", y=y.to(device)).cpu() for z in (x, x_adv)]
    return Examples(idx, x, x_adv, y, ev.preds["region"][idx], mask, cams[0], cams[1], ev.cam_energy_clean[idx],
                    ev.cam_energy_adv[idx], method)
