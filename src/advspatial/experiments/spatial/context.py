"""The spatial experiment's context: the RoI explainer this run resolved, its scale, the explainer panel, and
the clean-image stages every other stage reads (predictions, importance maps, the panel's maps)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ...data import ImageDataset
from ...distributed import on_every_rank
from ...maps import attack_map, feature_map_size, importance_map
from ...regions.binarization import pool_to_scale
from ...rundir import RunDir
from ..context import ExperimentContext, prepare_context
from ..gate import resolve_importance
from .config import MeasurementConfig


@dataclass
class Context(ExperimentContext):
    """The shared context plus the RoI method this run resolved (``auto`` picks by head type) and why."""

    importance: str = ""
    importance_reason: str = ""
    scale: tuple[int, int] | None = None
    panel: list[str] = field(default_factory=list)
    panel_duplicates: dict[str, str] = field(default_factory=dict)

    def at_scale(self, maps: torch.Tensor) -> torch.Tensor:
        """Maps at the resolution the statistics use: the input's, or the CAM layer's (``common_scale``)."""
        return maps if self.scale is None else pool_to_scale(maps, self.scale)

    def at_input(self, regions: torch.Tensor) -> torch.Tensor:
        """Regions brought back to the input's resolution (nearest neighbour), for figures."""
        if self.scale is None:
            return regions
        size = tuple(self.data.image_shape[1:])
        return nn.functional.interpolate(regions[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5


def spatial_context(config: MeasurementConfig, rundir: RunDir, images: ImageDataset | None = None) -> Context:
    """The shared context with the RoI method resolved (``auto``: by the model's head type); ``images``: the
    test images when they are not ``config.dataset``'s (see :func:`~advspatial.experiments.context.prepare_context`)."""
    base = prepare_context(config, rundir, images)
    probe, _, _ = base.batch(slice(0, 1))
    method, reason = resolve_importance(config.importance, base.model, probe)
    scale = feature_map_size(base.model, probe) if config.common_scale else None
    ctx = base.derive(Context, importance=method, importance_reason=reason, scale=scale)
    # each rank probes the explainers on the first batch itself: one rank's failure must stop every rank (T4)
    ctx.panel, ctx.panel_duplicates = on_every_rank(lambda: distinct_explainers(ctx, [method, *config.panel]))
    return ctx


def distinct_explainers(ctx: Context, methods: list[str]) -> tuple[list[str], dict[str, str]]:
    """``methods`` without repeats and without explainers whose maps equal an earlier one's up to scale.

    Checked on the first batch (e.g. HiResCAM equals Grad-CAM / (h*w) on a GAP +
    linear head): a duplicate would cost a gate and add a copy of a test to a
    correction family. Returns (kept, {dropped: the explainer it duplicates}).
    """
    kept: list[str] = []
    duplicates: dict[str, str] = {}
    for method in dict.fromkeys(methods):
        normalized = max_normalized(panel_batch(ctx, method, 0))
        twin = next((k for k in kept if torch.allclose(normalized, max_normalized(panel_batch(ctx, k, 0)),
                                                       atol=1e-4, rtol=1e-4)), None)
        if twin is None:
            kept.append(method)
        else:
            duplicates[method] = twin
    return kept, duplicates


def max_normalized(maps: torch.Tensor) -> torch.Tensor:
    """Each (H,W) map divided by its maximum (all-zero maps stay zero)."""
    peak = maps.flatten(1).amax(1).clamp_min(1e-12)
    return maps / peak[:, None, None]


def panel_methods(ctx: Context) -> list[str]:
    """The explainers of the sensitivity panel, the RoI's own first, duplicates left out."""
    return ctx.panel


def importance_fn(ctx: Context) -> Callable[[torch.Tensor], torch.Tensor]:
    """The deployable RoI map: importance of the input's predicted class."""
    return lambda z: importance_map(ctx.importance, ctx.model, z, target="pred", batch_size=len(z) or 1)


def gradient_fn(ctx: Context) -> Callable[[torch.Tensor], torch.Tensor]:
    """The deployable RoA map: the input gradient (needs no clean image)."""
    return lambda z: attack_map("gradient", ctx.model, z).map


def roi_batch(ctx: Context, b: int) -> dict[str, torch.Tensor]:
    """Clean prediction and importance map of batch b (cached)."""

    def compute() -> dict[str, torch.Tensor]:
        x, y, ids = ctx.batch(ctx.slices[b])
        with torch.no_grad():
            pred = ctx.model(x).argmax(1)
        imp = importance_map(ctx.importance, ctx.model, x, target="pred", batch_size=len(x), sample_ids=ids)
        return {"pred": pred.cpu(), "importance": imp.cpu()}

    return ctx.rundir.cached(f"roi/batch-{b:05d}", compute)


def panel_batch(ctx: Context, method: str, b: int) -> torch.Tensor:
    """Importance map of another explainer (sensitivity panel) for batch b, predicted class (cached)."""
    if method == ctx.importance:
        return roi_batch(ctx, b)["importance"]

    def compute() -> torch.Tensor:
        x, _, ids = ctx.batch(ctx.slices[b])
        return importance_map(method, ctx.model, x, target="pred", batch_size=len(x), sample_ids=ids).cpu()

    return ctx.rundir.cached(f"panel/{method}/batch-{b:05d}", compute)

