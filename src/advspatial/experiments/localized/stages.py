"""The stages of experiment ``localized-training``, each cached in the run directory: the models (trained from
scratch into the model cache, or fine-tuned from one pretrained start into the run directory), their faithfulness
gates, and per model and batch its attacks (whole image, region, complement, ensemble, eps sweep) and the shift of
its importance map under the region-only attack."""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...attacks import Attack, AttackResult, make_attack
from ...data import ImageDataset
from ...distributed import map_batches
from ...errors import ConfigError
from ...faithfulness.record import GateResult
from ...files import atomic_write_text
from ...model_cache import get_or_train
from ...models.loading import state_checksum
from ...rundir import RunDir
from ...runtime import batch_slices, model_device
from ...training import TrainedModel, evaluate_accuracy
from ..context import ExperimentContext, load_checked_model, shared_splits, train_images
from ..measurement.gate import gate_stage
from ..measurement.roi import resolve_importance
from ..stage import ATTACK, AttackStage, Stage
from .attack_rows import model_rows
from .attacked_region import energy_outside, mask_uses_importance, region_mask
from .config import (
    FINETUNE_IMAGES, MASKED, MODES, LocalizedConfig, finetune_config, finetunes, gate_eps, seed_name, seeded,
    sweep_eps, train_config,
)
from .finetuning import FinetuneConfig, finetune_model
from .findings import FinetuneFacts

#: a fine-tuned model's weights and metadata: ``finetune/<mode>-<key>``, the key covering every setting
FINETUNED = Stage[dict[str, Any]]("finetune", per="run")
#: the start of fine-tuning (its weights' checksum), checked on ``--resume``
START = Stage[dict[str, str]]("finetune/start", per="run")
#: the localized model's training foreground per batch of training images: ``finetune/masks/<method>-f<fraction>``
TRAIN_MASKS = Stage[torch.Tensor]("finetune/masks")
#: the importance map's share outside the region, clean and attacked: ``importance/<model>/<method>/batch-NNNNN``
ENERGY = Stage[dict[str, torch.Tensor]]("importance")
#: the context of the localized experiment's images (evaluated or training) and settings
LocalizedContext = ExperimentContext[LocalizedConfig]

def context_of(config: LocalizedConfig, rundir: RunDir, data: ImageDataset, model: nn.Module) -> LocalizedContext:
    """The context of ``data`` (the evaluated or the training images) in batches of ``batch_size``, on ``model``'s
    device (``model``: the context's default, every stage here names its own)."""
    return ExperimentContext(config, rundir, model, data, model_device(model),
                             list(batch_slices(len(data), config.batch_size)))


def map_models(job: Callable[[int, str], TrainedModel]) -> list[TrainedModel]:
    """``job(i, mode)`` for every mode, in order; under torchrun each model is trained by one process (the
    model cache or the run directory keeps it) and then loaded by all (:func:`~advspatial.distributed.map_batches`)."""
    return map_batches(job, list(MODES), desc="models", progress=False)


def train_models(config: LocalizedConfig, device: torch.device, timings: dict[str, float]) -> dict[str, TrainedModel]:
    """The models, trained on first use and cached; wall time per model in ``timings``."""

    def train(_: int, mode: str) -> TrainedModel:
        started = time.perf_counter()
        trained = get_or_train(train_config(config, mode), device, config.progress)
        trained.model.eval()
        # setdefault: under torchrun a process calls this again to load the model; the training time is kept
        timings.setdefault(f"train/{mode}", round(time.perf_counter() - started, 2))
        return trained

    return dict(zip(MODES, map_models(train), strict=True))


def finetune_images(config: LocalizedConfig, data: ImageDataset) -> ImageDataset:
    """The training images of fine-tuning: ``train_limit`` (0: FINETUNE_IMAGES) class-stratified ones (seed
    ``config.seed``); on a dataset with one image set for both splits, never one of the evaluated ``data``."""
    return train_images(config, config.train_limit or FINETUNE_IMAGES, exclude=data.ids)


def ids_checksum(ids: torch.Tensor) -> str:
    """16 hex digits identifying a set of global sample ids (part of a fine-tuned model's key)."""
    return hashlib.sha256(ids.to(torch.int64).cpu().numpy().tobytes()).hexdigest()[:16]


def training_mask_source(config: LocalizedConfig, train: ImageDataset, method: str) -> str:
    """Where the localized model's training background comes from, in words (also part of its key)."""
    if mask_uses_importance("background", train):
        return (f"the complement of the top {config.fraction:.0%} of the start model's {method} map of the true class "
                f"(ties broken by sample id, seed {config.seed})")
    return "the complement of the dataset's own foreground masks"


def training_foreground(config: LocalizedConfig, rundir: RunDir, start: nn.Module, train: ImageDataset,
                        method: str) -> torch.Tensor:
    """(N,H,W) bool foreground of every training image for localized fine-tuning: the complement of the
    evaluation's ``background`` mask, computed once on the *start* model (its ``method`` map of the true class
    for colour data without masks), per global sample id; cached per batch of training images."""
    stage = TRAIN_MASKS.at(f"{method}-f{config.fraction:g}")

    def foreground(b: int, sl: slice) -> torch.Tensor:
        return stage.get(rundir, lambda: region_mask("background", train, sl, start, method, config.fraction,
                                                     config.seed)[:, 0] < 0.5, b)

    return torch.cat(context_of(config, rundir, train, start).each_batch(foreground, desc="training masks"))


def check_start(rundir: RunDir, config: LocalizedConfig, sha256: str) -> None:
    """A resumed run must fine-tune from the same weights its stages were computed with."""
    recorded = START.get(rundir, lambda: {"model": config.model, "weights": config.weights, "sha256": sha256})
    if recorded["sha256"] != sha256:
        raise ConfigError(f"{rundir.path} was fine-tuned from {config.model} with weights sha256 "
                          f"{recorded['sha256'][:12]}, but it now has {sha256[:12]}: the start model changed; "
                          "start a new run (--out)")


@dataclass
class Start:
    """The pretrained start of fine-tuning: the model, its weights' checksum, the training images, and the
    importance map that cut the localized model's training background."""

    model: nn.Module
    sha256: str
    train: ImageDataset
    method: str
    why: str
    mask_source: str


def finetune_models(config: LocalizedConfig, rundir: RunDir, data: ImageDataset, device: torch.device,
                    timings: dict[str, float]) -> tuple[dict[str, TrainedModel], Start]:
    """The models fine-tuned from the same start on the same images in the same order (cached in the
    run directory); wall time per model in ``timings``."""
    started = time.perf_counter()
    start = load_checked_model(config, data, device)
    # its training masks and its gate are the run's passes; the copies fine-tuned from it take a hook that counts
    # nothing (advspatial.passes), so the training is not
    rundir.passes.watch(start)
    sha = state_checksum(start)
    check_start(rundir, config, sha)
    train = finetune_images(config, data)
    method, why = resolve_importance(config.importance, start, train.images(slice(0, min(2, len(train)))).to(device))
    source = training_mask_source(config, train, method)
    settings = {mode: finetune_config(config, mode, sha, ids_checksum(train.ids), source) for mode in MODES}
    stages = {mode: FINETUNED.at(f"{mode}-{fc.key()}") for mode, fc in settings.items()}
    # computed (or read back) by every process before any model is trained; read back even when every masked model
    # is saved, so that a resumed run counts the passes its masks cost (advspatial.passes)
    foreground = training_foreground(config, rundir, start, train, method)
    rows = ["index,label"] + [f"{int(i)},{int(y)}" for i, y in zip(train.ids, train.labels, strict=True)]
    atomic_write_text(rundir.path / "train_subset.csv", "\n".join(rows) + "\n")
    timings["finetune/start"] = round(time.perf_counter() - started, 2)

    def finetune(_: int, mode: str) -> TrainedModel:
        started = time.perf_counter()
        fc, stage = settings[mode], stages[mode]

        def compute() -> dict[str, Any]:
            masks = foreground.__getitem__ if mode in MASKED else None  # by image index
            tm = finetune_model(start, fc, train, masks, config.progress)
            return {"state_dict": {k: v.detach().cpu() for k, v in tm.model.state_dict().items()},
                    "metadata": tm.metadata}

        saved = stage.get(rundir, compute)
        model = copy.deepcopy(start)
        model.load_state_dict(saved["state_dict"])
        # setdefault: under torchrun a process calls this again to load the model; the training time is kept
        timings.setdefault(f"train/{mode}", round(time.perf_counter() - started, 2))
        return TrainedModel(model.to(device).eval(), fc, saved["metadata"], rundir.stage_path(stage.key()))

    trained = dict(zip(MODES, map_models(finetune), strict=True))
    return trained, Start(start, sha, train, method, why, source)


def resolve_methods(config: LocalizedConfig, models: dict[str, nn.Module],
                    data: ImageDataset) -> dict[str, dict[str, str]]:
    """{mode: {"method", "why"}}: the importance map of each model (``auto``: by its head type)."""
    probe = data.images(slice(0, min(2, len(data))))
    chosen = {mode: resolve_importance(config.importance, m, probe.to(model_device(m))) for mode, m in models.items()}
    return {mode: {"method": method, "why": why} for mode, (method, why) in chosen.items()}


def run_gates(ctx: LocalizedContext, models: dict[str, nn.Module], methods: dict[str, dict[str, str]],
              timings: dict[str, float]) -> dict[str, GateResult]:
    """The faithfulness gate of each model's importance map (true class), on that model; cached per batch."""
    gates = {}
    for mode in MODES:
        started = time.perf_counter()
        gates[mode] = gate_stage(ctx, methods[mode]["method"], ctx.config.fraction, gate_eps(ctx.config),
                                 target="true", model=models[mode], tag=mode)
        timings[f"gate/{mode}"] = round(time.perf_counter() - started, 2)
    return gates


def finetune_facts(ctx: LocalizedContext, start: Start, trained: dict[str, TrainedModel],
                   timings: dict[str, float]) -> FinetuneFacts:
    """What the report says about fine-tuning: the start (checksum, clean accuracy on the evaluated images,
    the faithfulness gate of the map that cut the training background), the recipe and the training images."""
    config, data = ctx.config, ctx.data
    fc = trained["natural"].config
    assert isinstance(fc, FinetuneConfig)
    started = time.perf_counter()
    gate = None
    if mask_uses_importance("background", start.train):
        gate = gate_stage(ctx, start.method, config.fraction, gate_eps(config), target="true", model=start.model,
                          tag="start")
    timings["gate/start"] = round(time.perf_counter() - started, 2)
    excluded = shared_splits(config.dataset)
    source = (f"a class-stratified draw (seed {config.seed}) from the same image set as the test images, leaving out "
              f"the {len(data)} evaluated images" if excluded else
              f"a class-stratified draw (seed {config.seed}) from the training split")
    return FinetuneFacts(
        config.model, config.weights, start.sha256, evaluate_accuracy(start.model, data, config.batch_size),
        fc.epochs, int(trained["natural"].metadata.get("steps", 0)), fc.lr, fc.momentum, fc.weight_decay,
        fc.batch_size, config.finetune_bn, fc.seed, len(start.train), fc.train_ids, excluded, source, start.method,
        start.why, start.mask_source, gate)


@dataclass
class ModelEvaluation:
    """Per-image columns of one model (of a batch, or of every image): predictions per attack condition, the
    region's share of the image, the importance map's share outside the region on the clean and the region-only
    attacked image, and the region-only adversarial images (for the figures)."""

    preds: dict[str, torch.Tensor]
    region_share: torch.Tensor
    cam_energy_clean: torch.Tensor
    cam_energy_adv: torch.Tensor
    region_x_adv: torch.Tensor
    seconds: float
    importance: str = "gradcam"

    @classmethod
    def cat(cls, batches: list[ModelEvaluation], seconds: float) -> ModelEvaluation:
        """The evaluation of every image from its batches' (in order)."""
        first = batches[0]
        return cls({c: torch.cat([e.preds[c] for e in batches]) for c in first.preds},
                   torch.cat([e.region_share for e in batches]), torch.cat([e.cam_energy_clean for e in batches]),
                   torch.cat([e.cam_energy_adv for e in batches]), torch.cat([e.region_x_adv for e in batches]),
                   seconds, first.importance)

    def rows(self, name: str, labels: torch.Tensor) -> list[dict[str, Any]]:
        """One row per image, as model ``name``."""
        return model_rows(name, labels, self.preds, self.region_share, self.cam_energy_clean, self.cam_energy_adv)


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


def region_of(ctx: LocalizedContext, model: nn.Module, method: str, sl: slice) -> torch.Tensor:
    """(N,1,H,W) mask of the attacked region (``config.mask``) on the images ``sl`` (cut from ``model``'s
    ``method`` map of the true class where the mask rests on the importance map)."""
    cfg = ctx.config
    return region_mask(cfg.mask, ctx.data, sl, model, method, cfg.fraction, cfg.seed)


def masked_attack(ctx: LocalizedContext, stage: AttackStage, attack: Attack, b: int, sl: slice,
                  mask: torch.Tensor) -> AttackResult:
    """``attack`` on the images ``sl`` (batch ``b``) confined to ``mask``: the cached ``stage`` of that batch."""

    def compute() -> AttackResult:
        x, y, ids = ctx.batch(sl)
        return attack.run(x, y, mask=mask.to(ctx.device), sample_ids=ids)

    return stage.get(ctx.rundir, compute, b)


def evaluate_model(ctx: LocalizedContext, name: str, model: nn.Module, method: str) -> ModelEvaluation:
    """Attack ``model`` full-image, region-only, (optionally) complement-only, by the ensemble and at the eps
    sweep's budgets; the shift of its ``method`` map under the region-only attack, per image."""
    started = time.perf_counter()
    cfg = ctx.config
    pgd, ensemble = eval_attack(model, cfg), ensemble_attack(model, cfg)
    sweep = {cond: eval_attack(model, cfg, eps) for cond, eps in sweep_eps(cfg).items()}

    def batch(b: int, sl: slice) -> ModelEvaluation:
        family, mask = ATTACK.at(name), region_of(ctx, model, method, sl)
        full = ctx.attack(family.at("full"), pgd, b, sl)
        local = masked_attack(ctx, family.at("region"), pgd, b, sl, mask)
        preds = {"clean": full.clean_pred, "full": full.adv_pred, "region": local.adv_pred}
        if cfg.complement:
            preds["complement"] = masked_attack(ctx, family.at("complement"), pgd, b, sl, 1.0 - mask).adv_pred
        preds.update(ensemble_preds(ctx, family, ensemble, b, sl, mask,
                                    lambda part: region_of(ctx, model, method, part)))
        preds.update({cond: ctx.attack(family.at(cond), attack, b, sl).adv_pred for cond, attack in sweep.items()})
        energy = ENERGY.at(name, method).get(ctx.rundir, lambda: energy_outside(
            method, model, ctx.data.images(sl), local.x_adv, ctx.data.labels[sl], mask), b)
        return ModelEvaluation(preds, mask.flatten(1).mean(1), energy["clean"], energy["adv"], local.x_adv, 0.0, method)

    batches = ctx.each_batch(batch, desc=f"{name}: attacks and {method} shift")
    return ModelEvaluation.cat(batches, round(time.perf_counter() - started, 2))


def ensemble_preds(ctx: LocalizedContext, family: AttackStage, attack: Attack, b: int, sl: slice, mask: torch.Tensor,
                   region: Callable[[slice], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Batch ``b``'s adversarial predictions of the ensemble on the whole image and restricted to the region
    (``mask``; ``region(sl)`` for a part of the batch): only the first ``ensemble_n`` images, -1 for the others."""
    stop = min(ctx.config.ensemble_n, len(ctx.data))
    if not ctx.config.ensemble_n:
        return {}
    head = slice(sl.start, min(sl.stop, stop))
    preds = {cond: torch.full((sl.stop - sl.start,), -1, dtype=torch.int64) for cond in ("ensemble", "region-ensemble")}
    if head.start < head.stop:
        preds["ensemble"][: head.stop - head.start] = ctx.attack(family.at("ensemble"), attack, b, head).adv_pred
        part = mask if head == sl else region(head)  # a mask cut on the images the attack sees, as they are batched
        result = masked_attack(ctx, family.at("region-ensemble"), attack, b, head, part)
        preds["region-ensemble"][: head.stop - head.start] = result.adv_pred
    return preds


def other_seeds(ctx: LocalizedContext, methods: dict[str, dict[str, str]], timings: dict[str, float],
                rows: list[dict[str, Any]]) -> dict[str, list[ModelEvaluation]]:
    """The models of training seeds 1 .. training_seeds-1 (same recipe, seed ``model_seed + k``), trained or
    fine-tuned and evaluated like the first; their rows appended (model ``<mode>@seed<k>``)."""
    config = ctx.config
    out: dict[str, list[ModelEvaluation]] = {mode: [] for mode in MODES}
    for k in range(1, config.training_seeds):
        step: dict[str, float] = {}
        if finetunes(config):
            trained, _ = finetune_models(seeded(config, k), ctx.rundir, ctx.data, ctx.device, step)
        else:
            trained = train_models(seeded(config, k), ctx.device, step)
        timings.update({f"{key}@seed{k}": value for key, value in step.items()})
        torch.manual_seed(config.seed)
        for mode in MODES:
            ctx.rundir.passes.watch(trained[mode].model)  # its evaluation's passes are the run's (advspatial.passes)
            name = seed_name(mode, k)
            ev = evaluate_model(ctx, name, trained[mode].model, methods[mode]["method"])
            timings[f"evaluate/{name}"] = ev.seconds
            rows.extend(ev.rows(name, ctx.data.labels))
            out[mode].append(ev)
    return out
