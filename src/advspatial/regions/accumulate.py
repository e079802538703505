"""Regions accumulated per class in bounded memory: P(pixel in region | class)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ConfigError, ShapeError, check_range
from .checks import check_maps


class MapAccumulator:
    """Streaming per-class and dataset-mean maps: ``update(maps, labels)`` per batch, then ``means()``.

    The float64 sums are kept only for the classes seen: a dense (K,H,W) table
    would hold 400 MB for a 1000-class model at 224x224, per accumulator and per
    batch part. Each class's sum adds its maps in image order, so the means do
    not depend on how the images were split into updates of one accumulator.
    """

    def __init__(self, num_classes: int, shape: tuple[int, ...]) -> None:
        check_range("num_classes", num_classes, 1)
        self.num_classes = int(num_classes)
        self.shape = tuple(int(s) for s in shape)
        self.class_sums: dict[int, torch.Tensor] = {}
        self.counts = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, maps: torch.Tensor, labels: torch.Tensor) -> None:
        check_maps(maps)
        labels = torch.as_tensor(labels).cpu().long()
        if labels.shape != (maps.shape[0],) or tuple(maps.shape[1:]) != self.shape:
            raise ShapeError(f"need maps (N,{self.shape[0]},{self.shape[1]}) and labels (N,), got "
                             f"{tuple(maps.shape)} and {tuple(labels.shape)}")
        k = self.num_classes
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ConfigError(f"labels must lie in [0, {k - 1}]")
        classes, rows = torch.unique(labels, return_inverse=True)
        running = torch.stack([self._sum_of(c) for c in classes.tolist()]) if classes.numel() else None
        if running is not None:
            running.index_add_(0, rows, maps.detach().cpu().double())
            self.class_sums.update({c: running[j] for j, c in enumerate(classes.tolist())})
        self.counts += torch.bincount(labels, minlength=k)

    def merge(self, other: MapAccumulator) -> None:
        """Add another accumulator's sums and counts (e.g. a batch's, computed apart) to this one's."""
        if (other.num_classes, other.shape) != (self.num_classes, self.shape):
            raise ShapeError(f"cannot merge maps of {other.num_classes} classes x {other.shape} into "
                             f"{self.num_classes} x {self.shape}")
        for c, part in other.class_sums.items():
            self.class_sums[c] = self._sum_of(c) + part
        self.counts += other.counts

    def means(self) -> torch.Tensor:
        """(K,H,W) mean map per class (NaN for classes never seen)."""
        out = torch.full((self.num_classes, *self.shape), math.nan)
        for c, total in self.class_sums.items():
            out[c] = (total / self.counts[c].double()).float()
        return out

    def dataset_mean(self) -> torch.Tensor:
        """(H,W) mean map over all images."""
        total = int(self.counts.sum())
        if total == 0:
            return torch.full(self.shape, math.nan)
        return (torch.stack([self.class_sums[c] for c in sorted(self.class_sums)]).sum(0) / total).float()

    def as_dict(self) -> dict[str, Any]:
        """What a stage file holds: the seen classes' sums stacked in class order, and the counts."""
        classes = sorted(self.class_sums)
        sums = (torch.stack([self.class_sums[c] for c in classes]) if classes
                else torch.zeros(0, *self.shape, dtype=torch.float64))
        return {"num_classes": self.num_classes, "shape": list(self.shape), "classes": torch.tensor(classes),
                "sums": sums, "counts": self.counts}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> MapAccumulator:
        """The accumulator :meth:`as_dict` saved."""
        acc = cls(int(saved["num_classes"]), tuple(saved["shape"]))
        acc.class_sums = {int(c): saved["sums"][j] for j, c in enumerate(saved["classes"].tolist())}
        acc.counts = saved["counts"].clone()
        return acc

    def _sum_of(self, c: int) -> torch.Tensor:
        return self.class_sums[c] if c in self.class_sums else torch.zeros(self.shape, dtype=torch.float64)


def class_mean_maps(maps: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """((K,H,W) per-class mean maps (NaN for empty classes), (K,) counts)."""
    check_maps(maps)
    acc = MapAccumulator(num_classes, tuple(maps.shape[1:]))
    acc.update(maps, labels)
    return acc.means(), acc.counts.clone()
