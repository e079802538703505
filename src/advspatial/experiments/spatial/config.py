"""The settings of the spatial experiment: the RoI/RoA measurement's (:class:`MeasurementConfig`, which
``analyze`` shares), the measurement alone as the ``maps`` experiment (:class:`MapsConfig`) and the
defence's (:class:`SpatialConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...defense.neutralize import CONTROL_MATCHES
from ...defense.transforms import TRANSFORMS
from ...errors import ConfigError, unknown_name
from ...maps import list_attack_maps, list_importance_methods
from ...regions.fills import list_fills
from ..gate import GatedConfig
from ..settings import OPEN_UNIT_INTERVAL, setting


@dataclass
class MeasurementConfig(GatedConfig):
    """Settings of the RoI/RoA measurement (METHODS §1): attacks, maps, regions, statistics. The spatial
    experiment adds the defence's (:class:`SpatialConfig`); ``analyze`` measures examples made elsewhere."""

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
                     "onepixel_steps": "onepixel_steps", "batch_size": "batch_size", "image_size": "image_size"}

    def validate(self) -> None:
        super().validate()
        self.validate_attacks()
        self.validate_measurement()

    def validate_attacks(self) -> None:
        """The attacks are registered; the defence's attack is one of them and runs on every image."""
        from ...attacks import list_attacks

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

    def validate_measurement(self) -> None:
        """The settings of the RoI/RoA measurement: explainers, maps, fractions, budgets, statistics."""
        for method in [self.importance, *self.panel]:
            if method not in list_importance_methods():
                raise unknown_name("importance method", method, list_importance_methods())
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


@dataclass
class SpatialConfig(MeasurementConfig):
    """Settings of the spatial experiment (METHODS §1-2): the measurement's and the defence's; each is a CLI option."""

    n: int = setting(500, "number of test images, a class-stratified subset (500 keeps the default run within 5 "
                          "minutes on 2 CPU cores; the gate uses all of them; --n 1000 narrows the CIs by ~30%)",
                     low=1)
    fill: str = setting("zero", "fill of the neutralized region (zero, mean, blur, inpaint)")
    fills: list[str] = setting(["zero", "blur"], "fills compared in the sweep (--eval full: zero, mean, blur, inpaint)")
    fractions: list[float] = setting([0.1, 0.3], "neutralized fractions of the sweep, beside the main --fraction "
                                                 "(--eval full: 0.05, 0.1, 0.2, 0.3, 0.5)", **OPEN_UNIT_INTERVAL)
    inpaint_iterations: int = setting(100, "Jacobi sweeps of the diffusion inpainting fill (stops earlier at 1e-5)",
                                      low=1)
    prior_n: int = setting(500, "training images for the per-class prior of the deployable defence", low=1)
    control_draws: int = setting(10, "draws per image of every random control (keyed by the global image id)", low=1)
    control_match: str = setting("foreground", "what the random control matches besides its size and avoiding the "
                                               "RoI: foreground (object/background pixel counts), change (the fill's "
                                               "per-pixel change, so its L2 change) or none")
    eval: str = setting("default", "strength of the defence evaluation: default (the settings as given: the main "
                                   "defence, its control and the baselines attacked adaptively) or full (every "
                                   "image, every configuration of the whole sweep grid, three strengths per "
                                   "baseline, denser curves)")
    adaptive_n: int = setting(50, "images of the adaptive evaluation (the first ones; all with --eval full)", low=1)
    adaptive_steps: int = setting(100, "APGD iterations per restart of the adaptive ensemble", low=1)
    adaptive_restarts: int = setting(5, "APGD restarts of the adaptive ensemble", low=1)
    adaptive_queries: int = setting(5000, "Square attack queries of the adaptive ensemble", low=1)
    eot_iter: int = setting(20, "EOT: draws averaged per gradient on a randomized defence (the random control, the "
                                "noise baseline); below 20 their numbers are upper bounds from a weak attack", low=1)
    eot_early_stop: bool = setting(False, "EOT attacks stop an image once every draw of a step is fooled (cheaper, "
                                          "weaker: the numbers become upper bounds, kept out of the verdicts)")
    eot_restarts: int = setting(1, "APGD restarts of each loss on a randomized defence", low=1)
    eot_gradients: list[str] = setting(["local"], "gradients a randomized defence is attacked through: local (the "
                                                  "exact gradient of the draw, EOT's) and/or identity (BPDA; "
                                                  "--eval full: both)")
    sweep_adaptive: bool = setting(False, "attack the class-prior variant and every (fraction, fill) of the sweep "
                                          "adaptively too (--eval full: on); otherwise they are 'not evaluated "
                                          "adaptively'")
    convergence_steps: list[int] = setting([10, 50, 100, 500], "iteration counts of the convergence curve "
                                                                        "(must contain adaptive_steps and go beyond)")
    convergence_restarts: list[int] = setting([1, 5, 10], "restart counts of the convergence curve (must contain "
                                                             "adaptive_restarts and go beyond)")
    convergence_eps: list[float] = setting([0.25, 1.0, 2.0, 8.0], "eps of the eps curve, as multiples "
                                                                            "of eps_linf (capped at 1)",
                                           low=0, low_inclusive=False)
    convergence_eot: list[int] = setting([1, 4, 20, 50], "EOT draws of a randomized component's convergence curve "
                                                         "(must contain eot_iter and go beyond)", low=1)
    baselines: list[str] = setting(["blur", "noise", "jpeg"], "trivial input transforms of the trade-off plot")
    blur_sigmas: list[float] = setting([1.0], "Gaussian blur baselines: sigma in pixels (--eval full: 0.5, 1, 2)")
    noise_sds: list[float] = setting([0.2], "Gaussian noise baselines: standard deviation (--eval full: 0.1, 0.2, 0.4)")
    jpeg_qualities: list[float] = setting([20], "JPEG-style quantization baselines: quality, lower is coarser "
                                                "(--eval full: 50, 20, 5)")

    #: what ``--eval full`` sets (None: every image)
    FULL_EVAL: ClassVar[dict[str, Any]] = {
        "adaptive_n": None, "sweep_adaptive": True, "fractions": [0.05, 0.1, 0.2, 0.3, 0.5],
        "fills": ["zero", "mean", "blur", "inpaint"], "blur_sigmas": [0.5, 1.0, 2.0], "noise_sds": [0.1, 0.2, 0.4],
        "eot_gradients": ["local", "identity"],
        "jpeg_qualities": [50, 20, 5], "convergence_steps": [10, 20, 50, 100, 200, 500],
        "convergence_restarts": [1, 2, 5, 10], "convergence_eps": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]}

    QUICK = {"n": 24, "batch_size": 12, "onepixel_n": 8, "onepixel_popsize": 40, "onepixel_steps": 5,
             "cw_steps": 10, "cw_search_steps": 2, "steps": 5, "contribution_steps": 8,
             "prior_n": 24, "fractions": [0.1, 0.3], "figure_images": 3, "adaptive_n": 12,
             "adaptive_steps": 5, "adaptive_restarts": 1, "adaptive_queries": 40, "eot_iter": 2, "eot_early_stop": True,
             "control_draws": 3, "convergence_steps": [2, 5, 10], "convergence_restarts": [1, 2],
             "convergence_eot": [1, 2, 4],
             "convergence_eps": [0.5, 1.0, 8.0], "fills": ["zero", "blur"], "blur_sigmas": [1.0],
             "noise_sds": [0.2], "jpeg_qualities": [20],
             "permutations": 200, "gate_n": 24, "gate_steps": 5, "randomization_images": 4, "randomization_samples": 4,
             "panel": ["gradcam", "occlusion"], "panel_fractions": [0.1, 0.3]}

    def validate(self) -> None:
        super().validate()
        self.validate_defence()

    def validate_defence(self) -> None:
        """The defence's settings: fills and fractions of the sweep, the adaptive evaluation's preset (applied
        here, so config.yaml shows it), budgets, control matching, curve grids, baselines."""
        if not self.fills or not self.fractions:
            raise ConfigError("fills and fractions must each name at least one value (the defence sweep)")
        for fill in [self.fill, *self.fills]:
            if fill not in list_fills():
                raise unknown_name("fill", fill, list_fills())
        from ...defense.adaptive import AdaptiveBudget
        from ...defense.convergence import CurveGrid
        from ...defense.transforms import check_strengths

        if self.eval not in ("default", "full"):
            raise unknown_name("eval preset", self.eval, ("default", "full"))
        if self.eval == "full":
            for name, value in self.FULL_EVAL.items():
                setattr(self, name, self.n if value is None else value)
        if self.control_match not in CONTROL_MATCHES:
            raise unknown_name("control_match", self.control_match, CONTROL_MATCHES)
        budget = AdaptiveBudget(steps=self.adaptive_steps, restarts=self.adaptive_restarts, eot_iter=self.eot_iter,
                                eot_gradients=tuple(self.eot_gradients))
        CurveGrid(tuple(self.convergence_steps), tuple(self.convergence_restarts), tuple(self.convergence_eps),
                  tuple(self.convergence_eot)).check(budget)
        grids = {"blur": self.blur_sigmas, "noise": self.noise_sds, "jpeg": self.jpeg_qualities}
        for transform in self.baselines:
            if transform not in TRANSFORMS:
                raise unknown_name("baseline", transform, TRANSFORMS)
            check_strengths(transform, list(grids[transform]))


def contribution_kw(config: MeasurementConfig) -> dict[str, Any]:
    """Settings of the contribution map (steps, signed part, per-image completeness refinement)."""
    return {"steps": config.contribution_steps, "part": config.contribution_part,
            "tolerance": config.completeness_tolerance}
