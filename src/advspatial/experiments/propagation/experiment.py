"""The run of experiment ``propagation``: the stages of every k, the metrics from the rows, the claims, the report."""

from __future__ import annotations

from typing import Any

from ...rundir import RunDir
from ..context import prepare_context
from ..registry import register_experiment
from ..results import ExperimentResult
from .claims import build_claims
from .config import PropagationConfig
from .metrics import build_metrics
from .report import build_sections, summary_table
from .rows import add_reach_column
from .stages import Context, process_k, random_reach_stage, resolve_layers


@register_experiment("propagation", PropagationConfig,
                     "one-pixel (k-pixel) attacks: propagation maps through the layers and the locality test",
                     contract={"n": 8, "batch_size": 4, "figure_images": 2})
def run_propagation(config: PropagationConfig, rundir: RunDir) -> ExperimentResult:
    base = prepare_context(config, rundir)
    ctx = base.derive(Context, layers=resolve_layers(base.model, config.layers))
    rows: list[dict[str, Any]] = []
    reach = random_reach_stage(ctx)
    summaries = [process_k(ctx, k, rows) for k in config.pixels_list]
    add_reach_column(rows, reach.peak)
    metrics = build_metrics(config, len(ctx.data), rows, reach, summaries)
    claims = build_claims(config, reach, summaries, rows)
    metrics["claims"] = [c.as_dict() for c in claims]
    sections = build_sections(ctx, summaries, metrics, claims)
    return ExperimentResult(metrics, rows, summary_table(metrics), sections)
