"""The per-image excess over a pair-based null and its permutation distribution: the arithmetic of the engine's
pair-based tests (:mod:`advspatial.statistics.inference` turns it into comparisons).

A pair matrix ``pairs[j, i]`` holds a statistic of RoI j with attack map i. :func:`prepare` takes, once per
statistic and null, the images that enter the test, each image's exact partner null and its two-way influence
value; :func:`permutation_means` then recomputes the mean excess under within-group permutations of the RoIs,
one draw shared by every prepared statistic of the same groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .nulls import partner_null, permutation_chunks


@dataclass(frozen=True)
class PerImage:
    """Per-image values of an excess over a within-group null: ``values[c]`` belongs to image ``columns[c]`` (the
    images with a finite observed value and a partner); ``observed`` and ``null`` are that image's statistic and its
    partners' mean. ``values`` are the two-way influence values (:func:`influence`): their mean is the mean excess
    that :func:`~advspatial.statistics.inference.excess_test` reports, and their spread counts the RoI side of the
    null too."""

    columns: np.ndarray
    values: np.ndarray
    observed: np.ndarray
    null: np.ndarray

    def minus(self, other: PerImage) -> PerImage:
        """This excess minus ``other``'s, on the images both have (``observed``/``null`` stay this one's): the
        per-image values of :func:`~advspatial.statistics.inference.excess_difference`."""
        common, mine, theirs = np.intersect1d(self.columns, other.columns, return_indices=True)
        return PerImage(common, self.values[mine] - other.values[theirs], self.observed[mine], self.null[mine])


@dataclass
class Prepared:
    """One statistic's per-image values on the C images that enter its test.

    ``columns`` (C,) are those images; ``block`` (C, N) = pairs[:, columns] transposed
    and flattened, so pairs[j, columns[c]] = block[c * N + j]: each image's candidate
    partners lie together, so a chunk of permutations reads them from a few cache
    lines per image (:func:`permutation_means`); ``partners`` (C,) the number of
    usable partners of each image; ``influence`` (C,) the values the CI resamples
    (:func:`influence`; the excess itself where the null has no RoI side).
    """

    block: torch.Tensor
    has_nan: bool
    columns: np.ndarray
    null: np.ndarray
    excess: np.ndarray
    observed: np.ndarray
    partners: np.ndarray
    influence: np.ndarray

    def per_image(self) -> PerImage:
        """The per-image values behind this statistic's mean excess and CI."""
        return PerImage(self.columns, self.influence, self.observed, self.null)


def prepare(pairs: torch.Tensor, groups: torch.Tensor) -> Prepared:
    """The test's view of one (N,N) float64 pair matrix under the (N,) partner ``groups`` of a null."""
    null = partner_null(pairs, groups).numpy()
    observed = pairs.diagonal().numpy()
    cols = np.flatnonzero(np.isfinite(observed) & np.isfinite(null))
    block = torch.from_numpy(np.ascontiguousarray(pairs.numpy()[:, cols].T).reshape(-1))
    g = groups.numpy()
    usable = (g[:, None] == g[None, cols]) & np.isfinite(pairs.numpy()[:, cols])
    partners = usable.sum(0) - 1  # the image itself is usable: its observed value is finite
    excess = observed[cols] - null[cols]
    return Prepared(block, bool(block.isnan().any()), cols, null[cols], excess, observed[cols],
                    partners.astype(float), influence(pairs.numpy(), usable, cols, partners, excess))


def influence(pairs: np.ndarray, usable: np.ndarray, cols: np.ndarray, partners: np.ndarray,
              excess: np.ndarray) -> np.ndarray:
    """(C,) per-image values whose mean is the mean excess and whose spread counts both sides of the null.

    The null mean U = mean_i (1/k_i) sum_{j partner of i} pairs[j, i] is a U-statistic:
    image m enters it as an attack (column m: its own null_m, already in excess_m)
    and as a RoI (row m: b_m = sum_i pairs[m, i] / k_i over the images i it is a
    partner of). Resampling excess_m alone misses the RoI side and under-covers
    under an image-specific alternative (0.923 for Pearson vs same-class, 300
    simulations); psi_m = excess_m - (b_m - mean b) is the first-order (Hoeffding)
    projection of T on image m, with mean(psi) = T exactly, so the bootstrap of psi is
    a two-way interval at the cost of one pass over the pair matrix.
    """
    if cols.size == 0:
        return excess
    own = np.zeros(usable.shape, dtype=bool)
    own[cols, np.arange(cols.size)] = True
    weights = np.where(usable & ~own, 1.0 / np.maximum(partners, 1)[None, :], 0.0)
    side = np.where(weights > 0, pairs[:, cols], 0.0) * weights  # (N, C): RoI j's share of image i's null
    b = side.sum(1)[cols]
    return excess - (b - b.mean())


def permutation_means(
    prepared: list[Prepared], groups: torch.Tensor, n_permutations: int, seed: int
) -> list[np.ndarray]:
    """(B,) mean excess recomputed on each within-group permutation of the RoIs, per prepared statistic.

    Permuting the RoIs (σ) and recomputing every image's excess gives, for image i
    with k_i usable partners, ``(( k_i + 1) · pairs[σ(i), i] − observed_i) / k_i − null_i``:
    the observed excess at σ = identity, mean exactly 0 over σ. For a group of two
    this is a sign flip of the excess. The same permutations serve every statistic.
    """
    out: list[list[np.ndarray]] = [[] for _ in prepared]
    n = groups.numel()
    for perms in permutation_chunks(groups, int(n_permutations), int(seed)):
        positions: dict[bytes, torch.Tensor] = {}  # statistics over the same images share their gather positions
        for k, prep in enumerate(prepared):
            c = prep.columns.size
            if c == 0:
                out[k].append(np.full(perms.shape[0], np.nan))
                continue
            key = prep.columns.tobytes()
            if key not in positions:  # (C, B): image c's partner under each permutation
                positions[key] = torch.from_numpy(np.ascontiguousarray(perms[:, prep.columns].T))
            # (C, B): row c of the block holds image c's value with every RoI; torch's gather uses every thread
            drawn = torch.gather(prep.block.view(c, n), 1, positions[key])
            out[k].append(_permuted_means(prep, drawn))
    return [np.concatenate(v) if v else np.zeros(0) for v in out]


def _permuted_means(prep: Prepared, drawn: torch.Tensor) -> np.ndarray:
    """(B,) mean excess per permutation from ``drawn`` (C, B), each image's partner value under each permutation.

    The mean over images of ``((k + 1) · value - observed) / k - null`` is linear in the values: one weighted sum
    per permutation, ``sum_c w_c · value_c + offset`` with ``w = (k + 1) / (k · C)`` (a matrix-vector product, a
    single pass over the drawn values), equal to the mean of the per-image terms to the last bits (the tests hold
    it to its definition; the p-value's tolerance absorbs rounding). With a missing pair value, the mean of the
    finite terms of each permutation.
    """
    c = prep.columns.size
    if prep.has_nan:
        excess = drawn.mul(_column(prep.partners + 1)).sub_(_column(prep.observed))
        excess.div_(_column(prep.partners)).sub_(_column(prep.null))
        return row_nanmean(np.ascontiguousarray(excess.numpy().T))
    weights = torch.from_numpy((prep.partners + 1) / (prep.partners * c))
    offset = -float(np.mean(prep.observed / prep.partners + prep.null))
    return (weights @ drawn).add_(offset).numpy()


def _column(values: np.ndarray) -> torch.Tensor:
    """(C,) per-image values as a (C, 1) column, to broadcast over a chunk's permutations."""
    return torch.from_numpy(values)[:, None]


def row_nanmean(values: np.ndarray) -> np.ndarray:
    """Mean of the finite entries of each row (NaN for a row without one), without warnings."""
    finite = np.isfinite(values)
    count = finite.sum(1)
    total = np.where(finite, values, 0.0).sum(1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
