"""The settings of the spatial experiment: the RoI/RoA measurement's
(:class:`~advspatial.experiments.measurement.config.MeasurementConfig`) and the neutralization defence's, with the
configurations of the defence the report shows (:class:`DefenceSetting`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ...defence.adaptive import AdaptiveBudget
from ...defence.convergence import CurveGrid
from ...defence.adaptive_evaluation import AdaptivePlan
from ...defence.neutralize import CONTROL_MATCHES
from ...defence.transforms import TRANSFORMS, check_strengths
from ...errors import ConfigError, unknown_name
from ...regions.fills import list_fills
from ..measurement.config import MeasurementConfig
from ..settings import OPEN_UNIT_INTERVAL, setting


#: the baselines' strengths without a preset (Fashion-MNIST's); a preset may name its own (``noise_sds``)
DEFAULT_BASELINES: dict[str, list[float]] = {"blur_sigmas": [1.0], "noise_sds": [0.2], "jpeg_qualities": [20]}
#: a setting's value in :data:`SpatialConfig.FULL_EVAL` (None: every image)
FullValue = bool | list[float] | list[int] | list[str] | None

Role = Literal["main", "prior", "sweep"]


@dataclass(frozen=True)
class DefenceSetting:
    """One configuration the report shows: the main defence, its class-prior variant or a cell of the sweep."""

    role: Role
    fraction: float
    fill: str

    @property
    def vulnerability(self) -> str:
        """Where its RoA comes from: the input gradient, or the per-class prior."""
        return "prior" if self.role == "prior" else "gradient"

    @property
    def label(self) -> str:
        return f"{self.vulnerability} RoA, fraction {self.fraction:g}, {self.fill} fill"

    @property
    def parts(self) -> tuple[object, ...]:
        """Its name as parts of a stage key: ``main``, ``prior`` or ``sweep/FRACTION/FILL``."""
        return (self.role,) if self.role != "sweep" else (self.role, self.fraction, self.fill)


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
    curve_below_budget: bool = setting(False, "also measure the convergence curves below the budget (fewer "
                                              "iterations, restarts and EOT draws, a smaller eps) for the main "
                                              "defence and every randomized component: points the plot draws and no "
                                              "rule reads (--eval full: on)")
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
    blur_sigmas: list[float] = setting(DEFAULT_BASELINES["blur_sigmas"],
                                       "Gaussian blur baselines: sigma in pixels (--eval full: 0.5, 1, 2)")
    noise_sds: list[float] = setting(DEFAULT_BASELINES["noise_sds"],
                                     "Gaussian noise baselines: standard deviation (the cifar10 preset: 0.03; --eval "
                                     "full: half, once and twice the preset's, here 0.1, 0.2, 0.4)")
    jpeg_qualities: list[float] = setting(DEFAULT_BASELINES["jpeg_qualities"],
                                          "JPEG-style quantization baselines: quality, lower is coarser (--eval full: "
                                          "50, 20, 5)")

    PRESET_FIELDS: ClassVar[dict[str, str]] = {**MeasurementConfig.PRESET_FIELDS, "noise_sds": "noise_sds"}

    #: what ``--eval full`` sets (None: every image); the baselines' strengths are :meth:`full_baselines`
    FULL_EVAL: ClassVar[dict[str, FullValue]] = {
        "adaptive_n": None, "sweep_adaptive": True, "curve_below_budget": True, "fractions": [0.05, 0.1, 0.2, 0.3, 0.5],
        "fills": ["zero", "mean", "blur", "inpaint"], "eot_gradients": ["local", "identity"],
        "convergence_steps": [10, 20, 50, 100, 200, 500],
        "convergence_restarts": [1, 2, 5, 10], "convergence_eps": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]}
    #: ``--eval full`` runs each baseline at these multiples of its preset's strength (or the default's): with the
    #: defaults noise sd 0.1/0.2/0.4, blur sigma 0.5/1/2 and JPEG quality 50/20/5 (a higher quality is weaker)
    FULL_BASELINE_SCALES: ClassVar[dict[str, tuple[float, ...]]] = {
        "blur_sigmas": (0.5, 1.0, 2.0), "noise_sds": (0.5, 1.0, 2.0), "jpeg_qualities": (2.5, 1.0, 0.25)}

    QUICK = {"n": 24, "batch_size": 12, "onepixel_n": 8, "onepixel_popsize": 40, "onepixel_steps": 5,
             "cw_steps": 10, "cw_search_steps": 2, "steps": 5, "contribution_steps": 8,
             "prior_n": 24, "fractions": [0.1, 0.3], "figure_images": 3, "adaptive_n": 12,
             "adaptive_steps": 5, "adaptive_restarts": 1, "adaptive_queries": 40, "eot_iter": 2, "eot_early_stop": True,
             "control_draws": 3, "convergence_steps": [2, 5, 10], "convergence_restarts": [1, 2],
             "convergence_eot": [1, 2, 4],
             "convergence_eps": [0.5, 1.0, 8.0], "fills": ["zero", "blur"], "blur_sigmas": [1.0],
             "jpeg_qualities": [20],
             "permutations": 200, "gate_n": 24, "gate_steps": 5, "randomization_images": 4, "randomization_samples": 4,
             "panel": ["gradcam", "occlusion"], "panel_fractions": [0.1, 0.3]}

    def validate(self) -> None:
        super().validate()
        self.validate_defence()

    @classmethod
    def implied_values(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """``--eval full``'s grid (:data:`FULL_EVAL`, every image, :meth:`full_baselines`): below the YAML file and the
        explicit options, so ``--eval full --fractions 0.2`` keeps the fractions given."""
        if values.get("eval") != "full":
            return {}
        n = values.get("n", cls.n)
        grid = {**cls.FULL_EVAL, **cls.full_baselines(str(values.get("preset", "")))}
        return {name: n if value is None else value for name, value in grid.items()}

    @classmethod
    def full_baselines(cls, preset_name: str) -> dict[str, list[float]]:
        """The baselines' strengths under ``--eval full``: :data:`FULL_BASELINE_SCALES` times the first strength
        the preset gives (the field's default without one), so that a preset whose model is at chance under the
        default strength (CIFAR-10's under noise sd 0.2) gets a grid around its own. JPEG qualities stay in
        [1, 100]."""
        from ..presets import PRESETS

        preset = PRESETS.get(preset_name, {})
        grids: dict[str, list[float]] = {}
        for name, scales in cls.FULL_BASELINE_SCALES.items():
            base = float((preset.get(name) or DEFAULT_BASELINES[name])[0])
            values = [base * k for k in scales]
            if name == "jpeg_qualities":  # a quality: an integer in [1, 100] where it is one
                values = [int(q) if q.is_integer() else q for q in (min(100.0, max(1.0, v)) for v in values)]
            grids[name] = list(dict.fromkeys(values))
        return grids

    def defence_settings(self, with_prior: bool) -> list[DefenceSetting]:
        """The configurations the report shows: the main defence, its class-prior variant, then every other
        (fraction, fill) cell of the sweep."""
        out = [DefenceSetting("main", self.fraction, self.fill)]
        if with_prior:
            out.append(DefenceSetting("prior", self.fraction, self.fill))
        out += [DefenceSetting("sweep", f, fill) for f in self.fractions for fill in self.fills
                if (f, fill) != (self.fraction, self.fill)]
        return out

    def baseline_grid(self) -> list[tuple[str, float]]:
        """Every (transform, strength) baseline the run attacks."""
        grid = {"blur": self.blur_sigmas, "noise": self.noise_sds, "jpeg": self.jpeg_qualities}
        return [(t, float(s)) for t in self.baselines for s in grid[t]]

    def adaptive_plan(self) -> AdaptivePlan:
        """The adaptive attack at the run's eps and budget, and the grid of its convergence curves."""
        budget = AdaptiveBudget(steps=self.adaptive_steps, restarts=self.adaptive_restarts,
                                queries=self.adaptive_queries, eot_iter=self.eot_iter, draws=self.control_draws,
                                eot_early_stop=self.eot_early_stop, eot_restarts=self.eot_restarts,
                                eot_gradients=tuple(self.eot_gradients))
        grid = CurveGrid(tuple(self.convergence_steps), tuple(self.convergence_restarts), tuple(self.convergence_eps),
                         tuple(self.convergence_eot))
        return AdaptivePlan(self.eps_linf, budget, grid)

    def validate_defence(self) -> None:
        """The defence's settings: fills and fractions of the sweep, the adaptive evaluation's preset (its grid is
        layered by :meth:`implied_values`), budgets, control matching, curve grids, baselines."""
        if not self.fills or not self.fractions:
            raise ConfigError("fills and fractions must each name at least one value (the defence sweep)")
        for fill in [self.fill, *self.fills]:
            if fill not in list_fills():
                raise unknown_name("fill", fill, list_fills())

        if self.eval not in ("default", "full"):
            raise unknown_name("eval preset", self.eval, ("default", "full"))
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
