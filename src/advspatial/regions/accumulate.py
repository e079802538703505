"""Regions accumulated per class in bounded memory: P(pixel in region | class)."""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, ShapeError, check_range
from .checks import check_maps


class MapAccumulator:
    """Streaming per-class and dataset-mean maps: ``update(maps, labels)`` per batch, then ``means()``."""

    def __init__(self, num_classes: int, shape: tuple[int, ...]) -> None:
        check_range("num_classes", num_classes, 1)
        self.sums = torch.zeros(num_classes, *shape, dtype=torch.float64)
        self.counts = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, maps: torch.Tensor, labels: torch.Tensor) -> None:
        check_maps(maps)
        labels = torch.as_tensor(labels).cpu().long()
        if labels.shape != (maps.shape[0],) or tuple(maps.shape[1:]) != tuple(self.sums.shape[1:]):
            raise ShapeError(f"need maps (N,{self.sums.shape[1]},{self.sums.shape[2]}) and labels (N,), got "
                             f"{tuple(maps.shape)} and {tuple(labels.shape)}")
        k = self.sums.shape[0]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ConfigError(f"labels must lie in [0, {k - 1}]")
        self.sums.index_add_(0, labels, maps.detach().cpu().double())
        self.counts += torch.bincount(labels, minlength=k)

    def means(self) -> torch.Tensor:
        """(K,H,W) mean map per class (NaN for classes never seen)."""
        c = self.counts.double().view(-1, 1, 1)
        return torch.where(c > 0, self.sums / c.clamp_min(1), torch.full_like(self.sums, math.nan)).float()

    def dataset_mean(self) -> torch.Tensor:
        """(H,W) mean map over all images."""
        total = int(self.counts.sum())
        if total == 0:
            return torch.full(self.sums.shape[1:], math.nan)
        return (self.sums.sum(0) / total).float()


def class_mean_maps(maps: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """((K,H,W) per-class mean maps (NaN for empty classes), (K,) counts)."""
    check_maps(maps)
    acc = MapAccumulator(num_classes, tuple(maps.shape[1:]))
    acc.update(maps, labels)
    return acc.means(), acc.counts.clone()
