"""The nulls of the statistics engine: the groups of the pair-based nulls, their exact expectations, and the
random permutations within groups (:mod:`advspatial.statistics.inference` names everything here too)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ShapeError, check_range, unknown_name

# -- groups of the pair-based nulls ----------------------------------------------------

#: the hierarchy of nulls, from the weakest (uniform placement) to the most matched
NULLS = ("uniform", "any-class", "same-class", "object-conditioned")

#: composition strata per class of the object-conditioned null (choice)
DEFAULT_STRATA = 4


def as_groups(groups: Any, n: int | None = None, name: str = "groups") -> torch.Tensor:
    """(N,) int64 CPU tensor, checked."""
    g = torch.as_tensor(groups)
    if g.ndim != 1 or g.dtype.is_floating_point or g.dtype == torch.bool:
        raise ShapeError(f"{name} must be an (N,) integer tensor, got {tuple(g.shape)} {g.dtype}")
    if n is not None and g.shape[0] != n:
        raise ShapeError(f"{name} must have shape ({n},), got {tuple(g.shape)}")
    return g.cpu().long()


def composition_strata(composition: Any, labels: Any, strata: int = DEFAULT_STRATA) -> torch.Tensor:
    """(N,) stratum 0..S-1 of each image: its quantile bin of ``composition`` within its class.

    Bins are made by rank (ties broken by image order), so each class splits into
    ``strata`` bins of equal size (±1); a class smaller than ``strata`` leaves some
    bins with one image, which then has no partner. A NaN composition (e.g. the
    foreground share of an empty region) gets stratum -1: no partner.
    """
    check_range("strata", strata, 1)
    labels = as_groups(labels, name="labels")
    comp = _as_float(composition, labels.shape[0], "composition")
    if bool(torch.isinf(comp).any()):
        raise ConfigError("composition contains infinite values")
    out = torch.full_like(labels, -1)
    known = ~torch.isnan(comp)
    for c in torch.unique(labels):
        idx = ((labels == c) & known).nonzero().squeeze(1)
        rank = torch.empty_like(idx)
        rank[torch.sort(comp[idx], stable=True).indices] = torch.arange(idx.numel())
        out[idx] = rank * int(strata) // max(1, idx.numel())
    return out


def null_groups(
    null: str, labels: Any, composition: Any | None = None, strata: int = DEFAULT_STRATA
) -> torch.Tensor:
    """(N,) partner groups of a pair-based null: partners of image i are the other images of its group.

    ``any-class``: one group; ``same-class``: the labels; ``object-conditioned``:
    ``label * strata + stratum`` (:func:`composition_strata`), so partners share the
    class *and* the foreground/background composition (an image without a stratum
    gets a group of its own, a negative number).
    """
    labels = as_groups(labels, name="labels")
    if null == "any-class":
        return torch.zeros_like(labels)
    if null == "same-class":
        return labels.clone()
    if null == "object-conditioned":
        if composition is None:
            raise ConfigError("the object-conditioned null needs a composition covariate (N,)")
        stratum = composition_strata(composition, labels, strata)
        groups = labels * int(strata) + stratum
        alone = groups.min() - 1 - torch.arange(labels.shape[0]) if len(labels) else groups  # below every group
        return torch.where(stratum >= 0, groups, alone)
    raise unknown_name("pair-based null", null, NULLS[1:])


def pair_groups(labels: Any, composition: Any | None = None, strata: int = DEFAULT_STRATA,
                nulls: Sequence[str] = NULLS) -> dict[str, torch.Tensor]:
    """``{null: (N,) partner groups}`` of every pair-based null among ``nulls``, in :data:`NULLS` order; the
    object-conditioned null only with a ``composition`` (:func:`null_groups`). One set of groups serves every
    statistic and RoI compared on the same images."""
    return {null: null_groups(null, labels, composition, strata) for null in NULLS[1:]
            if null in nulls and not (null == "object-conditioned" and composition is None)}


def foreground_share(region: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """(N,) share of each region's pixels on the foreground (NaN for an empty region).

    The composition covariate of the object-conditioned null, e.g. with
    ``foreground = image.amax(1) > 0.05`` on MNIST/Fashion-MNIST (METHODS §4).
    """
    if region.shape != foreground.shape or region.ndim != 3:
        raise ShapeError(f"region and foreground must be (N,H,W) of one shape, got {tuple(region.shape)} "
                         f"and {tuple(foreground.shape)}")
    r = region.flatten(1).bool()
    size = r.sum(1).double()
    inside = (r & foreground.flatten(1).bool()).sum(1).double()
    return torch.where(size > 0, inside / size.clamp_min(1), torch.full_like(size, math.nan))


def _as_float(values: Any, n: int, name: str) -> torch.Tensor:
    v = torch.as_tensor(values).detach().cpu().double()
    if v.shape != (n,):
        raise ShapeError(f"{name} must have shape ({n},), got {tuple(v.shape)}")
    return v


# -- exact null expectations -------------------------------------------------------------

def check_pairs(pairs: torch.Tensor, groups: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(pairs, torch.Tensor) or pairs.ndim != 2 or pairs.shape[0] != pairs.shape[1]:
        raise ShapeError(f"pairs must be an (N,N) tensor, got {getattr(pairs, 'shape', type(pairs))}")
    return pairs.detach().cpu().double(), as_groups(groups, pairs.shape[0])


def partner_null(pairs: torch.Tensor, groups: Any) -> torch.Tensor:
    """(N,) exact null of each image: the nan-mean of ``pairs[j, i]`` over partners j != i of its group.

    A uniformly random derangement within the group gives image i each of the
    other members as partner with the same probability, so this is exactly the
    expected value under that permutation null -- no sampling. NaN where image i
    has no partner or every partner value is NaN.
    """
    p, g = check_pairs(pairs, groups)
    partner = (g[:, None] == g[None, :]) & ~torch.eye(g.shape[0], dtype=torch.bool)
    usable = partner & torch.isfinite(p)
    total = torch.where(usable, p, torch.zeros_like(p)).sum(0)
    count = usable.sum(0)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


# -- random permutations within groups ---------------------------------------------------

def permutations_within(groups: Any, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(count, N) int64: ``count`` independent uniform random permutations within groups.

    Row b maps image i to σ_b(i) of the same group; the identity and fixed points
    are allowed: under the null that RoIs are exchangeable within a group, the
    observed pairing is one draw from this distribution, which is what makes the
    permutation p-value valid (a derangement-only null excludes the observed
    pairing and, for groups of two, has no spread at all). The shuffles run in
    NumPy from a generator seeded by one draw of ``generator``.
    """
    check_range("count", count, 0)
    g = as_groups(groups)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
    labels = g.numpy()
    out = np.broadcast_to(np.arange(labels.shape[0]), (int(count), labels.shape[0])).copy()
    for value in np.unique(labels):
        idx = np.flatnonzero(labels == value)
        if idx.size >= 2:
            out[:, idx] = idx[rng.permuted(np.broadcast_to(np.arange(idx.size), (int(count), idx.size)), axis=1)]
    return torch.from_numpy(out)


#: permutations drawn and evaluated at once (memory: chunk x N gathered values)
PERMUTATION_CHUNK = 1000
#: sets of permutations kept for reuse (:func:`permutation_chunks`): one per pair-based null of a comparison
#: (any-class, same-class, object-conditioned); the largest set kept (int64 entries: 128 MB)
PERMUTATION_SETS = 3
PERMUTATION_ENTRIES = 16_000_000
_kept_permutations: dict[tuple[bytes, int, int], tuple[np.ndarray, ...]] = {}


def permutation_chunks(groups: torch.Tensor, n_permutations: int, seed: int) -> tuple[np.ndarray, ...]:
    """The within-group permutations of :func:`~.inference.excess_test` and its kin, ``PERMUTATION_CHUNK`` rows at a
    time, drawn from ``seed``.

    A run compares many RoIs (every attack, map kind and model-free reference) under the same groups and seed,
    so they share one draw: the last :data:`PERMUTATION_SETS` sets are kept (when no larger than
    :data:`PERMUTATION_ENTRIES` entries), which gives the same numbers as drawing them again.
    """
    key = (groups.numpy().tobytes(), n_permutations, seed)
    if key in _kept_permutations:
        return _kept_permutations[key]
    gen = torch.Generator().manual_seed(seed)
    chunks = tuple(permutations_within(groups, min(PERMUTATION_CHUNK, n_permutations - start), gen).numpy()
                   for start in range(0, n_permutations, PERMUTATION_CHUNK))
    for chunk in chunks:
        chunk.flags.writeable = False  # shared between callers
    if n_permutations * groups.numel() <= PERMUTATION_ENTRIES:
        while len(_kept_permutations) >= PERMUTATION_SETS:
            _kept_permutations.pop(next(iter(_kept_permutations)))
        _kept_permutations[key] = chunks
    return chunks
