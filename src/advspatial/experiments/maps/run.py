"""The ``maps`` experiment as registered (``advspatial run maps``), and the measurement it runs
(:func:`maps_analysis`: also the ``advspatial maps`` command and the ``analyze`` experiment).

The stages run in order (:mod:`.stages`), then the findings (:mod:`.metrics`) with the claims (:mod:`.claims`), the
figures (:mod:`.figures`), and the report renders from the findings (:mod:`.report`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ...attacks import Attack
from ...data import ImageDataset
from ...rundir import RunDir
from ..registry import register_experiment
from ..results import ExperimentResult
from .claims import measure, run_gates
from .config import MapsConfig, MeasurementConfig
from .figures import draw_figures
from .metrics import MapsFindings, attack_outcomes
from .report import render
from .stages import AttackSummary, Context, measurement_context, process_attack


@register_experiment("maps", MapsConfig,
                     "RoI vs RoA without the defence: maps, regions, the faithfulness gate, statistics and verdicts",
                     findings=MapsFindings, render=render,
                     contract={"n": 8, "batch_size": 4, "onepixel_n": 4, "attacks": ["fgsm", "onepixel"],
                               "panel": ["gradcam"], "gate_n": 8, "randomization_images": 2, "figure_images": 2})
def run_maps(config: MapsConfig, rundir: RunDir) -> ExperimentResult:
    """The RoI/RoA measurement of every attack (also ``advspatial maps`` for one attack)."""
    rows, findings = maps_analysis(config, rundir)
    return ExperimentResult.of(findings, rows, render(config, findings, rundir.figures))


def maps_analysis(config: MeasurementConfig, rundir: RunDir, images: ImageDataset | None = None,
                  attacks: dict[str, Callable[[nn.Module], Attack]] | None = None,
                  ) -> tuple[list[dict[str, Any]], MapsFindings]:
    """RoI/RoA maps, regions, the faithfulness gate, statistics and verdicts for ``config.attacks`` - no defence;
    the figures drawn into ``rundir.figures``.

    Backs the ``advspatial maps`` command and the ``analyze`` experiment, which passes its own ``images``
    and, in ``attacks``, a maker ``model -> Attack`` per name (the examples made elsewhere) in place of the
    registered attack; returns (per-image rows, findings).
    """
    measurement = maps_measurement(config, rundir, images, attacks)
    return measurement.rows, measurement.findings


@dataclass
class MapsMeasurement:
    """Everything a measurement produced: the per-image rows and findings a run writes, and the context and per-attack
    summaries (the kept images' maps and regions) that a study across models compares further."""

    rows: list[dict[str, Any]]
    findings: MapsFindings
    context: Context
    summaries: list[AttackSummary]


def maps_measurement(config: MeasurementConfig, rundir: RunDir, images: ImageDataset | None = None,
                     attacks: dict[str, Callable[[nn.Module], Attack]] | None = None) -> MapsMeasurement:
    """:func:`maps_analysis` with the context and the attack summaries kept."""
    ctx = measurement_context(config, rundir, images)
    gates = run_gates(ctx)
    rows: list[dict[str, Any]] = []
    makers = attacks or {}
    summaries = [process_attack(ctx, name, rows, makers[name](ctx.model) if name in makers else None)
                 for name in config.attacks]
    head = attack_outcomes(ctx, summaries, rows)
    measured = measure(ctx, summaries, head["attacks"], gates)
    draw_figures(ctx, summaries, measured.claims)
    return MapsMeasurement(rows, MapsFindings.measured(head, measured), ctx, summaries)
