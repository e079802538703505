"""Settings of the ``pse`` experiment: :class:`PSEConfig`, its valid choices, and the attacks its settings build
(with the experiment's budgets; the adaptive attack on the masked model, and its name)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...analysis.pse import METHODS as PSE_METHODS
from ...analysis.units import RANK_BY
from ...attacks import Attack, make_attack
from ...errors import ConfigError
from ...runtime import scaled_batch
from ..measurement.config import GatedConfig
from ..settings import OPEN_UNIT_INTERVAL, check_attacks, check_importance_methods, setting
from .stability import group_spec
from .targets import TARGET_MODES

MODES = ("untargeted", "targeted")
BASELINES = ("same-class", "any-class")
ADAPTIVE_ATTACKS = ("pgd", "autoattack")


@dataclass
class PSEConfig(GatedConfig):
    """Settings of the promotion–suppression experiment (METHODS §5); every one is a CLI option."""

    n: int = setting(100, "number of test images (the first n; 100 keeps the default run near 5 minutes on 2 "
                          "cores; raise it for power)")
    batch_size: int = setting(100, "images per batch (memory does not grow with n); on a GPU, "
                              "unless given, raised to what its memory takes in a call")
    attacks: list[str] = setting(["cw-l2", "pgd"], "attacks to run (advspatial list attacks; need a targeted mode)")
    modes: list[str] = setting(["untargeted", "targeted"], "attack modes", choices=MODES)
    target_mode: str = setting("random", "target class of targeted attacks: random (seeded, != label), "
                                         "least-likely (lowest clean logit) or next ((label+1) mod K)",
                               choices=TARGET_MODES)
    eps: float = setting(0.1, "L-inf budget of PGD (and of the dissection attack when it is PGD)", low=0, high=1,
                         low_inclusive=False)
    steps: int = setting(20, "PGD iterations", low=1)
    cw_steps: int = setting(50, "Adam steps per CW-L2 binary-search round", low=1)
    cw_search_steps: int = setting(4, "CW-L2 binary-search rounds over c", low=1)
    block: int = setting(2, "side of the square pixel groups G", low=1)
    pse_method: str = setting("exact", "exact (forward pass per group) or first_order (gradient x delta)",
                              choices=PSE_METHODS)
    kappa: float = setting(2.0, "dominance factor of the group types", low=1)
    noise_floor: float = setting(0.01, "a group is typed only when |s_G| or |p_G| exceeds this fraction of its "
                                       "image's total effect |s| + |p|; the others are counted as untyped",
                                 low=0, high=1)
    control_draws: int = setting(3, "random-sign draws of the typing's control (the same per-group energy with random "
                                    "signs, averaged per image; each draw costs one more PSE pass of the "
                                    "successful images)", low=1)
    stability_kappas: list[float] = setting([1.5, 3.0], "other kappas the typing is compared with (stability)",
                                            low=1)
    stability_groups: list[str] = setting(["4x4", "superpixels"], "other pixel groups the typing is compared "
                                          "with: BxB blocks, or superpixels (SLIC; needs scikit-image)")
    stability_images: int = setting(100, "the first test images whose successful attacks enter the comparison "
                                         "of pixel groups (each group choice costs one more PSE pass)", low=0)
    superpixels: int = setting(50, "SLIC superpixels per image (stability_groups 'superpixels')", low=1)
    pair_batch: int = setting(2048, "(image, group) pairs per forward pass of the exact method, for 28x28 images; "
                                    "larger images get proportionally fewer (the same pixels per pass)", low=1)
    cam: str = setting("auto", "class activation map (the RoI): auto (Grad-CAM for a GAP+linear head, HiResCAM "
                               "for a flatten/FC head), cam (GAP nets) or any importance method (advspatial list maps)")
    top_fraction: float = setting(0.2, "top fraction of each CAM forming its region", low=0, high=1,
                                  low_inclusive=False)
    cam_weight: str = setting("energy", "weight of a pixel in the CAM overlap: energy (sum_c delta^2) or pixels",
                              choices=("energy", "pixels"))
    baseline: str = setting("same-class", "primary null of the CAM claims: same-class or any-class re-pairing "
                                          "(every null of the engine's hierarchy is reported as a secondary row)",
                            choices=BASELINES)
    permutations: int = setting(10000, "permutations (pair nulls) and random placements (uniform null) of the "
                                      "image-level test (two-sided p; the smallest p is 1/(B+1), so B must allow "
                                      "Holm across the primary claims)", low=1)
    permutation_images: int = setting(1000, "successful images per attack entering the image-level test", low=1)
    unit_layer: str = setting("", "layer whose channels are the units (default: the model's cam_layer)")
    rank_by: str = setting("mean_abs", "unit ranking", choices=RANK_BY)
    unit_train_n: int = setting(50, "training images (class-stratified) attacked to rank the units; the masking "
                                     "curve is then measured on the test images", low=1)
    mask_random: int = setting(5, "random-unit draws per k of the masking control", low=0)
    adaptive_n: int = setting(100, "test images (the first) attacked on the masked model (adaptive check)", low=1)
    adaptive_attack: str = setting("autoattack", "attack run on the masked model: autoattack (the APGD-CE/APGD-DLR/"
                                                 "Square ensemble of the defence evaluation, 1 restart of steps "
                                                 "iterations, adaptive_queries Square queries) or pgd (eps, steps: "
                                                 "weaker, its accuracy an upper bound)", choices=ADAPTIVE_ATTACKS)
    adaptive_queries: int = setting(1000, "Square queries per image when adaptive_attack is autoattack", low=1)
    dissection: bool = setting(True, "dissect the analysed model with concept masks that are not its labels "
                                     "(skipped, and said so, when its data has none)")
    concepts: str = setting("", "concept masks of the test split for dissection: a .pt or .npz file of named "
                                "(N,H,W) bool masks (docs/experiments/pse.md); '' = the dataset's own, if any")
    dissection_attack: str = setting("pgd", "untargeted attack measuring unit sensitivity for the dissection")
    dissection_quantile: float = setting(0.995, "activation quantile of a unit's region (0.995 = top 0.5%)",
                                         **OPEN_UNIT_INTERVAL)
    correlation_permutations: int = setting(10000, "permutations of the sensitivity-interpretability p-value (the "
                                                   "engine's rule and count, as every permutation test)", low=1)
    figure_images: int = setting(4, "example images per attack variant", low=0)

    PRESET_FIELDS = {"eps_linf": "eps", "steps": "steps", "cw_steps": "cw_steps", "cw_search_steps": "cw_search_steps",
                     "pse_block": "block", "batch_size": "batch_size", "image_size": "image_size"}
    LAYER_ACCESS = "class activation maps and unit analyses read layers through forward hooks"
    QUICK = {"n": 24, "batch_size": 12, "steps": 5, "cw_steps": 10, "cw_search_steps": 2, "permutations": 200,
             "mask_random": 2, "unit_train_n": 24, "stability_images": 12, "adaptive_n": 12,
             "correlation_permutations": 100, "figure_images": 2, "control_draws": 1, "adaptive_queries": 100,
             "gate_n": 24, "gate_steps": 5, "randomization_images": 4, "randomization_samples": 4}

    def validate(self) -> None:
        super().validate()
        known = check_attacks(self.attacks, self.dissection_attack, "pgd")
        if not self.modes:
            raise ConfigError(f"modes must name at least one of {', '.join(MODES)}")
        if "targeted" in self.modes:
            for name in self.attacks:
                if not known[name].cls.supports_targeted:
                    raise ConfigError(f"attack {name!r} has no targeted mode; drop it or use modes=untargeted")
        check_importance_methods(self.cam)
        for spec in self.stability_groups:
            group_spec(spec)


def measure_settings(config: PSEConfig, x: torch.Tensor) -> dict[str, Any]:
    """The settings every promotion/suppression measurement of the run shares, for images like ``x``: the method,
    kappa, the noise floor, and the (image, group) pairs per forward pass (scaled to the image size)."""
    return {"method": config.pse_method, "kappa": config.kappa, "noise_floor": config.noise_floor,
            "batch_size": scaled_batch(config.pair_batch, *x.shape[2:])}


#: how the report labels the accuracy under the PGD option
PGD_UPPER_BOUND = "a weaker attack than the ensemble: its accuracy is an upper bound on robust accuracy"


def adaptive_description(config: PSEConfig) -> str:
    """How metrics and report name the attack run on the masked model."""
    if config.adaptive_attack == "autoattack":
        return (f"the APGD-CE/APGD-DLR/Square ensemble (L-inf eps {config.eps}, {config.steps} steps, "
                f"{config.adaptive_queries} queries)")
    return f"PGD (L-inf eps {config.eps}, {config.steps} steps; {PGD_UPPER_BOUND})"



def adaptive_attack_of(model: nn.Module, config: PSEConfig) -> Attack:
    """The attack run on the masked model: the registered ensemble (default: masking is a defence, and a defence is
    evaluated by the adaptive ensemble), or PGD at the experiment's budget (cheaper, weaker)."""
    if config.adaptive_attack == "autoattack":
        return make_attack("autoattack", model, eps=config.eps, steps=config.steps, n_restarts=1,
                           n_queries=config.adaptive_queries, seed=config.seed)
    return config.budgeted_attack("pgd", model)
