"""The dataset container every loader returns.

Pixels are kept in their storage dtype (uint8 for IDX/CIFAR files, float32 for
generated data) and converted to float in [0,1] per batch, so memory does not
grow with the work done on the images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError, ShapeError
from ..runtime import batch_slices

Index = int | slice | Sequence[int] | torch.Tensor


@dataclass
class ImageDataset:
    """Images (N,C,H,W), int64 labels, class names, and optional masks.

    Attributes:
        name: registry name of the dataset (``fashion-mnist``, ...).
        pixels: (N,C,H,W) uint8 in [0,255] or floating in [0,1].
        labels: (N,) int64.
        class_names: one name per class; ``len(class_names)`` is the number of classes.
        masks: optional (N,H,W) bool foreground mask (True = object).
        concepts: optional named (N,H,W) bool masks (per shape / part), for dissection.
    """

    name: str
    pixels: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    masks: torch.Tensor | None = None
    concepts: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pixels.ndim != 4:
            raise ShapeError(f"dataset {self.name!r}: pixels must be (N,C,H,W), got {tuple(self.pixels.shape)}")
        n = self.pixels.shape[0]
        if self.labels.shape != (n,):
            raise ShapeError(f"dataset {self.name!r}: labels must be ({n},), got {tuple(self.labels.shape)}")
        self.labels = self.labels.to(torch.int64)
        spatial = (n, *self.pixels.shape[2:])
        if self.masks is not None and tuple(self.masks.shape) != spatial:
            raise ShapeError(f"dataset {self.name!r}: masks must be {spatial}, got {tuple(self.masks.shape)}")
        for key, mask in self.concepts.items():
            if tuple(mask.shape) != spatial:
                raise ShapeError(f"dataset {self.name!r}: concept {key!r} must be {spatial}, got {tuple(mask.shape)}")

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.pixels.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def images(self, index: Index | None = None) -> torch.Tensor:
        """Float32 images in [0,1] for ``index`` (all images when None)."""
        raw = self.pixels if index is None else self.pixels[_as_index(index)]
        if raw.dtype == torch.uint8:
            return raw.to(torch.float32) / 255.0
        return raw.to(torch.float32)

    def subset(self, index: Index) -> "ImageDataset":
        """A new dataset holding only the selected images (views where possible)."""
        idx = _as_index(index)
        return ImageDataset(
            name=self.name,
            pixels=self.pixels[idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            masks=None if self.masks is None else self.masks[idx],
            concepts={k: v[idx] for k, v in self.concepts.items()},
        )

    def head(self, n: int | None) -> "ImageDataset":
        """The first ``n`` images (all when ``n`` is None or larger than the dataset)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ConfigError(f"n={n} is out of range; valid: 1..{len(self)}")
        return self.subset(slice(0, n))

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, slice]]:
        """Yield ``(x, y, slice)`` in order; x is float in [0,1]. Deterministic."""
        for sl in batch_slices(len(self), batch_size):
            yield self.images(sl), self.labels[sl], sl


def _as_index(index: Index) -> int | slice | torch.Tensor:
    if isinstance(index, (int, slice, torch.Tensor)):
        return index
    return torch.as_tensor(list(index), dtype=torch.long)
