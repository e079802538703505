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
  permutations, :func:`two_sided_permutation_p` is the one p rule; :func:`compare_pairs` tests many pair
  matrices of the same images (statistics, reference RoIs) on one draw of each null's permutations, which
  :func:`advspatial.statistics.store.compare_store` uses to compare an experiment's kept store in one call;
- :func:`wilson_interval` / :func:`accuracy` -- accuracies with Wilson 95% intervals;
  :func:`paired_accuracy` -- a paired accuracy difference with a bootstrap CI and
  McNemar's exact p (:func:`mcnemar_p`) or a sign-flip p (:func:`sign_flip_p`);
- :func:`holm` (primary family) and :func:`benjamini_hochberg` (the rest);
- :func:`verdict` (fixed rules, :data:`VERDICTS`; a claim about a training procedure needs
  :data:`MIN_SEEDS` seeds and its sign in every one, :func:`seeds_agreeing`);
- :func:`crossed_mean_ci` -- the effect of a training procedure over training seeds crossed with images
  (``seeds.py``, :class:`SeedEffect`).

The estimates (``estimates.py``), the nulls (``nulls.py``), the per-image excess over a pair-based null and its
permutation distribution (``excess.py``), the accuracies (``accuracy.py``), the
corrections and verdicts (``verdicts.py``) and the seeds (``seeds.py``) live in modules of their own and
are importable from here; a comparison's sentence is :func:`advspatial.statistics.wording.describe`, the
one-pixel test :func:`advspatial.statistics.pixel_test.pixel_in_roi_test`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from ..errors import ShapeError, check_range, unknown_name
from .estimates import Estimate, bootstrap_mean_ci, paired_p
from .excess import PerImage, Prepared, permutation_means, prepare, row_nanmean
from .nulls import PERMUTATION_CHUNK, DEFAULT_STRATA, NULLS, as_groups, check_pairs, pair_groups
from .nulls import null_groups as null_groups, partner_null as partner_null  # named in the docs from here
from .placement import check_sample_ids, placement_shifts, placement_table

K = TypeVar("K", bound=Hashable)

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


#: a null mean at most this fraction of max(1, |observed|) is 0 up to rounding: the correlations' uniform null, 0 in
#: exact arithmetic, averages to about 1e-19 in floats, of either sign by the order of its sums
NULL_ZERO = 1e-12


def ratio_to_null(observed: float, null_mean: float) -> float:
    """observed / null mean: the ratio every comparison reports; NaN when the null mean is not finite or is 0 up to
    rounding (:data:`NULL_ZERO`), where a quotient would be a large number of rounding's sign, not a ratio.

    >>> ratio_to_null(0.3, 0.2), ratio_to_null(0.15, 1.7e-19)
    (1.4999999999999998, nan)
    """
    if not math.isfinite(null_mean) or abs(null_mean) <= NULL_ZERO * max(1.0, abs(observed)):
        return math.nan
    return observed / null_mean


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


def _comparison(prep: Prepared, t_null: np.ndarray, seed: int, statistic: str, null: str, b: int) -> NullComparison:
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
    :func:`~.excess.permutation_means`). T_b is centred on 0 exactly, and the two-sided
    p = (1 + #{|T_b| >= |T|}) / (1 + B) is symmetric under a sign flip. For groups
    of two it is a sign-flip test. z = T / std(T_b); the CI of the mean excess is a
    bootstrap over images.
    """
    check_range("n_permutations", n_permutations, 1)
    p, g = check_pairs(pairs, groups)
    prep = prepare(p, g)
    t_null = permutation_means([prep], g, n_permutations, seed)[0]
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
    return placement_comparison_of(table, shifts, seed, statistic)


def placement_comparison_of(table: torch.Tensor, shifts: np.ndarray, seed: int, statistic: str) -> NullComparison:
    """:func:`placement_comparison` with the (B, N) shifts of every image drawn (:func:`placement_shifts`: one draw
    serves every statistic and every RoI of the same images)."""
    values = table.detach().cpu().double().numpy()
    observed = values[:, 0]
    finite = np.isfinite(values)
    count = finite.sum(1)
    null = np.where(count > 0, np.where(finite, values, 0).sum(1) / np.maximum(count, 1), np.nan)
    cols = np.flatnonzero(np.isfinite(observed) & np.isfinite(null))
    rows = values[cols] - null[cols, None]
    t_null = np.full(shifts.shape[0], np.nan)
    if cols.size:
        mean = row_nanmean if not finite[cols].all() else (lambda v: v.mean(1))
        by_image, means = torch.from_numpy(rows), []
        for s in range(0, shifts.shape[0], PERMUTATION_CHUNK):
            drawn = torch.from_numpy(shifts[s:s + PERMUTATION_CHUNK, cols].T)  # (C, B): each image's shift per draw
            means.append(mean(torch.gather(by_image, 1, drawn).numpy().T))  # torch's gather uses every thread
        t_null = np.concatenate(means)
    excess = observed[cols] - null[cols]
    prep = Prepared(torch.zeros(0, dtype=torch.float64), False, cols, null[cols], excess, observed[cols],
                    np.zeros(cols.size), excess)
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
    pairs, tables = statistic_pairs(importance, attack, roi, roa, statistics, placements="uniform" in nulls)
    names = tuple(pairs)
    check_range("n_permutations", n_permutations, 1)
    n = importance.shape[0]
    labels = as_groups(labels, n, "labels")
    ids = check_sample_ids(sample_ids, n)
    unknown_nulls = set(nulls) - set(NULLS)
    if unknown_nulls:
        raise unknown_name("null", sorted(unknown_nulls)[0], NULLS)
    out: dict[str, dict[str, NullComparison]] = {s: {} for s in names}
    if tables:
        shifts = placement_shifts(ids, n_permutations, int(roi[0].numel()), seed)
        for s in names:
            out[s]["uniform"] = placement_comparison_of(tables[s], shifts, seed, s)
    groups = pair_groups(labels, composition, strata, nulls)
    compared, _ = compare_pairs({s: Pairs(s, pairs[s], tuple(groups)) for s in names}, groups, n_permutations, seed)
    for s in names:
        out[s].update(compared[s])
    return out


def checked_statistics(statistics: Sequence[str] | None) -> tuple[str, ...]:
    """The statistics named (all of ``STATISTICS`` when None), each checked to be one."""
    from ..regions.overlap import STATISTICS

    names = tuple(STATISTICS if statistics is None else statistics)
    unknown = set(names) - set(STATISTICS)
    if unknown:
        raise unknown_name("statistic", sorted(unknown)[0], STATISTICS)
    return names


def statistic_pairs(
    importance: torch.Tensor, attack: torch.Tensor, roi: torch.Tensor, roa: torch.Tensor,
    statistics: Sequence[str] | None, placements: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The checked maps' (N,N) pair matrices ``{statistic: pairs}`` (float64, CPU; ``statistics`` defaults to all of
    ``STATISTICS``) and, with ``placements`` and N > 0, every statistic's (N,P) table at every cyclic shift of the
    RoI (:func:`~.placement.placement_table`); the maps are ranked once for both."""
    from ..regions.checks import check_maps, check_mask, check_same_shape
    from ..regions.overlap import average_ranks, pairwise_statistics

    check_maps(importance, "importance")
    check_maps(attack, "attack")
    check_mask(roi, "roi")
    check_mask(roa, "roa")
    check_same_shape(importance.shape, attack=attack, roi=roi, roa=roa)
    names = checked_statistics(statistics)
    imp_rank, att_rank = average_ranks(importance.flatten(1)), average_ranks(attack.flatten(1))
    pairs = pairwise_statistics(importance, attack, roi, roa, imp_rank, att_rank)
    placed = placements and importance.shape[0] > 0
    tables = placement_table(importance, attack, roi, roa, imp_rank, att_rank) if placed else {}
    return {s: pairs[s].detach().cpu().double() for s in names}, tables


@dataclass(frozen=True)
class Pairs:
    """One (N,N) pair matrix to test (entry [j, i]: ``statistic`` of RoI j with attack map i) and the pair-based
    ``nulls`` it is tested against."""

    statistic: str
    values: torch.Tensor
    nulls: tuple[str, ...]


def compare_pairs(pairs: Mapping[K, Pairs], groups: Mapping[str, torch.Tensor], n_permutations: int, seed: int,
                  ) -> tuple[dict[K, dict[str, NullComparison]], dict[tuple[K, str], PerImage]]:
    """Many pair matrices of the same images against the pair-based nulls: per null (in :data:`NULLS` order, those
    in ``groups``: ``{null: (N,) partner groups}``, e.g. :func:`~.nulls.pair_groups`), every matrix tested against it
    is prepared and all are evaluated on one draw of the within-group permutations.

    Returns ``{key: {null: comparison}}`` and the per-image values behind each comparison,
    ``{(key, null): PerImage}``. A matrix's numbers do not depend on the other matrices it is tested with.
    """
    compared: dict[K, dict[str, NullComparison]] = {key: {} for key in pairs}
    values: dict[tuple[K, str], PerImage] = {}
    for null in NULLS[1:]:
        keys = [key for key, p in pairs.items() if null in p.nulls and null in groups]
        prepared = [prepare(pairs[key].values, groups[null]) for key in keys]
        t_null = permutation_means(prepared, groups[null], n_permutations, seed) if keys else []
        for key, prep, tn in zip(keys, prepared, t_null, strict=True):
            compared[key][null] = _comparison(prep, tn, seed, pairs[key].statistic, null, n_permutations)
            values[key, null] = prep.per_image()
    return compared, values


@dataclass(frozen=True)
class ExcessDifference:
    """The mean per-image difference of two excesses over one null (model RoI minus a reference RoI).

    ``effect``: mean of excess_a - excess_b over the images both have, with a
    bootstrap 95% CI of the two-way influence values (both sides of each null,
    :func:`~.excess.influence`); ``p``: two-sided sign-flip p of that mean (the CI's estimand).
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
    each excess over the same partners (``groups``, e.g. same class); the per-image values are
    ``excess_influence(pairs_a, groups).minus(excess_influence(pairs_b, groups))`` (:meth:`PerImage.minus`).
    """
    pa, g = check_pairs(pairs_a, groups)
    pb, _ = check_pairs(pairs_b, groups)
    return difference_of(excess_influence(pa, g).minus(excess_influence(pb, g)), seed)


def difference_of(values: PerImage, seed: int = 0) -> ExcessDifference:
    """The mean of per-image differences (:meth:`PerImage.minus`) with its bootstrap CI and sign-flip p."""
    d = torch.from_numpy(values.values)
    return ExcessDifference(int(values.columns.size), bootstrap_mean_ci(d, seed), paired_p(d, seed=seed))


def excess_influence(pairs: torch.Tensor, groups: Any) -> PerImage:
    """The per-image values behind :func:`excess_test`'s mean excess and CI (for comparisons across runs on the
    same images, e.g. two models: image i's value is its own contribution to the run's effect)."""
    p, g = check_pairs(pairs, groups)
    return prepare(p, g).per_image()


__all__ = [
    "NullComparison", "Pairs", "compare_pairs", "compare_to_nulls", "difference_of", "excess_influence",
    "excess_test", "placement_comparison", "two_sided_permutation_p", "uniform_comparison",
]
