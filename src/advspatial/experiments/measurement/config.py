"""The settings of the faithfulness gate (:class:`GatedConfig`, which every experiment that uses an RoI shares)
and of the RoI/RoA measurement (:class:`MeasurementConfig`, which the ``maps``, ``analyze`` and spatial experiments
share)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import ConfigError, unknown_name
from ...faithfulness.draws import DEFAULT_DRAWS, PANEL_DRAWS
from ...faithfulness.gate import DEFAULT_MARGIN
from ...faithfulness.measures import EDGE_FREE_FILLS
from ...maps import list_attack_maps
from ..settings import OPEN_UNIT_INTERVAL, ExperimentConfig, check_attacks, check_importance_methods, setting

GATE_FILLS = ("zero", "blur", "road", "noise", "inpaint")
#: images of the panel's gates by default (a setting of the experiments with an explainer panel only)
PANEL_GATE_N = 200


@dataclass
class GatedConfig(ExperimentConfig):
    """Settings of the faithfulness gate and of the verdict rules, shared by every experiment that uses an RoI."""

    gate_n: int = setting(500, "images (a prefix of the n) entering the faithfulness gate of the RoI's explainer; "
                               "correct ones count", low=1)
    panel_gate_n: int = setting(PANEL_GATE_N, "images (a prefix of the n) entering the gates of the explainer "
                                              "panel (the other explainers, and the RoI's explainer at the panel's "
                                              "other fractions)", low=1)
    gate_until_decided: bool = setting(False, "continue the gates' looks past gate_n (and an explainer panel's "
                                              "panel_gate_n), up to every image of the run, until every row is "
                                              "decided")
    gate_fills: list[str] = setting(["road", "blur"], "deletion fills of the faithfulness gate (>= 2 of road, blur, "
                                                      "inpaint, zero, noise; one that creates no edges: road, blur "
                                                      "or inpaint; the default's measurement: docs/methods.md)")
    gate_steps: int = setting(10, "PGD steps of the gate's restricted attack (a damage comparison between regions "
                                  "of equal size, not a robustness figure)", low=1)
    gate_calibration: bool = setting(True, "calibrate the budget of the gate's restricted attack per model so that "
                                           "the unrestricted attack flips about half of the gate's images (at most "
                                           "the experiment's budget); --no-gate-calibration uses the budget as it is")
    gate_control: bool = setting(True, "gate a positive control beside the explainer (occlusion under the blur "
                                       "fill): where it cannot pass a row, the gate says it cannot judge it")
    equivalence_margin: float = setting(DEFAULT_MARGIN, "margin of the gate's three-outcome rules, as a share of "
                                                        "the RoI's own damage on each measure: 'not better' and "
                                                        "'equivalent' mean within it (docs/methods.md)",
                                        low=0, high=1, low_inclusive=False)
    randomization_images: int = setting(128, "images of the randomization checks (cascading randomization, smooth "
                                             "and efficient MPRT); below the gate's 30 they read 'insufficient "
                                             "data'", low=1)
    randomization_draws: int = setting(DEFAULT_DRAWS, "independent random re-initializations of the model per "
                                                      "randomization check of the RoI's explainer, each from its "
                                                      "own seed; the checks' CI spans draws and images", low=1)
    randomization_samples: int = setting(20, "noisy copies per image of smooth MPRT (the randomization check's "
                                             "denoising; Quantus' default is 50)", low=1)
    randomization_steps: int = setting(12, "cascade steps of the randomization check at which maps are compared "
                                           "(evenly spaced; every layer is still randomized in order)", low=1)
    randomization_curve_draws: int = setting(1, "re-initializations whose maps are compared at every cascade step "
                                                "(the curve no rule reads); the others, like these, at the last "
                                                "step, which the pass rule reads", low=1)
    sesoi: float = setting(0.01, "scale of the smallest effects of interest (0.01: the documented default per "
                                 "statistic; a CI inside +-SESOI is equivalent to the null, a significant effect "
                                 "below it negligible)",
                           low=0)
    significance: float = setting(0.05, "significance level after correction (Holm primary, BH secondary)",
                                  **OPEN_UNIT_INTERVAL)
    gate_sequential: bool = setting(True, "stop a gate's work once every row is decided: its comparisons in looks "
                                          "at 50, 100, 200, ... images (Haybittle-Peto bound |z| >= 3.29), the "
                                          "randomization checks only while they can change the verdict (a smoke "
                                          "test, --quick, runs them all); --no-gate-sequential runs every check on "
                                          "every image")

    #: an experiment without an explainer panel (its gate is the RoI's explainer's alone): ``panel_gate_n`` does
    #: nothing there, so it is not an option and a value other than its default is refused (:meth:`validate`);
    #: :class:`MeasurementConfig`, which has the panel, offers it
    CLI_HIDDEN: ClassVar[frozenset[str]] = frozenset({"panel_gate_n"})

    def validate(self) -> None:
        super().validate()
        if "panel_gate_n" in type(self).CLI_HIDDEN and self.panel_gate_n != PANEL_GATE_N:
            raise ConfigError(f"panel_gate_n={self.panel_gate_n} does nothing here: this experiment gates no explainer "
                              "panel (its gate's images are gate_n); leave panel_gate_n out")
        for fill in self.gate_fills:
            if fill not in GATE_FILLS:
                raise unknown_name("gate fill", fill, GATE_FILLS)
        if len(set(self.gate_fills)) < 2:
            raise ConfigError("gate_fills needs at least two different fills (e.g. road,blur)")
        if not set(self.gate_fills) & set(EDGE_FREE_FILLS):
            raise ConfigError(f"gate_fills needs a fill that creates no edges ({', '.join(EDGE_FREE_FILLS)}) to judge "
                              f"the scattered control; got {self.gate_fills}")


@dataclass
class MeasurementConfig(GatedConfig):
    """Settings of the RoI/RoA measurement (METHODS §1): attacks, maps, regions, statistics. The spatial
    experiment adds the defence's (:class:`~advspatial.experiments.spatial.SpatialConfig`); ``analyze`` measures
    examples made elsewhere."""

    attacks: list[str] = setting(["fgsm", "pgd", "pgd-l2", "cw-l2", "deepfool", "onepixel"],
                                 "attacks to run (advspatial list attacks)")
    eps_linf: float = setting(0.1, "L-inf budget of FGSM/PGD and of the adaptive attack", low=0, high=1,
                              low_inclusive=False)
    eps_l2: float = setting(1.5, "L2 budget of PGD-L2", low=0, low_inclusive=False)
    steps: int = setting(20, "PGD iterations", low=1)
    cw_steps: int = setting(40, "Adam steps per CW-L2 binary-search round", low=1)
    cw_search_steps: int = setting(3, "CW-L2 binary-search rounds over c", low=1)
    onepixel_n: int = setting(100, "images given to the one-pixel attack (a prefix of the n images)", low=1)
    onepixel_popsize: int = setting(100, "one-pixel DE population per image (literature: 400)", low=1)
    onepixel_steps: int = setting(30, "one-pixel DE generations (literature: 75)", low=1)
    importance: str = setting("auto", "importance map of the RoI: auto (Grad-CAM for a GAP+linear head, HiResCAM "
                                      "for a flatten/FC head) or a name (advspatial list maps)")
    panel: list[str] = setting(["gradcam", "hirescam", "inputxgrad"],
                               "explainers of the sensitivity panel (each gated; the RoI's own is always added); "
                               "occlusion and ig are opt-in: with their randomization checks they cost about 100x "
                               "a gradient map (benchmarks/README.md)")
    panel_fractions: list[float] = setting([0.05, 0.1, 0.2, 0.3, 0.5], "region fractions of the sensitivity panel",
                                           **OPEN_UNIT_INTERVAL)
    panel_randomization_draws: int = setting(PANEL_DRAWS, "re-initializations per randomization check of the "
                                                          "panel's other explainers (their gates qualify secondary "
                                                          "rows only; the RoI's explainer: randomization_draws)",
                                             low=1)
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

    #: the panel's gates take ``panel_gate_n`` images: an option here
    CLI_HIDDEN: ClassVar[frozenset[str]] = frozenset()
    PRESET_FIELDS = {"eps_linf": "eps_linf", "eps_l2": "eps_l2", "steps": "steps", "cw_steps": "cw_steps",
                     "cw_search_steps": "cw_search_steps", "onepixel_popsize": "onepixel_popsize",
                     "onepixel_steps": "onepixel_steps", "batch_size": "batch_size", "image_size": "image_size"}

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


def contribution_kw(config: MeasurementConfig) -> dict[str, Any]:
    """Settings of the contribution map (steps, signed part, per-image completeness refinement)."""
    return {"steps": config.contribution_steps, "part": config.contribution_part,
            "tolerance": config.completeness_tolerance}
