"""Experiment ``localized``: localized attacks and localized adversarial training (METHODS.md §4).

Five models are trained on the same data for the same number of epochs:
``natural`` (clean cross-entropy), ``pgd`` (Madry PGD adversarial training),
``localized`` (each batch: clean plus background-only PGD examples, mixed with
weight ``mix``) and the two controls of localized training, ``mixed-pgd`` (the
same mixture with full-image PGD examples: its clean share without its region)
and ``localized-random`` (its loss on a region of the same area per image at
random positions, redrawn every batch: its region without its placement). How
depends on ``model``:

- a registered architecture (without ``weights``): trained from scratch, or
  loaded from the model cache (``$ADVSPATIAL_CACHE/models``, keyed by every
  training setting);
- anything else (a zoo name such as ``cifar10-resnet20``, a factory, a
  state-dict file, a registered name with ``weights``): **fine-tuned** from
  the pretrained model. The models start from copies of the same
  weights and get the same recipe (:class:`advspatial.training.FinetuneConfig`:
  ``train_epochs`` epochs, SGD ``finetune_lr``), the same training images (a
  class-stratified draw of ``train_limit``, default
  :data:`FINETUNE_IMAGES`, that leaves out the evaluated test images when the
  dataset has one image set for both splits) in the same order, so the loss is
  the only difference. The localized model's background on each training image
  is the evaluation's ``background`` mask computed once on the *start* model
  (for colour data without masks: the complement of the top ``fraction`` of its
  importance map of the true class; ties broken by the global sample id).

Each model is then attacked on the ``n`` test images by

- full-image PGD (the usual L-inf or L2 ball),
- PGD restricted to the ``mask`` region (default ``background``: the pixels
  with ``x <= 0.05`` on MNIST-like data, the exact object complement on the
  synthetic shapes, the complement of the importance map's top region of the
  true class on other colour data), and
- PGD restricted to the complement of that region (``foreground``), optional.

Besides accuracy, the experiment measures what a background-only attack does
to where the model looks: the share of the importance map (``importance``,
``auto`` = by head type) of the true class that lies in the attacked region,
before and after the attack.

The importance map is used as a Region of Importance (RoI) only after the
faithfulness gate (:func:`advspatial.experiments.gate.gate_stage`) has judged
it on each of every model. The comparisons become pre-declared claims,
paired per image (:mod:`advspatial.regions.inference`), corrected and judged by
fixed rules (:func:`advspatial.regions.claims.judge`); a claim that rests on a
map that failed the gate is "not interpretable".

Stages streamed batch by batch and saved in the run directory (``--resume``):
``attack/<model>/<region|complement|full>/batch-*`` (via
:func:`advspatial.pipeline.attack_dataset`), ``importance/<model>/<method>/batch-*``
and ``gate/<model>/<method>/...``. Models trained from scratch live in the
model cache, fine-tuned ones in the run directory
(``finetune/<mode>-<key>``, the key covering every setting, the start model's
weights checksum and the training image ids; ``finetune/masks/...`` the
training masks; ``finetune/start`` the start's checksum, checked on
``--resume``; ``train_subset.csv`` the training images' global ids), so a
resumed or repeated run does not train again.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn
from ..distributed import map_batches

from ..attacks import Attack, make_attack
from ..data import ImageDataset
from ..errors import ConfigError, check_range, unknown_name
from ..maps import importance_map, list_importance_methods
from ..masks import MASK_KINDS, attack_mask
from ..pipeline import attack_dataset
from ..regions import binarize
from ..regions.claims import Claim, judge
from ..regions.inference import bootstrap_mean_ci, paired_p
from ..runtime import RunDir, atomic_write_text, batch_slices, model_device, pick_device
from ..training import (
    FINETUNE_LR,
    FinetuneConfig,
    TrainConfig,
    TrainedModel,
    evaluate_accuracy,
    finetune_model,
    get_or_train,
    state_checksum,
)
from .base import (
    OPEN_UNIT_INTERVAL,
    ExperimentContext,
    ExperimentResult,
    load_checked_model,
    mean_of,
    register_experiment,
    setting,
    shared_splits,
    test_images,
    train_images,
)
from .gate import GatedConfig, gate_stage, resolve_importance, roi_label

#: the training modes compared, in table order: natural, Madry PGD, and localized training beside its two
#: controls (mixed-pgd: the same clean/adversarial mixture with full-image examples; localized-random: the same
#: loss on a region of the same area at random positions, redrawn per batch)
MODES = ("natural", "pgd", "mixed-pgd", "localized", "localized-random")
#: modes whose loss mixes clean and adversarial examples with weight ``mix``
MIXED = ("mixed-pgd", "localized", "localized-random")
#: modes trained against a region of each image (they need the training masks)
MASKED = ("localized", "localized-random")
#: readable names of the modes
CONTROLS = ("mixed-pgd", "localized-random")
MODE_NAMES = {"natural": "natural", "pgd": "PGD", "mixed-pgd": "mixed PGD", "localized": "localized",
              "localized-random": "random-mask localized"}
#: attack conditions: no attack, full image, the mask region only, its complement only, the autoattack-style
#: ensemble on the whole image (robust accuracy; on the first ``ensemble_n`` images); the eps sweep's full-image
#: PGD conditions (``full@x<factor>``) follow from ``eps_sweep``
CONDITIONS = ("clean", "full", "region", "complement", "ensemble", "region-ensemble")
#: the validity gate of every claim that rests on an importance map
ROI_GATE = "RoI faithfulness"
#: L-inf budget of the gate's restricted attack when the experiment's own budget is L2 (and gate_eps is 0)
GATE_EPS_FOR_L2 = 0.1
#: training images of fine-tuning when train_limit is 0
FINETUNE_IMAGES = 5000
#: batch-norm choices of fine-tuning: keep the start's running statistics, or re-estimate them
FINETUNE_BN = ("frozen", "train")

TERMS = ("Region of Importance (RoI): the pixels the model looks at when it classifies, the top fraction of an "
         "importance map of the true class. Region of Attack (RoA): the pixels the attacker's perturbation may act "
         "through; in this experiment the RoA is fixed in advance by a mask (the background, or its complement, the "
         "foreground), not read off an attack map.")


@dataclass
class LocalizedConfig(GatedConfig):
    """Settings of the localized experiment (METHODS §4); every one is a CLI option."""

    natural_epochs: int = setting(0, "epochs of the naturally trained model (0: train_epochs, matched to the "
                                     "others; 5 = the shared default model); training from scratch only", low=0)
    train_epochs: int = setting(2, "epochs of every trained model (natural too unless natural_epochs is set; "
                                   "fine-tuning: of all)", low=1)
    train_attack_steps: int = setting(5, "PGD steps that make the training examples", low=1)
    train_limit: int = setting(0, "training images: from scratch the first ones (0 = all); fine-tuning a "
                                  f"class-stratified draw without the evaluated images (0 = {FINETUNE_IMAGES})", low=0)
    finetune_lr: float = setting(FINETUNE_LR, "fine-tuning a pretrained model: SGD learning rate (momentum 0.9, "
                                              "weight decay 5e-4, cosine to 0, batch 128)", low=0, low_inclusive=False)
    finetune_bn: str = setting("train", "fine-tuning: batch norm in train mode (running statistics re-estimated "
                                        "on the training batches) or frozen (the start's statistics)",
                               choices=FINETUNE_BN)
    eps: float = setting(0.1, "attack budget for training and evaluation (L-inf: max change per pixel)")
    norm: str = setting("linf", "norm of the budget: linf or l2")
    steps: int = setting(20, "PGD steps of the evaluation attacks", low=1)
    mix: float = setting(0.5, "weight of the background-only adversarial loss in localized training", low=0, high=1)
    mask: str = setting("background", "where the localized attack acts: background, foreground, roi, "
                                      "roi-complement, or a .pt/.npy file of (N,H,W) masks")
    importance: str = setting("auto", "importance map of the true class (the RoI): its energy shift, the roi masks "
                                      "and the background of colour data without masks; auto (Grad-CAM for a "
                                      "GAP+linear head, HiResCAM for a flatten/FC head, per model) or a name "
                                      "(advspatial list maps)")
    fraction: float = setting(0.2, "top fraction of the importance map forming the RoI (roi masks, the gate)",
                              **OPEN_UNIT_INTERVAL)
    complement: bool = setting(True, "also attack the complement of the mask (foreground-only PGD)")
    gate_eps: float = setting(0.0, "L-inf budget of the gate's restricted attack (0: eps for norm linf, "
                                   f"{GATE_EPS_FOR_L2} for norm l2)", low=0, high=1)
    training_seeds: int = setting(3, "training seeds per model (model_seed, model_seed+1, ...): accuracies as "
                                     "mean ± sd over them, model comparisons on each image's correctness averaged "
                                     "over them; the first seed's models also carry the gate and the map shift", low=1)
    ensemble_n: int = setting(100, "images (the first ones) attacked by the autoattack-style ensemble (APGD-CE, "
                                   "APGD-DLR, Square) for robust accuracy; 0 = none", low=0)
    ensemble_steps: int = setting(50, "APGD steps per run of the ensemble", low=1)
    ensemble_restarts: int = setting(1, "APGD restarts of the ensemble", low=1)
    ensemble_queries: int = setting(1000, "Square queries of the ensemble", low=1)
    eps_sweep: list[float] = setting([0.5, 2.0], "full-image PGD budgets beside eps, as multiples of eps "
                                                 "(capped at 1 for linf)", low=0, low_inclusive=False)
    figure_images: int = setting(4, "example images per figure", low=0)

    PRESET_FIELDS = {"eps_linf": "eps", "steps": "steps", "batch_size": "batch_size", "image_size": "image_size"}
    QUICK = {"n": 16, "batch_size": 8, "train_epochs": 1, "train_attack_steps": 2, "ensemble_n": 8, "training_seeds": 1,
             "ensemble_steps": 5, "ensemble_queries": 50, "eps_sweep": [2.0],
             "train_limit": 512, "steps": 3, "figure_images": 2,
             "gate_n": 16, "gate_steps": 3, "randomization_images": 4}

    @classmethod
    def preset_values(cls, preset: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """The preset's L2 budget instead of its L-inf one when ``norm`` is l2."""
        from .presets import PRESETS

        values = super().preset_values(preset, given)
        if given.get("norm") == "l2" and "eps_l2" in PRESETS[preset]:
            values["eps"] = PRESETS[preset]["eps_l2"]
        return values

    def validate(self) -> None:
        super().validate()
        if self.norm not in ("linf", "l2"):
            raise ConfigError(f"norm={self.norm!r} is not valid; valid: linf, l2")
        check_range("eps", self.eps, 0, 1 if self.norm == "linf" else None, low_inclusive=False)
        if self.importance not in list_importance_methods():
            raise unknown_name("importance method", self.importance, list_importance_methods())
        if self.mask not in MASK_KINDS and not Path(self.mask).is_file():
            raise ConfigError(f"mask={self.mask!r} is neither one of {', '.join(MASK_KINDS)} nor an existing file")
        if finetunes(self):
            for mode in MODES:
                finetune_config(self, mode, start_sha256="").validate()
        else:
            for mode in MODES:
                train_config(self, mode).validate()


def gate_eps(config: LocalizedConfig) -> float:
    """L-inf budget of the gate's restricted attack (the gate's PGD is L-inf)."""
    if config.gate_eps > 0:
        return config.gate_eps
    return config.eps if config.norm == "linf" else GATE_EPS_FOR_L2


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
        return TrainConfig(mode="natural", epochs=natural_epochs(config), **common)
    adversarial = {"eps": config.eps, "norm": config.norm, "attack_steps": config.train_attack_steps}
    if mode in MIXED:
        adversarial["mix"] = config.mix
    return TrainConfig(mode=mode, epochs=config.train_epochs, **adversarial, **common)


def natural_epochs(config: LocalizedConfig) -> int:
    """Epochs of the natural model trained from scratch: matched to the others unless set."""
    return config.natural_epochs or config.train_epochs


def train_models(config: LocalizedConfig, device: torch.device, timings: dict[str, float]) -> dict[str, TrainedModel]:
    """The models, trained on first use and cached; wall time per model in ``timings``."""

    def train(_: int, mode: str) -> TrainedModel:
        started = time.perf_counter()
        trained = get_or_train(train_config(config, mode), device, config.progress)
        trained.model.eval()
        # setdefault: under torchrun a process calls this again to load the model; the training time is kept
        timings.setdefault(f"train/{mode}", round(time.perf_counter() - started, 2))
        return trained

    return dict(zip(MODES, map_models(train)))


T = TypeVar("T")


def map_models(job: Callable[[int, str], T]) -> list[T]:
    """``job(i, mode)`` for every mode, in order; under torchrun each model is trained by one process (the
    model cache or the run directory keeps it) and then loaded by all (:func:`~advspatial.distributed.map_batches`)."""
    return map_batches(job, list(MODES), desc="models", progress=False)


def finetunes(config: LocalizedConfig) -> bool:
    """True when every model are fine-tuned from ``config.model`` (any spec but a registered architecture
    without weights, which is trained from scratch)."""
    from ..models import parse_model_spec

    return not parse_model_spec(config.model, config.weights or None, config.arch or None).needs_training


def finetune_config(config: LocalizedConfig, mode: str, start_sha256: str, train_ids: str = "",
                    masks: str = "") -> FinetuneConfig:
    """The fine-tuning settings of model ``mode``: the same recipe for all models (epochs, lr, data, order);
    the adversarial settings matter only to pgd and localized (and ``mix``, ``masks`` only to localized)."""
    return FinetuneConfig(dataset=config.dataset, start=config.model,
                          start_sha256=start_sha256, mode=mode, epochs=config.train_epochs, lr=config.finetune_lr,
                          freeze_bn=config.finetune_bn == "frozen", seed=config.model_seed, train_ids=train_ids,
                          masks=masks, eps=config.eps, norm=config.norm, attack_steps=config.train_attack_steps,
                          mix=config.mix)


def load_start(config: LocalizedConfig, data: ImageDataset, device: torch.device) -> nn.Module:
    """The pretrained start model ``config.model`` in eval mode, checked against the data by one forward pass."""
    return load_checked_model(config, data, device)


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
    for colour data without masks), per global sample id; cached per batch in the run directory."""
    background = region_mask_fn(dataclasses.replace(config, mask="background"), train, start, method)
    parts = [rundir.cached(f"finetune/masks/{method}-f{config.fraction:g}/batch-{b:05d}",
                           lambda sl=sl: background(sl)[:, 0] < 0.5)
             for b, sl in enumerate(batch_slices(len(train), config.batch_size))]
    return torch.cat(parts)


def check_start(rundir: RunDir, config: LocalizedConfig, sha256: str) -> None:
    """A resumed run must fine-tune from the same weights its stages were computed with."""
    recorded = rundir.cached("finetune/start", lambda: {"model": config.model, "weights": config.weights,
                                                        "sha256": sha256})
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
    start = load_start(config, data, device)
    sha = state_checksum(start)
    check_start(rundir, config, sha)
    train = finetune_images(config, data)
    probe = train.images(slice(0, min(2, len(train)))).to(device)
    method, why = resolve_importance(config.importance, start, probe)
    source = training_mask_source(config, train, method)
    foreground: list[torch.Tensor] = []

    def masks_fn(idx: torch.Tensor) -> torch.Tensor:
        if not foreground:  # computed (or loaded) on first use: a resumed run with cached models never needs it
            foreground.append(training_foreground(config, rundir, start, train, method))
        return foreground[0][idx]

    rows = ["index,label"] + [f"{int(i)},{int(y)}" for i, y in zip(train.ids, train.labels)]
    atomic_write_text(rundir.path / "train_subset.csv", "\n".join(rows) + "\n")
    timings["finetune/start"] = round(time.perf_counter() - started, 2)

    def finetune(_: int, mode: str) -> TrainedModel:
        started = time.perf_counter()
        fc = finetune_config(config, mode, sha, ids_checksum(train.ids), source)
        stage = f"finetune/{mode}-{fc.key()}"

        def compute() -> dict[str, Any]:
            tm = finetune_model(start, fc, train, masks_fn if fc.mode in MASKED else None, config.progress)
            return {"state_dict": {k: v.detach().cpu() for k, v in tm.model.state_dict().items()},
                    "metadata": tm.metadata}

        saved = rundir.cached(stage, compute)
        model = copy.deepcopy(start)
        model.load_state_dict(saved["state_dict"])
        # setdefault: under torchrun a process calls this again to load the model; the training time is kept
        timings.setdefault(f"train/{mode}", round(time.perf_counter() - started, 2))
        return TrainedModel(model.to(device).eval(), fc, saved["metadata"], rundir.stage_path(stage))

    trained = dict(zip(MODES, map_models(finetune)))
    return trained, Start(start, sha, train, method, why, source)


def resolve_methods(config: LocalizedConfig, models: dict[str, nn.Module],
                    data: ImageDataset) -> dict[str, dict[str, str]]:
    """{mode: {"method", "why"}}: the importance map of each model (``auto``: by its head type)."""
    out = {}
    for mode, model in models.items():
        probe = data.images(slice(0, min(2, len(data)))).to(model_device(model))
        method, why = resolve_importance(config.importance, model, probe)
        out[mode] = {"method": method, "why": why}
    return out


# -- attacks and masks -----------------------------------------------------------------

def eval_attack(model: nn.Module, config: LocalizedConfig) -> Attack:
    """The evaluation PGD (random start, ``steps`` steps of 2.5*eps/steps) in the configured norm."""
    name = "pgd" if config.norm == "linf" else "pgd-l2"
    return make_attack(name, model, eps=config.eps, alpha="auto", steps=config.steps,
                       seed=config.seed)


def ensemble_attack(model: nn.Module, config: LocalizedConfig) -> Attack:
    """The autoattack-style ensemble at the evaluation budget (worst case per image over its components)."""
    name = "autoattack" if config.norm == "linf" else "autoattack-l2"
    return make_attack(name, model, eps=config.eps, steps=config.ensemble_steps, n_restarts=config.ensemble_restarts,
                       n_queries=config.ensemble_queries, seed=config.seed)


def sweep_eps(config: LocalizedConfig) -> dict[str, float]:
    """{condition name: budget} of the eps sweep's full-image PGD conditions."""
    cap = 1.0 if config.norm == "linf" else math.inf
    return {f"full@x{factor:g}": min(factor * config.eps, cap) for factor in config.eps_sweep}


def mask_uses_importance(spec: str, data: ImageDataset) -> bool:
    """True when mask ``spec`` is cut from the importance map (so every result under it needs the RoI gate).

    ``roi``/``roi-complement`` always; ``background``/``foreground`` on colour data
    without object masks (the complement of the top region, METHODS §4).
    """
    if spec in ("roi", "roi-complement"):
        return True
    if spec in ("background", "foreground"):
        return data.masks is None and data.pixels.shape[1] > 1
    return False


def importance_region(method: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, fraction: float,
                      seed: int, ids: torch.Tensor) -> torch.Tensor:
    """(N,H,W) bool: the top ``fraction`` of the true class's ``method`` map (ties broken per sample id)."""
    device = model_device(model)
    imp = importance_map(method, model, x.to(device), target="true", y=y.to(device), batch_size=len(x)).cpu()
    return binarize(imp, fraction=fraction, seed=seed, sample_ids=ids).mask


def region_mask_fn(config: LocalizedConfig, data: ImageDataset, model: nn.Module,
                   method: str = "gradcam") -> Callable[[slice], torch.Tensor]:
    """(N,1,H,W) mask in [0,1] of the attacked region for a batch (importance-map masks use ``model``'s
    ``method`` map of the true class)."""

    def fn(sl: slice) -> torch.Tensor:
        if mask_uses_importance(config.mask, data):
            roi = importance_region(method, model, data.images(sl), data.labels[sl], config.fraction, config.seed,
                                    data.ids[sl])
            region = roi if config.mask == "roi" or config.mask == "foreground" else ~roi
            return region.unsqueeze(1).float()
        mask = attack_mask(config.mask, data, sl, model, fraction=config.fraction, seed=config.seed)
        assert mask is not None  # validate() excludes "none"
        return mask

    return fn


def complement_mask_fn(region: Callable[[slice], torch.Tensor]) -> Callable[[slice], torch.Tensor]:
    """1 - the region mask: the foreground when the region is the background."""
    return lambda sl: 1.0 - region(sl)


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

    return rundir.cached(f"importance/{name}/{method}/batch-{b:05d}", compute)  # type: ignore[return-value]


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
        attack = make_attack("pgd" if config.norm == "linf" else "pgd-l2", model, eps=eps, alpha="auto",
                             steps=config.steps, seed=config.seed)
        preds[cond] = attack_dataset(attack, data, stage=f"attack/{name}/{cond}", desc=f"{name}: {cond} PGD",
                                     **kw).adv_pred
    return preds


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
    """Accuracies and importance-map energies of one model, computed from its per-image rows only."""
    group = [r for r in rows if r["model"] == name]
    out: dict[str, float] = {"images": float(len(group))}
    conditions = [k[: -len("_pred")] for k in group[0] if k.endswith("_pred")]
    for cond in conditions:  # an image a condition did not attack (prediction -1) is left out of its accuracy
        attacked = [r for r in group if r[f"{cond}_pred"] != -1]
        out[f"{cond}_accuracy"] = mean_of([float(r[f"{cond}_pred"] == r["label"]) for r in attacked])
        if len(attacked) != len(group):
            out[f"{cond}_images"] = float(len(attacked))
    out["region_share"] = mean_of([r["region_share"] for r in group])
    # before/after means over the same images: those whose map is not all zero on either image
    both = [r for r in group if r["cam_energy_clean"] == r["cam_energy_clean"]
            and r["cam_energy_region_adv"] == r["cam_energy_region_adv"]]
    out["cam_energy_clean"] = mean_of([r["cam_energy_clean"] for r in both])
    out["cam_energy_region_adv"] = mean_of([r["cam_energy_region_adv"] for r in both])
    out["cam_zero_images"] = float(len(group) - len(both))
    return out


def region_names(spec: str) -> tuple[str, str]:
    """Readable names of the attacked region and its complement."""
    names = {"background": ("background", "foreground"), "foreground": ("foreground", "background"),
             "roi": ("RoI", "outside the RoI"), "roi-complement": ("outside the RoI", "RoI")}
    return names.get(spec, ("mask file region", "outside the mask"))


def condition_labels(config: LocalizedConfig) -> dict[str, str]:
    """Column names of the robustness table, keyed by condition."""
    region, complement = region_names(config.mask)
    labels = {"clean": "clean", "full": "full-image PGD", "region": f"{region}-only PGD (diagnostic)"}
    if config.complement:
        labels["complement"] = f"{complement}-only PGD"
    if config.ensemble_n:
        labels["ensemble"] = "ensemble (APGD-CE, APGD-DLR, Square)"
        labels["region-ensemble"] = f"{region}-only ensemble"
    for cond, eps in sweep_eps(config).items():
        labels[cond] = f"full-image PGD at eps {eps:g}"
    return labels


# -- claims ----------------------------------------------------------------------------

def _ratio(observed: float, null: float) -> float:
    return observed / null if null != 0 and math.isfinite(null) and math.isfinite(observed) else math.nan


def correctness(evs: list[ModelEvaluation], cond: str, labels: torch.Tensor) -> torch.Tensor:
    """Per image, the share of the models ``evs`` (one per training seed) correct under ``cond``."""
    return torch.stack([(ev.preds[cond].cpu() == labels).double() for ev in evs]).mean(0)


def accuracy_claim(config: LocalizedConfig, labels: torch.Tensor, evaluations: dict[str, ModelEvaluation],
                   cond: str, a: str, b: str, gates: dict[str, bool], primary: bool,
                   seeds: dict[str, list[ModelEvaluation]] | None = None) -> Claim:
    """Model ``a`` vs model ``b`` under condition ``cond``: per image correct_a - correct_b on the same images,
    each image's correctness averaged over the training seeds' models (``seeds``: those beyond the first)."""
    label = condition_labels(config)[cond]
    attacked = evaluations[a].preds[cond].cpu() != -1  # the ensemble attacks the first ensemble_n images only
    more = seeds or {}
    correct_a = correctness([evaluations[a], *more.get(a, [])], cond, labels)[attacked]
    correct_b = correctness([evaluations[b], *more.get(b, [])], cond, labels)[attacked]
    diff = correct_a - correct_b
    observed = float(correct_a.mean()) if len(diff) else math.nan
    null = float(correct_b.mean()) if len(diff) else math.nan
    name = MODE_NAMES
    return Claim(claim=f"{name[a]} training raises {label} accuracy over {name[b]} training",
                 subject=f"{a} vs {b} model", statistic=f"{label} accuracy", null=f"{b} model",
                 observed=observed, null_value=null, effect=bootstrap_mean_ci(diff, seed=config.seed),
                 ratio=_ratio(observed, null), p=paired_p(diff), gates=dict(gates), primary=primary)


def energy_claim(config: LocalizedConfig, mode: str, ev: ModelEvaluation, gate_passed: bool,
                 primary: bool = True) -> Claim:
    """A region-only attack draws the true class's map into the attacked region: per image, its share of the map
    in the region after the attack minus on the clean image (images with a map that is all zero are left out)."""
    region = region_names(config.mask)[0]
    before = 1.0 - ev.cam_energy_clean.double().cpu()
    after = 1.0 - ev.cam_energy_adv.double().cpu()
    keep = torch.isfinite(before) & torch.isfinite(after)
    before, after = before[keep], after[keep]
    diff = after - before
    observed = float(after.mean()) if len(diff) else math.nan
    null = float(before.mean()) if len(diff) else math.nan
    return Claim(claim=f"{region}-only PGD draws the true class's {ev.importance} energy into the {region}",
                 subject=f"{mode} model", statistic=f"{ev.importance} energy share in the {region}",
                 null="clean image", observed=observed, null_value=null,
                 effect=bootstrap_mean_ci(diff, seed=config.seed), ratio=_ratio(observed, null), p=paired_p(diff),
                 gates={ROI_GATE: bool(gate_passed)}, primary=primary)


def build_claims(config: LocalizedConfig, labels: torch.Tensor, evaluations: dict[str, ModelEvaluation],
                 gates: dict[str, dict[str, Any]], mask_gated: bool,
                 seeds: dict[str, list[ModelEvaluation]] | None = None) -> list[Claim]:
    """The pre-declared claims (not yet judged), primary first.

    Primary (Holm): localized training raises accuracy under the region-only
    ensemble (:func:`primary_condition`) over natural training, over PGD training,
    and over its two controls (mixed PGD training with the same clean share; the
    random-mask localized training); for the natural, PGD and localized models, the
    region-only PGD draws the importance map into the region. Secondary (BH): the
    other conditions (region-only PGD-20 among them, a diagnostic), the controls'
    energy shift, and PGD vs natural on the primary endpoint. Accuracy claims under
    a mask cut from the importance map carry the RoI gate of both models compared
    (``mask_gated``); mask-free ones carry none.
    """
    labels = labels.cpu()

    def acc_gates(cond: str, *modes: str) -> dict[str, bool]:
        if mask_gated and cond in ("region", "complement", "region-ensemble"):
            return {ROI_GATE: all(bool(gates[m]["passed"]) for m in modes)}
        return {}

    others = [m for m in MODES if m != "localized"]
    endpoint = primary_condition(config, evaluations["localized"].preds)
    claims = [accuracy_claim(config, labels, evaluations, endpoint, "localized", b,
                             acc_gates(endpoint, "localized", b), primary=True, seeds=seeds) for b in others]
    claims += [energy_claim(config, mode, evaluations[mode], gates[mode]["passed"], primary=mode not in CONTROLS)
               for mode in MODES]
    conditions = [c for c in evaluations["localized"].preds if c != endpoint]
    for cond in conditions:
        for b in others:
            claims.append(accuracy_claim(config, labels, evaluations, cond, "localized", b,
                                         acc_gates(cond, "localized", b), primary=False, seeds=seeds))
    claims.append(accuracy_claim(config, labels, evaluations, endpoint, "pgd", "natural",
                                 acc_gates(endpoint, "pgd", "natural"), primary=False, seeds=seeds))
    return claims


def primary_condition(config: LocalizedConfig, conditions: Mapping[str, Any]) -> str:
    """The primary endpoint: accuracy under the region-only ensemble (APGD-CE, APGD-DLR, Square restricted to
    the region), the strongest localized attack; region-only PGD is then a diagnostic. Without the ensemble
    (``ensemble_n`` 0, or no such condition among the evaluated ``conditions``) it is region-only PGD."""
    return "region-ensemble" if config.ensemble_n and "region-ensemble" in conditions else "region"


def measure(config: LocalizedConfig, data: ImageDataset, evaluations: dict[str, ModelEvaluation],
            gates: dict[str, dict[str, Any]], methods: dict[str, dict[str, str]],
            metrics: dict[str, Any], seeds: dict[str, list[ModelEvaluation]] | None = None) -> list[Claim]:
    """Claims, corrections and verdicts; the gate results and the RoI labels written into ``metrics``."""
    mask_gated = mask_uses_importance(config.mask, data)
    claims = judge(build_claims(config, data.labels, evaluations, gates, mask_gated, seeds), sesoi=config.sesoi,
                   alpha=config.significance)
    metrics["faithfulness"] = gates
    metrics["importance"] = {}
    for mode in MODES:
        label = roi_label(gates[mode]) or "interpretable"
        metrics["importance"][mode] = {**methods[mode], "faithful": bool(gates[mode]["passed"]),
                                       "interpretation": label}
        metrics["models"][mode]["cam_interpretation"] = label
        metrics["models"][mode]["mask_interpretation"] = label if mask_gated else "interpretable (mask-free)"
    metrics["mask_from_importance"] = mask_gated
    metrics["claims"] = [c.as_dict() for c in claims]
    return claims


# -- the experiment --------------------------------------------------------------------

@register_experiment("localized-training", LocalizedConfig,
                     "localized (background-only) attacks vs natural, PGD and localized adversarial training")
def run_localized(config: LocalizedConfig, rundir: RunDir) -> ExperimentResult:
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    timings: dict[str, float] = {}
    start: Start | None = None
    if finetunes(config):
        data = test_images(config, rundir)
        trained, start = finetune_models(config, rundir, data, device, timings)
        torch.manual_seed(config.seed)  # the same global stream after training as after loading cached models
    else:
        trained = train_models(config, device, timings)
        data = test_images(config, rundir)
    models = {m: t.model for m, t in trained.items()}
    methods = resolve_methods(config, models, data)
    gates = run_gates(config, rundir, models, data, device, methods, timings)
    rows: list[dict[str, Any]] = []
    evaluations: dict[str, ModelEvaluation] = {}
    for mode in MODES:
        evaluations[mode] = evaluate_model(mode, models[mode], config, data, rundir, methods[mode]["method"])
        timings[f"evaluate/{mode}"] = evaluations[mode].seconds
        rows.extend(model_rows(mode, data, evaluations[mode]))
    seeds = other_seeds(config, rundir, data, device, methods, timings, rows)
    metrics: dict[str, Any] = {
        "n": len(data), "mask": config.mask, "eps": config.eps, "norm": config.norm,
        "models": {mode: {**model_metrics(rows, mode), **training_facts(trained[mode])} for mode in MODES},
    }
    for mode in MODES:
        metrics["models"][mode]["seeds"] = seed_spread(rows, mode, config.training_seeds)
    claims = measure(config, data, evaluations, gates, methods, metrics, seeds)
    if start is not None:
        metrics["finetune"] = finetune_facts(config, rundir, data, start, trained, device, timings)
    started = time.perf_counter()
    from .localized_report import ReportContext, build_sections, summary_table

    ctx = ReportContext(config, rundir, data, models, evaluations, metrics, claims)
    sections = build_sections(ctx)
    timings["report"] = round(time.perf_counter() - started, 2)
    metrics["timings"] = timings
    return ExperimentResult(metrics, rows, summary_table(config, metrics, claims), sections)


def seed_name(mode: str, k: int) -> str:
    """The model name of ``mode`` trained with seed ``model_seed + k`` (k = 0: the mode itself)."""
    return mode if k == 0 else f"{mode}@seed{k}"


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


def seed_spread(rows: list[dict[str, Any]], mode: str, seeds: int) -> dict[str, dict[str, Any]]:
    """Per condition, the accuracy of each training seed's model and their mean and sample sd."""
    per_seed = [model_metrics(rows, seed_name(mode, k)) for k in range(seeds)]
    out = {}
    for key in per_seed[0]:
        if key.endswith("_accuracy"):
            values = [m[key] for m in per_seed]
            mean = sum(values) / len(values)
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
            out[key[: -len("_accuracy")]] = {"values": values, "mean": mean, "sd": sd}
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


def training_facts(trained: TrainedModel) -> dict[str, Any]:
    """What the model cache knows about a model: full test-set accuracy (NaN for a fine-tuned one), training
    time, checkpoint (a fine-tuned model's run-directory stage)."""
    meta = trained.metadata
    facts = {"test_accuracy": meta.get("test_accuracy", math.nan), "train_seconds": meta.get("train_seconds", math.nan),
             "epochs": trained.config.epochs, "checkpoint": str(trained.path) if trained.path else ""}
    if isinstance(trained.config, FinetuneConfig):
        facts.update({"steps": meta.get("steps", 0), "last_epoch_loss": meta.get("last_epoch_loss", math.nan),
                      "key": meta.get("key", "")})
    return facts


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
