"""Masks that restrict where an attack may act (localized attacks, METHODS §4).

``--mask`` of every attack command accepts:

- ``background``: exact complement of the object mask where the dataset has one
  (``synthetic-shapes``); for grey MNIST-like data, the pixels with ``x <= tau``
  (choice tau = 0.05); otherwise the complement of the Grad-CAM top-``fraction``
  region of the true class;
- ``foreground``: the complement of ``background``;
- ``roi``: the Grad-CAM top-``fraction`` region of the true class;
- ``roi-complement``: everything but that region;
- a file path (``.pt`` or ``.npy``) of (N,H,W) masks aligned with the dataset
  (row i belongs to image i; values in [0,1]).

Masks are returned as (N,1,H,W) float in {0,1} (or the file's fractions),
broadcastable over channels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import ImageDataset
from .data.mnist import BACKGROUND_THRESHOLD as BACKGROUND_TAU  # one tau for data and masks
from .errors import ConfigError, DataError, ShapeError, first_line

MASK_KINDS = ("background", "foreground", "roi", "roi-complement")


def threshold_background(x: torch.Tensor, tau: float = BACKGROUND_TAU) -> torch.Tensor:
    """(N,H,W) bool: pixels whose every channel is <= tau (dark background of MNIST-like data)."""
    return (x <= tau).all(dim=1)


def roi_region(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """(N,H,W) bool: top ``fraction`` of Grad-CAM for the true class."""
    from .maps import importance_map
    from .regions import binarize

    cam = importance_map("gradcam", model, x, target="true", y=y)
    return binarize(cam, fraction=fraction, seed=seed).mask


def check_mask_spec(spec: str | None) -> None:
    """A :class:`ConfigError` before any work when ``spec`` is neither a mask kind nor an existing file."""
    if spec in (None, "", "none") or spec in MASK_KINDS:
        return
    if not Path(spec).is_file():
        raise ConfigError(f"mask {spec!r} is neither a file nor one of {', '.join(MASK_KINDS)}")


def load_mask_file(path: str | Path, n_total: int, spatial: tuple[int, ...]) -> torch.Tensor:
    """(N,H,W) float masks from a .pt or .npy file, validated against the dataset."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"mask {str(path)!r} is neither a file nor one of {', '.join(MASK_KINDS)}")
    try:
        if path.suffix == ".npy":
            data = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"cannot read masks from {path}: {first_line(exc)}") from exc
    if not isinstance(data, torch.Tensor):
        raise DataError(f"{path} must hold one tensor of shape (N,H,W)")
    data = data.float()
    if data.ndim == 4 and data.shape[1] == 1:
        data = data[:, 0]
    if data.ndim != 3 or tuple(data.shape[1:]) != spatial or data.shape[0] < n_total:
        raise ShapeError(f"masks in {path} have shape {tuple(data.shape)}; need ({n_total} or more, {spatial[0]}, "
                         f"{spatial[1]})")
    if not bool(torch.isfinite(data).all()):
        raise DataError(f"masks in {path} contain NaN or infinite values; valid: numbers in [0, 1]")
    if float(data.min()) < 0 or float(data.max()) > 1:
        raise DataError(f"masks in {path} must lie in [0, 1]")
    return data


def attack_mask(
    spec: str | None,
    data: ImageDataset,
    index: slice | torch.Tensor,
    model: nn.Module | None = None,
    fraction: float = 0.2,
    tau: float = BACKGROUND_TAU,
    seed: int = 0,
) -> torch.Tensor | None:
    """The (N,1,H,W) float mask ``spec`` for the images ``data[index]`` (None for no mask)."""
    if spec is None or spec in ("", "none"):
        return None
    x = data.images(index)
    y = data.labels[index]
    if spec in ("background", "foreground"):
        exact = data.masks is not None and data.name not in ("mnist", "fashion-mnist")
        if data.masks is not None and (exact or tau == BACKGROUND_TAU):
            # exact masks (synthetic-shapes), or the loaders' own x > tau masks at the default tau
            background = ~data.masks[index]
        elif x.shape[1] == 1:
            background = threshold_background(x, tau)
        else:
            background = ~roi_region(_need(model, spec), x, y, fraction, seed)
        region = background if spec == "background" else ~background
    elif spec in ("roi", "roi-complement"):
        roi = roi_region(_need(model, spec), x, y, fraction, seed)
        region = roi if spec == "roi" else ~roi
    else:
        masks = load_mask_file(spec, len(data), tuple(x.shape[2:]))
        return masks[index].unsqueeze(1)
    return region.unsqueeze(1).float()


def _need(model: nn.Module | None, spec: str) -> nn.Module:
    if model is None:
        raise ConfigError(f"mask {spec!r} needs a model (Grad-CAM)")
    return model
