"""The ``maps`` experiment as registered (``advspatial run maps``): the RoI/RoA measurement
(:func:`~advspatial.experiments.measurement.run.measure`) without a defence and its findings (:mod:`.findings`), from
which the runner renders the report (:mod:`.report`); :func:`maps_analysis` is the measurement as maps findings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ...attacks import Attack
from ...data import ImageDataset
from ...rundir import RunDir
from ..measurement.config import MeasurementConfig
from ..measurement.gate import RANDOMIZATION_CHECKS
from ..measurement.onepixel_cost import onepixel_seconds
from ..measurement.run import ATTACK_STEPS, measure
from ..registry import register_experiment
from ..results import RunFindings
from .config import MapsConfig
from .findings import MapsFindings
from .report import render


@register_experiment("maps", MapsConfig,
                     "RoI vs RoA without the defence: maps, regions, the faithfulness gate, statistics and verdicts",
                     findings=MapsFindings, render=render,
                     contract={"n": 8, "batch_size": 4, "onepixel_n": 4, "attacks": ["fgsm", "onepixel"],
                               "panel": ["gradcam"], "gate_n": 8, "randomization_images": 2, "figure_images": 2},
                     steps_by=ATTACK_STEPS, priced_apart=onepixel_seconds, sized_by=RANDOMIZATION_CHECKS)
def run_maps(config: MapsConfig, rundir: RunDir) -> RunFindings:
    """The RoI/RoA measurement of every attack (also ``advspatial maps`` for one attack)."""
    rows, findings = maps_analysis(config, rundir)
    return RunFindings(findings, rows)


def maps_analysis(config: MeasurementConfig, rundir: RunDir, images: ImageDataset | None = None,
                  attacks: dict[str, Callable[[nn.Module], Attack]] | None = None,
                  ) -> tuple[list[dict[str, Any]], MapsFindings]:
    """RoI/RoA maps, regions, the faithfulness gate, statistics and verdicts for ``config.attacks`` - no defence;
    the figures drawn into ``rundir.figures``; returns (per-image rows, findings). ``images`` and ``attacks``: as
    :func:`~advspatial.experiments.measurement.run.measure` takes them."""
    measured = measure(config, rundir, images, attacks)
    return measured.rows, measured.findings(MapsFindings)
