"""The run of experiment ``propagation``: the stages of every k, the findings from the rows, the claims, the figures
(the runner renders the report from the findings)."""

from __future__ import annotations

from typing import Any

from ...rundir import RunDir
from ..context import prepare_context
from ..registry import register_experiment
from ..results import RunFindings
from .claims import build_claims
from .config import PropagationConfig
from .cost import ATTACK_STEPS, search_seconds_of
from .figures import draw_figures
from .findings import PropagationFindings, build_findings
from .report import render
from .stages import Context, add_reach_column, process_k, random_reach_stage, resolve_layers


@register_experiment("propagation", PropagationConfig,
                     "one-pixel (k-pixel) attacks: propagation maps through the layers and the locality test",
                     findings=PropagationFindings, render=render,
                     contract={"n": 8, "batch_size": 4, "figure_images": 2},
                     steps_by=ATTACK_STEPS, priced_apart=search_seconds_of)
def run_propagation(config: PropagationConfig, rundir: RunDir) -> RunFindings:
    base = prepare_context(config, rundir)
    ctx = base.derive(Context, layers=resolve_layers(base.model, config.layers))
    rows: list[dict[str, Any]] = []
    reach = random_reach_stage(ctx)
    summaries = [process_k(ctx, k, rows) for k in config.pixels_list]
    with rundir.passes.phase("statistics"):
        add_reach_column(rows, reach.peak)
        claims = build_claims(config, reach, summaries, rows)
        findings = build_findings(config, len(ctx.data), rows, reach, summaries, claims)
    with rundir.passes.phase("figures"):
        draw_figures(ctx, summaries, findings)
    return RunFindings(findings, rows)
