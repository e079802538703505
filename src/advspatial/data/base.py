"""The dataset container every loader returns.

Pixels are kept in their storage dtype (uint8 for IDX/CIFAR files, float32 for
generated data) and converted to float in [0,1] per batch, so memory does not
grow with the work done on the images. A loader whose images are too many to
hold in memory (an ImageNet folder) passes a *lazy pixel source* instead of a
tensor: an object that knows the shape and decodes only the images asked for
(see :class:`PixelSource`, implemented by ``imagefolder.LazyImages``).

Every sample carries a global id, its index in the dataset as loaded, so that
a subset's i-th image still knows which image it is (seeds are keyed by it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from ..errors import ConfigError, ShapeError
from ..runtime import batch_slices

Index = int | slice | Sequence[int] | torch.Tensor


@runtime_checkable
class PixelSource(Protocol):
    """Images that are decoded on demand, shaped like a (N,C,H,W) tensor.

    ``decode(index)`` returns the selected images as a tensor (tensor indexing
    rules: an int drops the first dimension); ``select(index)`` returns a new
    lazy source holding only the selected images, decoding nothing.
    """

    @property
    def shape(self) -> torch.Size: ...

    @property
    def ndim(self) -> int: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def decode(self, index: Index | None = None) -> torch.Tensor: ...

    def select(self, index: Index) -> PixelSource: ...


Pixels = torch.Tensor | PixelSource


@dataclass
class ImageDataset:
    """Images (N,C,H,W), int64 labels, class names, optional masks, and sample ids.

    Attributes:
        name: registry name of the dataset (``fashion-mnist``, ...).
        pixels: (N,C,H,W) uint8 in [0,255] or floating in [0,1], or a lazy
            :class:`PixelSource` of that shape; read images through :meth:`images`.
        labels: (N,) int64.
        class_names: one name per class; ``len(class_names)`` is the number of classes.
        masks: optional (N,H,W) bool foreground mask (True = object).
        concepts: optional named (N,H,W) bool masks (per shape / part), for dissection.
        ids: (N,) int64 global sample ids, the index in the dataset as loaded
            (``arange(N)`` when not given); :meth:`subset` and :meth:`head` carry them.
    """

    name: str
    pixels: Pixels
    labels: torch.Tensor
    class_names: tuple[str, ...]
    masks: torch.Tensor | None = None
    concepts: dict[str, torch.Tensor] = field(default_factory=dict)
    ids: torch.Tensor = None  # type: ignore[assignment]  # None -> arange(N) in __post_init__

    def __post_init__(self) -> None:
        if self.pixels.ndim != 4:
            raise ShapeError(f"dataset {self.name!r}: pixels must be (N,C,H,W), got {tuple(self.pixels.shape)}")
        n = int(self.pixels.shape[0])
        if self.labels.shape != (n,):
            raise ShapeError(f"dataset {self.name!r}: labels must be ({n},), got {tuple(self.labels.shape)}")
        self.labels = self.labels.to(torch.int64)
        self.ids = torch.arange(n, dtype=torch.int64) if self.ids is None else torch.as_tensor(self.ids)
        if self.ids.shape != (n,):
            raise ShapeError(f"dataset {self.name!r}: ids must be ({n},), got {tuple(self.ids.shape)}")
        self.ids = self.ids.to(torch.int64)
        spatial = (n, *self.pixels.shape[2:])
        if self.masks is not None and tuple(self.masks.shape) != spatial:
            raise ShapeError(f"dataset {self.name!r}: masks must be {spatial}, got {tuple(self.masks.shape)}")
        for key, mask in self.concepts.items():
            if tuple(mask.shape) != spatial:
                raise ShapeError(f"dataset {self.name!r}: concept {key!r} must be {spatial}, got {tuple(mask.shape)}")

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def lazy(self) -> bool:
        """True when the pixels are decoded on demand (a :class:`PixelSource`, not a tensor)."""
        return not isinstance(self.pixels, torch.Tensor)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.pixels.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def images(self, index: Index | None = None) -> torch.Tensor:
        """Float32 images in [0,1] for ``index`` (all images when None); a lazy source decodes only these."""
        idx = None if index is None else _as_index(index)
        if isinstance(self.pixels, torch.Tensor):
            raw = self.pixels if idx is None else self.pixels[idx]
        else:
            raw = self.pixels.decode(idx)
        if raw.dtype == torch.uint8:
            return raw.to(torch.float32).div_(255.0)  # in place on the new float copy: one float copy at peak
        return raw.to(torch.float32)

    def checksum(self) -> str:
        """SHA-256 of the images' content, labels and global ids: ties a run to its pixels, so a run resumed on
        replaced images is refused. A lazy source that has a ``checksum()`` of its own (image files: their bytes)
        is asked; other pixels are hashed as stored (a lazy one decoded batch by batch)."""
        digest = hashlib.sha256(f"{self.name};{tuple(self.pixels.shape)};".encode())
        digest.update(_tensor_bytes(self.labels))
        digest.update(_tensor_bytes(self.ids))
        if isinstance(self.pixels, torch.Tensor):
            digest.update(f"{self.pixels.dtype};".encode())
            digest.update(_tensor_bytes(self.pixels))
        elif callable(own_checksum := getattr(self.pixels, "checksum", None)):
            digest.update(str(own_checksum()).encode())
        else:
            for sl in batch_slices(len(self), 256):
                digest.update(_tensor_bytes(self.pixels.decode(sl)))
        return digest.hexdigest()

    def subset(self, index: Index) -> ImageDataset:
        """A new dataset holding only the selected images (views where possible; lazy stays lazy)."""
        idx = _as_index(index)
        pixels = self.pixels[idx] if isinstance(self.pixels, torch.Tensor) else self.pixels.select(idx)
        return ImageDataset(
            name=self.name,
            pixels=pixels,
            labels=self.labels[idx],
            class_names=self.class_names,
            masks=None if self.masks is None else self.masks[idx],
            concepts={k: v[idx] for k, v in self.concepts.items()},
            ids=self.ids[idx],
        )

    def head(self, n: int | None) -> ImageDataset:
        """The first ``n`` images (all when ``n`` is None or larger than the dataset)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ConfigError(f"n={n} is out of range; valid: 1..{len(self)}")
        return self.subset(slice(0, n))

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, slice]]:
        """Yield ``(x, y, slice)`` in order; x is float in [0,1], decoded per batch. Deterministic."""
        for sl in batch_slices(len(self), batch_size):
            yield self.images(sl), self.labels[sl], sl


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """The bytes of a tensor's values, whatever its dtype and layout (on the CPU, contiguous)."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def _as_index(index: Index) -> int | slice | torch.Tensor:
    if isinstance(index, (int, slice, torch.Tensor)):
        return index
    return torch.as_tensor(list(index), dtype=torch.long)
