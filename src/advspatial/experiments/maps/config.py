"""The settings of the RoI/RoA measurement (:class:`MeasurementConfig`, which ``analyze`` and the spatial
experiment share) and of the measurement alone as the ``maps`` experiment (:class:`MapsConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import ConfigError, unknown_name
from ...maps import list_attack_maps
from ..gate import GatedConfig
from ..settings import OPEN_UNIT_INTERVAL, check_attacks, check_importance_methods, setting


@dataclass
class MeasurementConfig(GatedConfig):
    """Settings of the RoI/RoA measurement (METHODS §1): attacks, maps, regions, statistics. The spatial
    experiment adds the defence's (:class:`~advspatial.experiments.spatial.SpatialConfig`); ``analyze`` measures
    examples made elsewhere."""

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
                     "onepixel_steps": "onepixel_steps", "batch_size": "batch_size", "image_size": "image_size",
                     "panel": "panel"}

    def validate(self) -> None:
        super().validate()
        self.validate_attacks()
        self.validate_measurement()

    def validate_attacks(self) -> None:
        """The attacks are registered; the defence's attack is one of them and runs on every image."""
        known = check_attacks(self.attacks)
        if self.defence_attack not in self.attacks:
            raise ConfigError(f"defence_attack={self.defence_attack!r} must be one of attacks {self.attacks}")
        if known[self.defence_attack].cls.norm == "l0":
            raise ConfigError(f"defence_attack={self.defence_attack!r}: choose an attack run on all n images (not L0)")

    def validate_measurement(self) -> None:
        """The settings of the RoI/RoA measurement: explainers, maps, fractions, budgets, statistics."""
        check_importance_methods(self.importance, *self.panel)
        if self.contribution_part not in ("drop", "absolute"):
            raise unknown_name("contribution part", self.contribution_part, ("drop", "absolute"))
        if self.attack_map not in list_attack_maps():
            raise unknown_name("attack map", self.attack_map, list_attack_maps())


@dataclass
class MapsConfig(MeasurementConfig):
    """Settings of the ``maps`` experiment: the RoI/RoA measurement of the attacks without the defence.

    ``defence_attack`` (the attack whose examples feed the explainer panel) is not an option here: the first
    attack run on every image (not L0) is it, set in :meth:`validate`.
    """

    CLI_HIDDEN: ClassVar[frozenset[str]] = frozenset({"defence_attack"})
    QUICK: ClassVar[dict[str, Any]] = {"n": 24, "batch_size": 12, "onepixel_n": 8, "onepixel_popsize": 40,
                                       "onepixel_steps": 5, "cw_steps": 10, "cw_search_steps": 2, "steps": 5,
                                       "contribution_steps": 8, "figure_images": 3, "permutations": 200,
                                       "gate_n": 24, "gate_steps": 5, "randomization_images": 4,
                                       "randomization_samples": 4,
                                       "panel": ["gradcam", "occlusion"], "panel_fractions": [0.1, 0.3]}

    def validate(self) -> None:
        from ...attacks import list_attacks

        known = list_attacks()
        dense = [a for a in self.attacks if a in known and known[a].cls.norm != "l0"]
        if self.attacks and all(a in known for a in self.attacks) and not dense:
            raise ConfigError(f"attacks={self.attacks}: maps needs at least one attack run on every image (not L0), "
                              "whose examples feed the explainer panel")
        if dense:
            self.defence_attack = dense[0]
        super().validate()


def contribution_kw(config: MeasurementConfig) -> dict[str, Any]:
    """Settings of the contribution map (steps, signed part, per-image completeness refinement)."""
    return {"steps": config.contribution_steps, "part": config.contribution_part,
            "tolerance": config.completeness_tolerance}
