"""Input checks shared by the region modules: maps (N,H,W) finite floats, regions (N,H,W) bool."""

from __future__ import annotations

import torch

from ..errors import ConfigError, ShapeError
from ..host_syncs import require


def check_maps(maps: torch.Tensor, name: str = "maps") -> None:
    check_map_shape(maps, name)
    if maps.numel():  # one read, or held to the stage's end on a device
        require(f"{name} finite", (~torch.isfinite(maps)).any(), 1,
                lambda _bad, _n: ConfigError(f"{name} contain NaN or infinite values"))


def check_map_shape(maps: torch.Tensor, name: str = "maps") -> None:
    """(N,H,W) floating point; the values are not read (:func:`check_maps` also checks they are finite)."""
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
        raise ShapeError(f"{name} must be an (N,H,W) tensor, got {getattr(maps, 'shape', type(maps))}")
    if not maps.is_floating_point():
        raise ShapeError(f"{name} must be floating point, got dtype {maps.dtype}")


def check_same_shape(shape: torch.Size, **tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or t.shape != shape:
            raise ShapeError(f"{name} must have shape {tuple(shape)}, got {tuple(getattr(t, 'shape', ()))}")


def check_mask(mask: torch.Tensor, name: str) -> None:
    if not isinstance(mask, torch.Tensor) or mask.ndim != 3 or mask.dtype != torch.bool:
        raise ShapeError(f"{name} must be an (N,H,W) bool tensor, got {getattr(mask, 'shape', type(mask))} "
                         f"{getattr(mask, 'dtype', '')}")


def check_region(region: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Validate an (N,H,W) bool region for images x (N,C,H,W); return it on x's device."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ShapeError(f"images must be a (N,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")
    region = torch.as_tensor(region, device=x.device)
    expected = (x.shape[0], *x.shape[2:])
    if tuple(region.shape) != expected:
        raise ShapeError(f"region must have shape {expected} (N,H,W) for images {tuple(x.shape)}, "
                         f"got {tuple(region.shape)}")
    if region.dtype != torch.bool:
        raise ShapeError(f"region must be a bool tensor, got dtype {region.dtype}")
    return region
