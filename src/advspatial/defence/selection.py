"""Region selection of the neutralization defence (METHODS.md §2): RoI, RoA and ``N = RoA \\ RoI`` from two maps.

RoI = top ``roi_fraction`` of the importance map, RoA = top ``fraction`` of the
vulnerability map (:func:`top_fraction`, ties broken at random per image). The
maps' values are read back to the host once per selection (their NaN and
finiteness checks together with which images break ties at the cut), so a
defended model's forward pass waits on the device once for both regions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError, ShapeError, check_range
from ..host_syncs import on_device_path, require
from ..regions.binarization import TopFraction
from ..runtime import sample_ids_or_range, stream_seed

#: ``binarize(maps, fraction) -> (N,H,W) bool`` region of the top ``fraction`` of each map.
BinarizeFn = Callable[[torch.Tensor, float], torch.Tensor]

# Salts that keep the random streams of tie-breaking and of the random control apart
# even when the caller passes both the same seed.
_TIE_STREAM = 0x7E5


def valid_maps(maps: torch.Tensor, name: str = "maps") -> torch.Tensor:
    """Validate (N,H,W) float maps without NaN; return them detached."""
    maps = as_maps(maps, name)
    if bool(torch.isnan(maps).any()):
        raise ConfigError(f"{name} contain NaN; valid: finite values >= 0")
    return maps


def as_maps(maps: torch.Tensor, name: str) -> torch.Tensor:
    """:func:`valid_maps` without reading the values (the caller reads them with others, at once)."""
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
        raise ShapeError(f"{name} must be an (N,H,W) tensor, got {getattr(maps, 'shape', type(maps))}")
    maps = maps.detach()
    return maps if maps.is_floating_point() else maps.float()


def top_fraction(
    maps: torch.Tensor, fraction: float, *, seed: int = 0, sample_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """(N,H,W) bool: the top ``fraction`` of each map's pixels, strictly positive ones only.

    ``k = floor(fraction*H*W + 0.5)`` pixels per image (fewer when fewer are positive; none when k is 0).
    The selection is :func:`~advspatial.regions.top_fraction_mask`'s: ties at the cut are broken at random
    per image from ``(seed, sample_ids[i])`` (default ids ``0..N-1``), never by pixel position; the tie
    stream is salted so that it stays apart from the random control's even under the same seed.
    """
    maps = as_maps(maps, "maps")
    check_range("fraction", fraction, 0.0, 1.0)
    return _top_fractions([(maps, "maps", fraction, seed)], sample_ids)[0]


def _top_fractions(parts: Sequence[tuple[torch.Tensor, str, float, int]],
                   sample_ids: torch.Tensor | None) -> list[torch.Tensor]:
    """:func:`top_fraction` of each ``(maps, name, fraction, seed)``, the maps' values read back once for all: no
    NaN (:func:`valid_maps`), finite where a region is drawn, and which images break ties at the cut."""
    plans = [None if int(math.floor(fraction * m.shape[1] * m.shape[2] + 0.5)) == 0 else TopFraction(m, fraction)
             for m, _, fraction, _ in parts]
    ids = sample_ids_or_range(parts[0][0].shape[0], sample_ids) if any(plans) else None
    # a device's path reads nothing: its checks wait for the stage's end and every image breaks its ties (the same
    # regions: an image without more pixels at the cut than slots keeps them all either way)
    musts = _held_checks(parts, plans) if on_device_path(parts[0][0]) else _read_checks_and_ties(parts, plans)
    return [torch.zeros_like(m, dtype=torch.bool) if plan is None else
            plan.finish(must, stream_seed(seed, _TIE_STREAM), ids).mask
            for (m, _, _, seed), plan, must in zip(parts, plans, musts, strict=True)]


def _read_checks_and_ties(parts: Sequence[tuple[torch.Tensor, str, float, int]],
                          plans: Sequence[TopFraction | None]) -> list[list[bool] | None]:
    """The maps' checks and which images must break ties at the cut, in one read: per part its ``must_choose``."""
    flags = [torch.isnan(m).any().view(1) for m, *_ in parts]
    flags += [torch.isfinite(m).all().view(1) for (m, *_), plan in zip(parts, plans, strict=True) if plan]
    flags += [plan.must_choose for plan in plans if plan]
    values = torch.cat(flags).tolist()  # the one read of the values
    for nan, (_, name, _, _) in zip(values[:len(parts)], parts, strict=True):
        if nan:
            raise _nan_error(name)
    finite = iter(values[len(parts):])
    for (m, *_), plan in zip(parts, plans, strict=True):
        if plan and not next(finite) and m.numel():
            raise _infinite_error()
    ties = values[len(parts) + sum(1 for plan in plans if plan):]
    musts: list[list[bool] | None] = []
    for (m, *_), plan in zip(parts, plans, strict=True):
        if plan is None:
            musts.append(None)
            continue
        musts.append(ties[:m.shape[0]])
        ties = ties[m.shape[0]:]
    return musts


def _held_checks(parts: Sequence[tuple[torch.Tensor, str, float, int]],
                 plans: Sequence[TopFraction | None]) -> list[list[bool] | None]:
    """The maps' checks held to the stage's end (:func:`~advspatial.host_syncs.require`); every image breaks its
    ties (None for every part)."""
    for m, name, _, _ in parts:
        require(f"{name} without NaN", torch.isnan(m).any(), 1, functools.partial(_nan_error, name))
    for (m, *_), plan in zip(parts, plans, strict=True):
        if plan and m.numel():
            require("maps finite", (~torch.isfinite(m)).any(), 1, _infinite_error)
    return [None] * len(parts)


def _nan_error(name: str, *_counts: int) -> ConfigError:
    """The one-line error of maps with NaN (the counts a held check passes change nothing)."""
    return ConfigError(f"{name} contain NaN; valid: finite values >= 0")


def _infinite_error(*_counts: int) -> ConfigError:
    return ConfigError("maps contain NaN or infinite values")


@dataclass
class RegionSelection:
    """The regions of one batch: ``roi``, ``roa`` and ``neutralized = roa & ~roi``, each (N,H,W) bool."""

    roi: torch.Tensor
    roa: torch.Tensor
    neutralized: torch.Tensor


def select_regions(
    importance: torch.Tensor,
    vulnerability: torch.Tensor,
    fraction: float = 0.2,
    *,
    roi_fraction: float | None = None,
    seed: int = 0,
    binarize: BinarizeFn | None = None,
    sample_ids: torch.Tensor | None = None,
) -> RegionSelection:
    """RoI, RoA and ``N = RoA \\ RoI`` from an importance and a vulnerability map.

    RoI is the top ``roi_fraction`` (default: ``fraction``) of ``importance``,
    RoA the top ``fraction`` of ``vulnerability``. ``binarize(maps, fraction)``
    replaces the built-in :func:`top_fraction` (seeded by ``seed``) when given.
    """
    importance = as_maps(importance, "importance maps")
    vulnerability = as_maps(vulnerability, "vulnerability maps")
    if importance.shape != vulnerability.shape:
        raise ShapeError(f"importance maps {tuple(importance.shape)} and vulnerability maps "
                         f"{tuple(vulnerability.shape)} must have the same (N,H,W) shape")
    roi_fraction = fraction if roi_fraction is None else roi_fraction
    check_range("fraction", fraction, 0.0, 1.0)
    check_range("roi_fraction", roi_fraction, 0.0, 1.0)
    if binarize is None:
        roi, roa = _top_fractions([(importance, "importance maps", roi_fraction, seed),
                                   (vulnerability, "vulnerability maps", fraction, seed + 1)], sample_ids)
    else:
        if bool(torch.stack([torch.isnan(importance).any(), torch.isnan(vulnerability).any()]).any()):
            valid_maps(importance, "importance maps"), valid_maps(vulnerability, "vulnerability maps")
        roi = binarize(importance, roi_fraction).to(torch.bool)
        roa = binarize(vulnerability, fraction).to(torch.bool)
    return RegionSelection(roi, roa, roa & ~roi)


def neutralization_region(importance: torch.Tensor, vulnerability: torch.Tensor, fraction: float = 0.2,
                          **options: Any) -> torch.Tensor:
    """The neutralized region ``N = RoA \\ RoI`` (N,H,W) bool: :func:`select_regions`' (which owns the keyword
    ``options``: roi_fraction, seed, binarize, sample_ids)."""
    return select_regions(importance, vulnerability, fraction, **options).neutralized
