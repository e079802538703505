"""The RoI/RoA measurement in one call (:func:`measure`): what the ``maps``, ``analyze`` and spatial experiments and
a study across models run.

The phases run in order: the context (:mod:`.stages`), the faithfulness gates (:mod:`.gate`), every attack with its
maps and any extra columns (:func:`~.stages.process_attack`), the outcomes (:mod:`.findings`), the inference with
its claims (:mod:`.claims`) and the figures (:mod:`.figures`); each phase reads what the earlier ones returned and
changes none of it. The report's sections are :mod:`.sections`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from torch import nn

from ...attacks import Attack
from ...data import ImageDataset
from ...rundir import RunDir
from .claims import infer
from .config import MeasurementConfig
from .figures import draw_figures
from .findings import Measured, MeasuredFindings, Outcomes, attack_outcomes
from .gate import run_gates
from .roi import Roi
from .batch_images import SharedBatches
from .stages import AttackSummary, BatchColumns, Context, measurement_context, process_attack

F = TypeVar("F", bound=MeasuredFindings)
#: the settings of a measurement (its config type)
M = TypeVar("M", bound=MeasurementConfig)
#: the attack stages whose work follows their iterations (the registry's ``steps_by``, what the forecast follows):
#: PGD's ``steps``, CW-L2's Adam steps in each of its search rounds (the cifar10 preset's 50 x 4, not 40 x 3)
ATTACK_STEPS = {r"^attack/(pgd|pgd-l2)$": ("steps",), r"^attack/cw-l2$": ("cw_steps", "cw_search_steps")}


@dataclass
class Measurement(Generic[M]):
    """Everything a measurement produced: the per-image rows, the outcomes and the inference a run's findings hold,
    and the context and per-attack summaries (the kept images' maps and regions) that a study compares further and
    an experiment's own stages continue from; ``extra``: the extra columns' maker's value (None without one)."""

    rows: list[dict[str, Any]]
    outcomes: Outcomes
    parts: Measured
    context: Context[M]
    summaries: list[AttackSummary]
    extra: BatchColumns | None = None

    def findings(self, cls: type[F], **tail: Any) -> F:
        """The findings ``cls`` holding the outcomes and the measured parts, plus ``tail`` fields."""
        return cls.measured(self.outcomes.head(), self.parts, **tail)


def measure(config: M, rundir: RunDir, images: ImageDataset | None = None,
            attacks: Mapping[str, Callable[[nn.Module], Attack]] | None = None,
            extra: Callable[[Context[M]], BatchColumns] | None = None) -> Measurement[M]:
    """RoI/RoA maps, regions, the faithfulness gate, statistics and verdicts for ``config.attacks``; the figures
    drawn into ``rundir.figures``.

    ``images``: the test images when they are not ``config.dataset``'s; ``attacks``: a maker ``model -> Attack``
    per name to run in place of the registered attack (``analyze``'s examples made elsewhere); ``extra``: makes more
    per-image columns of every attack batch (the spatial experiment's defence), called after the gates.
    """
    ctx = measurement_context(config, rundir, images)
    gates = run_gates(ctx)
    roi = Roi.judged(ctx.importance, ctx.importance_reason, gates[ctx.importance])
    columns = extra(ctx) if extra is not None else None
    rows: list[dict[str, Any]] = []
    makers, shared = attacks or {}, SharedBatches()
    summaries = [process_attack(ctx, name, rows, makers[name](ctx.model) if name in makers else None, columns, shared)
                 for name in config.attacks]
    del shared  # the statistics use the stores' own copies
    with rundir.passes.phase("statistics"):
        outcomes = attack_outcomes(ctx, summaries, rows, roi.interpretation)
        parts = infer(ctx, summaries, outcomes.attacks, gates, roi)
    with rundir.passes.phase("figures"):
        draw_figures(ctx, summaries, parts.claims)
    return Measurement(rows, outcomes, parts, ctx, summaries, columns)
