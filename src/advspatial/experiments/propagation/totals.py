"""Propagation maps reduced batch by batch: what one batch of successful attacks contributes
(:func:`propagation_stats`, a cached stage's value) and the running per-layer totals over the batches
(:class:`PropagationTotals`), so memory does not grow with the number of images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...analysis.propagation import (
    DepthRow, MeanPropagation, average_propagation, depth_summary, per_image_layer_stats, propagation_maps,
)
from ...errors import ConfigError


def propagation_stats(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, layers: Sequence[str], threshold: float,
    batch_size: int = 64,
) -> dict[str, Any]:
    """What one batch of successful attacks contributes to the per-layer averages.

    Returns plain tensors/lists (cacheable): ``layers`` (forward order),
    ``count`` (images), per layer the summed PMmax / PMavg maps (``sum_max``,
    ``sum_avg``: lists of (h,w)), and ``max_max``, ``max_avg``, ``spread`` (L,)
    from :func:`depth_summary`; ``peak_last`` (count,) is each image's largest
    PMmax at the last layer; ``image`` holds the (count, L) per-image statistics
    of :func:`~advspatial.analysis.propagation.per_image_layer_stats` (the
    paired comparison with the control). With no image, ``count`` is 0 and the lists empty.
    """
    pms = propagation_maps(model, x, x_adv, list(layers), batch_size=batch_size)
    count = int(x.shape[0])
    if count == 0 or not pms:
        return {"layers": [], "count": 0, "sum_max": [], "sum_avg": [], "max_max": torch.zeros(0),
                "max_avg": torch.zeros(0), "spread": torch.zeros(0), "peak_last": torch.zeros(0),
                "image": per_image_layer_stats({}, threshold)}
    means = average_propagation(pms)
    rows = depth_summary(pms, threshold)
    last = pms[list(pms)[-1]].pm_max
    return {
        "layers": list(pms),
        "count": count,
        "sum_max": [m.pm_max * count for m in means.values()],
        "sum_avg": [m.pm_avg * count for m in means.values()],
        "max_max": torch.tensor([r.max_pm_max for r in rows], dtype=torch.float64),
        "max_avg": torch.tensor([r.max_pm_avg for r in rows], dtype=torch.float64),
        "spread": torch.tensor([r.spread for r in rows], dtype=torch.float64),
        "peak_last": last.flatten(1).amax(dim=1),
        "image": per_image_layer_stats(pms, threshold),
    }


@dataclass
class PropagationTotals:
    """Per-layer running totals of propagation maps over batches (memory independent of n).

    :meth:`add` takes :func:`propagation_stats` dicts; :meth:`mean_maps` and
    :meth:`depth_rows` give exactly what :func:`average_propagation` and
    :func:`depth_summary` give on all images at once (up to float rounding).
    """

    layers: list[str] = field(default_factory=list)
    count: int = 0
    sum_max: list[torch.Tensor] = field(default_factory=list)
    sum_avg: list[torch.Tensor] = field(default_factory=list)
    max_max: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    max_avg: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    reached: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))

    def add(self, stats: Mapping[str, Any]) -> None:
        if stats["count"] == 0:
            return
        if self.count == 0:
            self.layers = list(stats["layers"])
            self.sum_max = [m.double().clone() for m in stats["sum_max"]]
            self.sum_avg = [m.double().clone() for m in stats["sum_avg"]]
            self.max_max, self.max_avg = stats["max_max"].clone(), stats["max_avg"].clone()
            self.reached = stats["spread"] * stats["count"]
        else:
            if list(stats["layers"]) != self.layers:
                raise ConfigError("batches recorded different layers; resume with the run's own model and config")
            self.sum_max = [a + b.double() for a, b in zip(self.sum_max, stats["sum_max"], strict=True)]
            self.sum_avg = [a + b.double() for a, b in zip(self.sum_avg, stats["sum_avg"], strict=True)]
            self.max_max = torch.maximum(self.max_max, stats["max_max"])
            self.max_avg = torch.maximum(self.max_avg, stats["max_avg"])
            self.reached = self.reached + stats["spread"] * stats["count"]
        self.count += int(stats["count"])

    def mean_maps(self) -> dict[str, MeanPropagation]:
        """Average PMmax and PMavg map per layer over every image added."""
        return {name: MeanPropagation((s_max / self.count).float(), (s_avg / self.count).float(), self.count)
                for name, s_max, s_avg in zip(self.layers, self.sum_max, self.sum_avg, strict=True)}

    def depth_rows(self) -> list[DepthRow]:
        """One :class:`DepthRow` per layer, as :func:`depth_summary` gives on all images together."""
        rows = []
        for depth, name in enumerate(self.layers):
            s_max, s_avg = self.sum_max[depth], self.sum_avg[depth]
            rows.append(DepthRow(depth, name, int(s_max.shape[0]), int(s_max.shape[1]),
                                 float(s_max.mean() / self.count), float(self.max_max[depth]),
                                 float(s_avg.mean() / self.count), float(self.max_avg[depth]),
                                 float(self.reached[depth] / self.count)))
        return rows
