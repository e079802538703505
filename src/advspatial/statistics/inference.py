"""The statistics engine: effect sizes with confidence intervals, paired tests, corrections, verdicts.

Every experiment that makes a claim draws its numbers from here, so that one
claim means the same thing everywhere (METHODS.md §1, "Inference"):

- :func:`bootstrap_mean_ci` -- the mean of per-image values with a BCa
  bootstrap 95% CI over images (seeded, NaN left out);
- :func:`share_difference_ci` -- the same for differences of per-image shares
  (correctness), never a zero-width interval when no image differs;
- :func:`paired_p` -- two-sided sign-flip p of the mean of paired per-image
  differences (the estimand of their CI);
- the hierarchy of nulls (:data:`NULLS`): ``uniform`` (each image's own RoI at
  random cyclic shifts, :func:`placement_comparison`), and three pair-based nulls whose per-image expectation
  is exact (:func:`partner_null`, the mean over the partners of a within-group
  derangement): ``any-class``, ``same-class`` and ``object-conditioned``
  (:func:`null_groups`);
- :func:`excess_test` / :func:`uniform_comparison` / :func:`compare_to_nulls` --
  mean per-image excess over a null with a bootstrap CI, ratio, z and a
  two-sided p (:class:`NullComparison`); :func:`permutations_within` draws the
  permutations, :func:`two_sided_permutation_p` is the one p rule;
- :func:`wilson_interval` / :func:`accuracy` -- accuracies with Wilson 95% intervals;
  :func:`paired_accuracy` -- a paired accuracy difference with a bootstrap CI and
  McNemar's exact p (:func:`mcnemar_p`) or a sign-flip p (:func:`sign_flip_p`);
- :func:`holm` (primary family) and :func:`benjamini_hochberg` (the rest);
- :func:`verdict` (fixed rules, :data:`VERDICTS`; a claim about a training procedure needs
  :data:`MIN_SEEDS` seeds and its sign in every one, :func:`seeds_agreeing`);
- :func:`crossed_mean_ci` -- the effect of a training procedure over training seeds crossed with images
  (``seeds.py``, :class:`SeedEffect`).

The estimates (``estimates.py``), the nulls (``nulls.py``), the accuracies (``accuracy.py``), the
corrections and verdicts (``verdicts.py``) and the seeds (``seeds.py``) live in modules of their own and
are importable from here; a comparison's sentence is :func:`advspatial.statistics.wording.describe`, the
one-pixel test :func:`advspatial.statistics.pixel_test.pixel_in_roi_test`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ShapeError, check_range, unknown_name
from .estimates import Estimate, bootstrap_mean_ci, paired_p
from .nulls import (
    PERMUTATION_CHUNK, permutation_chunks, DEFAULT_STRATA, NULLS, as_groups, check_pairs, null_groups, partner_null,
)
from .placement import check_sample_ids, placement_shifts, placement_table

# -- the comparison against one null ---------------------------------------------------------

@dataclass(frozen=True)
class NullComparison:
    """One statistic against one null, over the ``n`` images that have both values.

    Attributes:
        statistic, null: names (``null`` one of :data:`NULLS`).
        n: images compared (finite observed value and a null value).
        observed, null_mean: their means over those images.
        excess: mean per-image excess observed - null with a bootstrap 95% CI (pair-based nulls: of the
            two-way influence values, so the RoI side of the null counts too).
        ratio: observed / null_mean (NaN when null_mean is 0).
        z: the mean excess in units of its null spread (permutation std of the mean
            over the permutations or placements; the standard error for :func:`uniform_comparison`).
        p: two-sided p (within-group permutations for pair-based nulls, random placements for the uniform one).
        n_permutations: permutations or placements drawn (0 for :func:`uniform_comparison`).
        null_std: the null spread z divides by (std of the mean excess over the
            permutations or placements; the standard error for :func:`uniform_comparison`).
    """

    statistic: str
    null: str
    n: int
    observed: float
    null_mean: float
    excess: Estimate
    ratio: float
    z: float
    p: float
    n_permutations: int = 0
    null_std: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        """Plain floats/ints/strings (JSON-ready; NaN stays NaN); ``excess`` as its own dict."""
        d = asdict(self)
        d["excess"] = self.excess.as_dict()
        return d


def ratio_to_null(observed: float, null_mean: float) -> float:
    """observed / null mean (NaN when the null mean is 0 or not finite): the ratio every comparison reports."""
    return observed / null_mean if null_mean != 0 and math.isfinite(null_mean) else math.nan


def _two_sided_p(t: float, t_null: np.ndarray) -> float:
    """(1 + #{|T_b| >= |T|}) / (1 + B) over the finite T_b, with a relative tolerance of 1e-10 for rounding."""
    t_null = t_null[np.isfinite(t_null)]
    if not math.isfinite(t) or t_null.size == 0:
        return math.nan
    extreme = np.abs(t_null) >= abs(t) - 1e-10 * (1 + abs(t))
    return float((1 + int(extreme.sum())) / (1 + t_null.size))


def two_sided_permutation_p(observed: float, null_values: Any) -> float:
    """Two-sided permutation p of a statistic centred on 0 under the null: ``(1 + #{|T_b| >= |T|}) / (1 + B)``.

    The one rule every permutation test of the project uses (non-finite T_b are
    left out of B; NaN when T is NaN or no T_b is finite).
    """
    return _two_sided_p(float(observed), _finite_all(null_values))


def _finite_all(values: Any) -> np.ndarray:
    arr = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    return arr.reshape(-1)


@dataclass
class _Prepared:
    """One statistic's per-image values on the C images that enter its test.

    ``columns`` (C,) are those images; ``block`` (N, C) = pairs[:, columns] flattened
    row-major, so pairs[j, columns[c]] = block[j * C + c] (one ``take`` per chunk);
    ``partners`` (C,) the number of usable partners of each image; ``influence`` (C,)
    the values the CI resamples (:func:`_influence`; the excess itself where the
    null has no RoI side).
    """

    block: np.ndarray
    has_nan: bool
    columns: np.ndarray
    null: np.ndarray
    excess: np.ndarray
    observed: np.ndarray
    partners: np.ndarray
    influence: np.ndarray


def _prepare(pairs: torch.Tensor, groups: torch.Tensor) -> _Prepared:
    null = partner_null(pairs, groups).numpy()
    observed = pairs.diagonal().numpy()
    cols = np.flatnonzero(np.isfinite(observed) & np.isfinite(null))
    block = np.ascontiguousarray(pairs.numpy()[:, cols]).reshape(-1)
    g = groups.numpy()
    usable = (g[:, None] == g[None, cols]) & np.isfinite(pairs.numpy()[:, cols])
    partners = usable.sum(0) - 1  # the image itself is usable: its observed value is finite
    excess = observed[cols] - null[cols]
    return _Prepared(block, bool(np.isnan(block).any()), cols, null[cols], excess, observed[cols],
                     partners.astype(float), _influence(pairs.numpy(), usable, cols, partners, excess))


def _influence(pairs: np.ndarray, usable: np.ndarray, cols: np.ndarray, partners: np.ndarray,
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


def _permutation_means(
    prepared: list[_Prepared], groups: torch.Tensor, n_permutations: int, seed: int
) -> list[np.ndarray]:
    """(B,) mean excess recomputed on each within-group permutation of the RoIs, per prepared statistic.

    Permuting the RoIs (σ) and recomputing every image's excess gives, for image i
    with k_i usable partners, ``(( k_i + 1) · pairs[σ(i), i] − observed_i) / k_i − null_i``:
    the observed excess at σ = identity, mean exactly 0 over σ. For a group of two
    this is a sign flip of the excess. The same permutations serve every statistic.
    """
    out: list[list[np.ndarray]] = [[] for _ in prepared]
    for perms in permutation_chunks(groups, int(n_permutations), int(seed)):
        positions: dict[bytes, np.ndarray] = {}  # statistics over the same images share their gather positions
        for k, prep in enumerate(prepared):
            c = prep.columns.size
            if c == 0:
                out[k].append(np.full(perms.shape[0], np.nan))
                continue
            key = prep.columns.tobytes()
            if key not in positions:
                positions[key] = perms[:, prep.columns] * c + np.arange(c)
            excess = prep.block.take(positions[key])
            # ((k + 1) * value - observed) / k - null, in place: the same operations in the same order
            excess *= prep.partners + 1
            excess -= prep.observed
            excess /= prep.partners
            excess -= prep.null
            out[k].append(_row_nanmean(excess) if prep.has_nan else excess.mean(1))
    return [np.concatenate(v) if v else np.zeros(0) for v in out]


def _row_nanmean(values: np.ndarray) -> np.ndarray:
    """Mean of the finite entries of each row (NaN for a row without one), without warnings."""
    finite = np.isfinite(values)
    count = finite.sum(1)
    total = np.where(finite, values, 0.0).sum(1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _comparison(prep: _Prepared, t_null: np.ndarray, seed: int, statistic: str, null: str, b: int) -> NullComparison:
    n = int(prep.columns.size)
    observed = float(prep.observed.mean()) if n else math.nan
    null_mean = float(prep.null.mean()) if n else math.nan
    t = float(prep.excess.mean()) if n else math.nan
    finite = t_null[np.isfinite(t_null)]
    spread = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    z = t / spread if spread > 0 else math.nan
    return NullComparison(statistic, null, n, observed, null_mean, bootstrap_mean_ci(prep.influence, seed),
                          ratio_to_null(observed, null_mean), z, _two_sided_p(t, t_null), int(b), spread)


def excess_test(
    pairs: torch.Tensor, groups: Any, n_permutations: int = 10_000, seed: int = 0,
    *, statistic: str = "", null: str = "",
) -> NullComparison:
    """Observed statistic against the exact within-group null, per image, with a two-sided permutation p.

    Per image i (with a partner and a finite observed value): excess_i =
    pairs[i, i] - partner_null_i. T = mean excess; T_b = the same mean excess
    recomputed after a random within-group permutation σ_b of the RoIs (identity
    allowed, so the observed pairing is exchangeable with the permuted ones; see
    :func:`_permutation_means`). T_b is centred on 0 exactly, and the two-sided
    p = (1 + #{|T_b| >= |T|}) / (1 + B) is symmetric under a sign flip. For groups
    of two it is a sign-flip test. z = T / std(T_b); the CI of the mean excess is a
    bootstrap over images.
    """
    check_range("n_permutations", n_permutations, 1)
    p, g = check_pairs(pairs, groups)
    prep = _prepare(p, g)
    t_null = _permutation_means([prep], g, n_permutations, seed)[0]
    return _comparison(prep, t_null, seed, statistic, null, n_permutations)


def uniform_comparison(
    observed: Any, expected: Any, seed: int = 0, *, statistic: str = "", null: str = "uniform"
) -> NullComparison:
    """Observed per-image values against given per-image expectations (e.g. a geometry null's value).

    Same fields as :func:`excess_test`, over images where both are finite; p is
    the two-sided sign-flip p of the mean of observed - expected
    (:func:`paired_p`: the estimand of the CI) and z = mean excess / its standard
    error. Co-location against uniform placement is :func:`placement_comparison`.
    """
    obs = torch.as_tensor(observed).detach().cpu().double().reshape(-1)
    exp = torch.as_tensor(expected).detach().cpu().double().reshape(-1)
    if obs.shape != exp.shape:
        raise ShapeError(f"observed and expected must have one length, got {obs.numel()} and {exp.numel()}")
    keep = torch.isfinite(obs) & torch.isfinite(exp)
    obs, exp = obs[keep], exp[keep]
    excess = obs - exp
    n = int(obs.numel())
    observed_mean = float(obs.mean()) if n else math.nan
    null_mean = float(exp.mean()) if n else math.nan
    se = float(excess.std()) / math.sqrt(n) if n > 1 else math.nan
    t = float(excess.mean()) if n else math.nan
    z = t / se if se > 0 else math.nan
    return NullComparison(statistic, null, n, observed_mean, null_mean, bootstrap_mean_ci(excess, seed),
                          ratio_to_null(observed_mean, null_mean), z, paired_p(excess, seed=seed), 0, se)


def placement_comparison(
    table: torch.Tensor, sample_ids: Any, n_permutations: int = 10_000, seed: int = 0, *, statistic: str = "",
) -> NullComparison:
    """The observed statistic against uniform placement of the image's own RoI shape (the ``uniform`` null).

    ``table`` (N, P) holds the statistic at every cyclic shift of image i's RoI
    (:func:`~advspatial.statistics.placement.placement_table`, column 0 observed).
    Per image, null_i = the mean over all P shifts (exact, no sampling) and
    excess_i = observed_i - null_i. T = mean excess; T_b = the mean excess with
    every image's RoI at an independent uniform random shift (drawn per
    ``(seed, sample id)``, shift 0 allowed), so T is exchangeable with the T_b when
    the placement is uniform and p = (1 + #{|T_b| >= |T|}) / (1 + B) is valid at
    any B. Images with a non-finite observed value or null are left out (a NaN
    T_b entry, e.g. a shift that empties both regions of IoU, is left out of that
    resample's mean).
    """
    check_range("n_permutations", n_permutations, 1)
    shifts = placement_shifts(check_sample_ids(sample_ids, table.shape[0]), int(n_permutations), table.shape[1], seed)
    return _placement(table, shifts, seed, statistic)


def _placement(table: torch.Tensor, shifts: np.ndarray, seed: int, statistic: str) -> NullComparison:
    """:func:`placement_comparison` with the (B, N) shifts of every image drawn (shared by all statistics)."""
    values = table.detach().cpu().double().numpy()
    observed = values[:, 0]
    finite = np.isfinite(values)
    count = finite.sum(1)
    null = np.where(count > 0, np.where(finite, values, 0).sum(1) / np.maximum(count, 1), np.nan)
    cols = np.flatnonzero(np.isfinite(observed) & np.isfinite(null))
    rows = values[cols] - null[cols, None]
    t_null = np.full(shifts.shape[0], np.nan)
    if cols.size:
        mean = _row_nanmean if not finite[cols].all() else (lambda v: v.mean(1))
        t_null = np.concatenate([mean(np.take_along_axis(rows, shifts[s:s + PERMUTATION_CHUNK, cols].T, 1).T)
                                 for s in range(0, shifts.shape[0], PERMUTATION_CHUNK)])
    excess = observed[cols] - null[cols]
    prep = _Prepared(np.zeros(0), False, cols, null[cols], excess, observed[cols], np.zeros(cols.size), excess)
    return _comparison(prep, t_null, seed, statistic, "uniform", shifts.shape[0])


def compare_to_nulls(
    importance: torch.Tensor,
    attack: torch.Tensor,
    roi: torch.Tensor,
    roa: torch.Tensor,
    labels: Any,
    composition: Any | None = None,
    statistics: Sequence[str] | None = None,
    n_permutations: int = 10_000,
    seed: int = 0,
    strata: int = DEFAULT_STRATA,
    nulls: Sequence[str] = NULLS,
    sample_ids: Any | None = None,
) -> dict[str, dict[str, NullComparison]]:
    """Every statistic against every null (or the ``nulls`` named): ``result[statistic][null]``.

    The (N,N) pair matrices are built once (:func:`advspatial.regions.pairwise_statistics`);
    each pair-based null draws one set of permutations shared by all statistics.
    ``statistics`` defaults to all of ``STATISTICS``. The object-conditioned null
    needs ``composition`` (N,) (e.g. :func:`foreground_share` of the RoA); without
    it that null is left out of the result. The ``uniform`` null places each image's
    own RoI at random cyclic shifts (:func:`placement_comparison`; the draws keyed by
    ``seed`` and ``sample_ids``, default 0..N-1). Memory is O(N^2 + N P) per statistic.
    """
    from ..regions.checks import check_maps, check_mask, check_same_shape
    from ..regions.overlap import STATISTICS, average_ranks, pairwise_statistics

    check_maps(importance, "importance")
    check_maps(attack, "attack")
    check_mask(roi, "roi")
    check_mask(roa, "roa")
    check_same_shape(importance.shape, attack=attack, roi=roi, roa=roa)
    names = tuple(STATISTICS if statistics is None else statistics)
    unknown = set(names) - set(STATISTICS)
    if unknown:
        raise unknown_name("statistic", sorted(unknown)[0], STATISTICS)
    check_range("n_permutations", n_permutations, 1)
    n = importance.shape[0]
    labels = as_groups(labels, n, "labels")
    imp_rank, att_rank = average_ranks(importance.flatten(1)), average_ranks(attack.flatten(1))
    pairs = pairwise_statistics(importance, attack, roi, roa, imp_rank, att_rank)
    pairs = {s: pairs[s].detach().cpu().double() for s in names}
    ids = check_sample_ids(sample_ids, n)
    unknown_nulls = set(nulls) - set(NULLS)
    if unknown_nulls:
        raise unknown_name("null", sorted(unknown_nulls)[0], NULLS)
    out: dict[str, dict[str, NullComparison]] = {s: {} for s in names}
    if "uniform" in nulls and n:
        tables = placement_table(importance, attack, roi, roa, imp_rank, att_rank)
        shifts = placement_shifts(ids, n_permutations, int(roi[0].numel()), seed)
        for s in names:
            out[s]["uniform"] = _placement(tables[s], shifts, seed, s)
    for null in NULLS[1:]:
        if null not in nulls or (null == "object-conditioned" and composition is None):
            continue
        groups = null_groups(null, labels, composition, strata)
        prepared = [_prepare(pairs[s], groups) for s in names]
        t_null = _permutation_means(prepared, groups, n_permutations, seed)
        for s, prep, tn in zip(names, prepared, t_null, strict=True):
            out[s][null] = _comparison(prep, tn, seed, s, null, n_permutations)
    return out


@dataclass(frozen=True)
class ExcessDifference:
    """The mean per-image difference of two excesses over one null (model RoI minus a reference RoI).

    ``effect``: mean of excess_a - excess_b over the images both have, with a
    bootstrap 95% CI of the two-way influence values (both sides of each null,
    :func:`_influence`); ``p``: two-sided sign-flip p of that mean (the CI's estimand).
    """

    n: int
    effect: Estimate
    p: float

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "effect": self.effect.as_dict(), "p": self.p}


def excess_difference(pairs_a: torch.Tensor, pairs_b: torch.Tensor, groups: Any, seed: int = 0) -> ExcessDifference:
    """Is the excess of pairing ``a`` over the within-group null larger than that of pairing ``b``?

    ``pairs_a``/``pairs_b`` are (N,N) statistics of the same attack maps with two
    RoI families (e.g. the model's RoIs and the edge-map RoIs: entry [j, i] =
    statistic of RoI j with RoA i). Per image i, d_i = excess_a,i - excess_b,i,
    each excess over the same partners (``groups``, e.g. same class).
    """
    return difference_of(difference_influence(pairs_a, pairs_b, groups), seed)


def difference_of(values: PerImage, seed: int = 0) -> ExcessDifference:
    """The mean of per-image differences (:func:`difference_influence`) with its bootstrap CI and sign-flip p."""
    d = torch.from_numpy(values.values)
    return ExcessDifference(int(values.columns.size), bootstrap_mean_ci(d, seed), paired_p(d, seed=seed))


@dataclass(frozen=True)
class PerImage:
    """Per-image values of an excess over a within-group null: ``values[c]`` belongs to image ``columns[c]`` (the
    images with a finite observed value and a partner); ``observed`` and ``null`` are that image's statistic and its
    partners' mean. ``values`` are the two-way influence values (:func:`_influence`): their mean is the mean excess
    that :func:`excess_test` reports, and their spread counts the RoI side of the null too."""

    columns: np.ndarray
    values: np.ndarray
    observed: np.ndarray
    null: np.ndarray


def excess_influence(pairs: torch.Tensor, groups: Any) -> PerImage:
    """The per-image values behind :func:`excess_test`'s mean excess and CI (for comparisons across runs on the
    same images, e.g. two models: image i's value is its own contribution to the run's effect)."""
    p, g = check_pairs(pairs, groups)
    prep = _prepare(p, g)
    return PerImage(prep.columns, prep.influence, prep.observed, prep.null)


def difference_influence(pairs_a: torch.Tensor, pairs_b: torch.Tensor, groups: Any) -> PerImage:
    """The per-image values behind :func:`excess_difference` (pairing ``a``'s influence minus ``b``'s, on the images
    both have; ``observed``/``null`` are ``a``'s)."""
    pa, g = check_pairs(pairs_a, groups)
    pb, _ = check_pairs(pairs_b, groups)
    prep_a, prep_b = _prepare(pa, g), _prepare(pb, g)
    common, ia, ib = np.intersect1d(prep_a.columns, prep_b.columns, return_indices=True)
    return PerImage(common, prep_a.influence[ia] - prep_b.influence[ib], prep_a.observed[ia], prep_a.null[ia])


__all__ = [
    "NullComparison", "PerImage", "compare_to_nulls", "difference_influence", "difference_of", "excess_influence",
    "excess_test", "placement_comparison", "two_sided_permutation_p", "uniform_comparison",
]
