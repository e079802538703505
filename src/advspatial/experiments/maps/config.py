"""The settings of the ``maps`` experiment: the RoI/RoA measurement's (:class:`MeasurementConfig`) with its
explainer-panel attack picked from the attacks (:class:`MapsConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...attacks import list_attacks
from ...errors import ConfigError
from ..measurement.config import MeasurementConfig


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
        known = list_attacks()
        dense = [a for a in self.attacks if a in known and known[a].cls.norm != "l0"]
        if self.attacks and all(a in known for a in self.attacks) and not dense:
            raise ConfigError(f"attacks={self.attacks}: maps needs at least one attack run on every image (not L0), "
                              "whose examples feed the explainer panel")
        if dense:
            self.defence_attack = dense[0]
        super().validate()
