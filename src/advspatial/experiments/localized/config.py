"""The settings of experiment ``localized-training`` (METHODS §4), and what follows from them alone: the models
compared and how each is trained or fine-tuned, the attack conditions and their names, the gate's budget."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError, check_range
from ...masks import MASK_KINDS
from ...models import parse_model_spec
from ...training import TrainConfig
from ..measurement.config import GatedConfig
from ..settings import OPEN_UNIT_INTERVAL, check_importance_methods, setting
from .finetuning import FINETUNE_LR, FinetuneConfig

#: the training modes compared, in table order: natural, Madry PGD, and localized training beside its two
#: controls (mixed-pgd: the same clean/adversarial mixture with full-image examples; localized-random: the same
#: loss on a region of the same area at random positions, redrawn per batch)
MODES = ("natural", "pgd", "mixed-pgd", "localized", "localized-random")
#: modes whose loss mixes clean and adversarial examples with weight ``mix``
MIXED = ("mixed-pgd", "localized", "localized-random")
#: modes trained against a region of each image (they need the training masks)
MASKED = ("localized", "localized-random")
#: the two controls of localized training
CONTROLS = ("mixed-pgd", "localized-random")
#: the models whose example images the report shows
EXAMPLE_MODES = ("natural", "localized")
#: readable names of the modes
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
#: the report's definition of the two regions
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
                                     "mean ± sd over them; every claim per seed (seed k of one model against seed k "
                                     "of the other) with a CI over seeds and images, supported only when every seed "
                                     "agrees, insufficient data below 3; the first seed's models carry the gate",
                                  low=1)
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
             "ensemble_steps": 5, "ensemble_queries": 50, "eps_sweep": [2.0], "train_limit": 512, "steps": 3,
             "figure_images": 2, "gate_n": 16, "gate_steps": 3, "randomization_images": 4, "randomization_samples": 4}

    @classmethod
    def preset_values(cls, preset: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """The preset's L2 budget instead of its L-inf one when ``norm`` is l2."""
        from ..presets import PRESETS

        values = super().preset_values(preset, given)
        if given.get("norm") == "l2" and "eps_l2" in PRESETS[preset]:
            values["eps"] = PRESETS[preset]["eps_l2"]
        return values

    def validate(self) -> None:
        super().validate()
        if self.norm not in ("linf", "l2"):
            raise ConfigError(f"norm={self.norm!r} is not valid; valid: linf, l2")
        check_range("eps", self.eps, 0, 1 if self.norm == "linf" else None, low_inclusive=False)
        check_importance_methods(self.importance)
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
    adversarial: dict[str, Any] = {"eps": config.eps, "norm": config.norm, "attack_steps": config.train_attack_steps}
    if mode in MIXED:
        adversarial["mix"] = config.mix
    return TrainConfig(mode=mode, epochs=config.train_epochs, **adversarial, **common)


def seeded(config: LocalizedConfig, k: int) -> LocalizedConfig:
    """``config`` for training seed offset ``k``: the same recipe with seed ``model_seed + k``."""
    return dataclasses.replace(config, model_seed=config.model_seed + k)


def seed_name(mode: str, k: int) -> str:
    """The model name of ``mode`` trained with seed ``model_seed + k`` (k = 0: the mode itself)."""
    return mode if k == 0 else f"{mode}@seed{k}"


def natural_epochs(config: LocalizedConfig) -> int:
    """Epochs of the natural model trained from scratch: matched to the others unless set."""
    return config.natural_epochs or config.train_epochs


def finetunes(config: LocalizedConfig) -> bool:
    """True when every model is fine-tuned from ``config.model`` (any spec but a registered architecture
    without weights, which is trained from scratch)."""
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


def sweep_eps(config: LocalizedConfig) -> dict[str, float]:
    """{condition name: budget} of the eps sweep's full-image PGD conditions."""
    cap = 1.0 if config.norm == "linf" else math.inf
    return {f"full@x{factor:g}": min(factor * config.eps, cap) for factor in config.eps_sweep}


def budget_text(config: LocalizedConfig) -> str:
    """The attack budget in words, e.g. ``L-inf eps=0.1``."""
    return f"{'L-inf' if config.norm == 'linf' else 'L2'} eps={config.eps:g}"


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

