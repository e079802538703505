"""The settings of experiment ``propagation`` (METHODS §6): the k-pixel attacks' budget, the recorded layers, the
locality test's placements and the claims' thresholds."""

from __future__ import annotations

from dataclasses import dataclass

from ...analysis.locality_placements import EDGE_STRATA, INTENSITY_STRATA
from ...errors import ConfigError
from ..settings import OPEN_UNIT_INTERVAL, ExperimentConfig, setting


@dataclass
class PropagationConfig(ExperimentConfig):
    """Settings of the propagation experiment (METHODS §6); every one is a CLI option."""

    n: int = setting(100, "number of test images (the first n)")
    pixels_list: list[int] = setting([1, 3, 5], "numbers of pixels k of the k-pixel attacks (1 = one-pixel)", low=1)
    popsize: int = setting(100, "DE population per image (literature: 400; reduced so the default run stays short)",
                           low=4)
    maxiter: int = setting(20, "DE generations (literature: 75; reduced so the default run stays short)", low=0)
    layers: list[str] = setting([], "layers (module names or fnmatch patterns); empty = every conv, activation "
                                    "and block module")
    radii: list[int] = setting([1, 2, 3], "Chebyshev radii of the locality test", low=1)
    n_random: int = setting(100, "uniform random placements per successful attack (the secondary locality control)",
                            low=0)
    matched_draws: int = setting(4, "context-matched random placements per ring variant (the primary locality control)",
                                 low=0)
    edge_strata: int = setting(EDGE_STRATA, "edge-strength bins (per-image quantiles) of the context-matched control",
                               low=1)
    intensity_strata: int = setting(INTENSITY_STRATA, "intensity bins (per-image quantiles) of the context-matched "
                                                      "control", low=1)
    sesoi: float = setting(0.01, "smallest effect of interest (PM units and success shares): a CI inside +-sesoi "
                                 "counts as equivalent to the control", low=0)
    significance: float = setting(0.05, "significance level after correction (Holm primary, BH secondary)",
                                  **OPEN_UNIT_INTERVAL)
    threshold: float = setting(0.1, "PMmax above this counts a position as reached (the spread)", low=0)
    random_draws: int = setting(4, "random one-pixel changes per image (random position, random corner colour) of "
                                   "the propagation-per-se claim; their peak PMmax is averaged per image", low=1)
    reach_fraction: float = setting(0.1, "the bar of the propagation-per-se claim: a random pixel's peak PMmax (a "
                                         "share of the layer's largest clean activation) must exceed it; 0.1 = a "
                                         "tenth, far above float noise, the spread's default threshold", low=0,
                                    high=1)
    figure_images: int = setting(4, "example images in each layer-strip figure", low=0)
    strip_layers: int = setting(10, "most layers shown in a layer-strip figure (evenly spaced in depth)", low=1)

    PRESET_FIELDS = {"onepixel_popsize": "popsize", "batch_size": "batch_size", "image_size": "image_size"}
    LAYER_ACCESS = "per-layer propagation maps read every layer through forward hooks"
    QUICK = {"n": 24, "batch_size": 12, "popsize": 20, "maxiter": 3, "pixels_list": [1, 3], "radii": [1, 2],
             "n_random": 10, "matched_draws": 2, "random_draws": 2, "figure_images": 2, "strip_layers": 6}

    def validate(self) -> None:
        super().validate()
        if not self.pixels_list:
            raise ConfigError("pixels_list must name at least one number of pixels k, e.g. 1,3,5")
        if not self.radii:
            raise ConfigError("radii must name at least one radius, e.g. 1,2,3")

