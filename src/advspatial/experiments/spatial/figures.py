"""Figures of the spatial experiment's neutralization defence, drawn at run time from the findings into the run's
``figures/`` folder (:mod:`advspatial.report.defence_figures`): the sweep, the convergence panel, the clean-cost vs
robustness trade-off (the report shows a figure when its file is there)."""

from __future__ import annotations

import math
from pathlib import Path

from ...report.defence_figures import plot_convergence, plot_defence_sweep, plot_tradeoff
from ..findings import to_json
from .config import SpatialConfig
from .metrics import SpatialFindings

SWEEP, CONVERGENCE, TRADEOFF = "defence-sweep.png", "defence-convergence.png", "defence-tradeoff.png"


def draw_defence_figures(config: SpatialConfig, f: SpatialFindings, figures: Path) -> None:
    """The sweep, the convergence panel and the trade-off of a spatial run, into ``figures``."""
    ad = f.adaptive_part()
    # the sweep figure reads each cell in its metrics.json form
    plot_defence_sweep({key: to_json(cell) for key, cell in f.sweep.cells.items()}, config.fractions, config.fills,
                       figures / SWEEP,
                       undefended_adv=f.attacks[config.defence_attack].defence.get("gradient:adv", math.nan),
                       clean_accuracy=f.clean_accuracy, attack_name=config.defence_attack)
    main = ad.main().measured().convergence
    eot_curves = {"main defence's control": main.control.accuracy,
                  **{f"baseline {t} {s:g}": b.convergence.accuracy for (t, s), b in ad.baselines.items()
                     if b.randomized}}
    plot_convergence(main.defended.accuracy, figures / CONVERGENCE, budget_steps=ad.budget.steps,
                     budget_restarts=ad.budget.restarts, eps=config.eps_linf, converged=main.defended.converged,
                     eot_curves=eot_curves, budget_eot=ad.budget.eot_iter)
    points = {row.label: {"clean": m.clean.value, "robust": m.adaptive_worst.value}
              for row in ad.settings.values() if (m := row.measures) is not None}
    baselines = {k: {"clean": b.clean.value, "robust": b.robust.value} for k, b in ad.baselines.items()
                 if not b.label}
    plot_tradeoff(points, baselines, figures / TRADEOFF, undefended_clean=ad.undefended.clean.value,
                  undefended_robust=ad.undefended.white_box.value)
