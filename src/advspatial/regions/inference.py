"""The statistics engine: effect sizes with confidence intervals, paired tests, corrections, verdicts.

Every experiment that makes a claim draws its numbers from here, so that one
claim means the same thing everywhere (METHODS.md §1, "Inference"):

- :func:`bootstrap_mean_ci` -- the mean of per-image values with a percentile
  bootstrap 95% CI over images (seeded, NaN left out);
- :func:`paired_p` -- two-sided Wilcoxon signed-rank p of paired per-image
  differences (exact for small n, normal approximation otherwise; SciPy);
- the hierarchy of nulls (:data:`NULLS`): ``uniform`` (analytic,
  :func:`uniform_null`), and three pair-based nulls whose per-image expectation
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
- :func:`verdict` (fixed rules, :data:`VERDICTS`) and :func:`describe` (one sentence);
- :func:`pixel_in_roi_test` -- exact Poisson-binomial test for one-pixel attacks;
- :func:`pool_to_scale` -- maps brought to a coarser resolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ShapeError, check_range, unknown_name

#: bootstrap resamples of every CI (percentile method)
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap confidence interval over ``n`` finite values."""

    mean: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        """True when the whole CI lies strictly above or strictly below 0."""
        return self.n > 0 and (self.low > 0 or self.high < 0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(values: Any) -> np.ndarray:
    arr = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    arr = arr.reshape(-1)
    return arr[np.isfinite(arr)]


def bootstrap_mean_ci(
    values: Any, seed: int = 0, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES
) -> Estimate:
    """Mean of the finite ``values`` with a percentile bootstrap CI (images resampled with replacement).

    NaN/inf values are left out (``n`` counts the rest). One value gives a
    zero-width interval; none gives NaN everywhere. The same seed gives the
    same interval.
    """
    check_range("level", level, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_range("resamples", resamples, 1)
    v = _finite(values)
    if v.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if v.size == 1:
        return Estimate(mean, mean, mean, 1)
    rng = np.random.default_rng(int(seed))
    idx = rng.integers(0, v.size, size=(int(resamples), v.size))
    means = v[idx].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Estimate(mean, float(low), float(high), int(v.size))


def paired_p(differences: Any) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (NaN left out).

    1.0 when every difference is 0 (nothing to test); NaN for fewer than one
    non-zero difference. Symmetric: negating the differences gives the same p.
    """
    from scipy.stats import wilcoxon

    d = _finite(differences)
    if d.size == 0:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


# -- groups of the pair-based nulls ----------------------------------------------------

#: the hierarchy of nulls, from the weakest (uniform placement) to the most matched
NULLS = ("uniform", "any-class", "same-class", "object-conditioned")

#: composition strata per class of the object-conditioned null (choice)
DEFAULT_STRATA = 4


def _as_groups(groups: Any, n: int | None = None, name: str = "groups") -> torch.Tensor:
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
    labels = _as_groups(labels, name="labels")
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
    labels = _as_groups(labels, name="labels")
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

def _check_pairs(pairs: torch.Tensor, groups: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(pairs, torch.Tensor) or pairs.ndim != 2 or pairs.shape[0] != pairs.shape[1]:
        raise ShapeError(f"pairs must be an (N,N) tensor, got {getattr(pairs, 'shape', type(pairs))}")
    return pairs.detach().cpu().double(), _as_groups(groups, pairs.shape[0])


def partner_null(pairs: torch.Tensor, groups: Any) -> torch.Tensor:
    """(N,) exact null of each image: the nan-mean of ``pairs[j, i]`` over partners j != i of its group.

    A uniformly random derangement within the group gives image i each of the
    other members as partner with the same probability, so this is exactly the
    expected value under that permutation null -- no sampling. NaN where image i
    has no partner or every partner value is NaN.
    """
    p, g = _check_pairs(pairs, groups)
    partner = (g[:, None] == g[None, :]) & ~torch.eye(g.shape[0], dtype=torch.bool)
    usable = partner & torch.isfinite(p)
    total = torch.where(usable, p, torch.zeros_like(p)).sum(0)
    count = usable.sum(0)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


def _hypergeometric_iou(r: int, q: int, pixels: int) -> float:
    """E[I / (r + q - I)] for I ~ Hypergeometric(P, r, q) (a random RoI of r pixels against an RoA of q)."""
    from scipy.stats import hypergeom

    if r + q == 0:
        return math.nan
    k = np.arange(max(0, r + q - pixels), min(r, q) + 1)
    pmf = hypergeom.pmf(k, pixels, r, q)
    return float(np.sum(pmf * k / (r + q - k)))


def uniform_null(roi_sizes: Any, roa_sizes: Any, pixels: int) -> dict[str, torch.Tensor]:
    """Per-image expectations (N,) of every statistic if the RoI were a uniformly random pixel set.

    With r = |RoI|, q = |RoA| and P pixels the intersection is Hypergeometric(P, r, q):
    IoU = E[I/(r+q-I)] (summed over the pmf, once per distinct (r, q)), Dice =
    2rq/(P(r+q)), energy_in_roi = pointing_game = r/P (a random r-subset holds
    r/P of any mass), spearman = pearson = 0. NaN where the statistic is undefined
    for both regions empty.
    """
    check_range("pixels", pixels, 1)
    r = torch.as_tensor(roi_sizes).cpu().long().reshape(-1)
    q = torch.as_tensor(roa_sizes).cpu().long().reshape(-1)
    if r.shape != q.shape:
        raise ShapeError(f"roi_sizes and roa_sizes must have one length, got {r.numel()} and {q.numel()}")
    if r.numel() and (int(r.min()) < 0 or int(q.min()) < 0 or int(r.max()) > pixels or int(q.max()) > pixels):
        raise ConfigError(f"region sizes must lie in [0, {pixels}]")
    cache: dict[tuple[int, int], float] = {}
    for key in zip(r.tolist(), q.tolist()):
        if key not in cache:
            cache[key] = _hypergeometric_iou(key[0], key[1], pixels)
    iou_values = [cache[key] for key in zip(r.tolist(), q.tolist())]
    rd, qd = r.double(), q.double()
    both = rd + qd
    share = rd / pixels
    return {
        "iou": torch.tensor(iou_values, dtype=torch.float64),
        "dice": torch.where(both > 0, 2 * rd * qd / (pixels * both.clamp_min(1)), torch.full_like(both, math.nan)),
        "energy_in_roi": share,
        "pointing_game": share.clone(),
        "spearman": torch.zeros_like(share),
        "pearson": torch.zeros_like(share),
    }


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
    g = _as_groups(groups)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
    labels = g.numpy()
    out = np.broadcast_to(np.arange(labels.shape[0]), (int(count), labels.shape[0])).copy()
    for value in np.unique(labels):
        idx = np.flatnonzero(labels == value)
        if idx.size >= 2:
            out[:, idx] = idx[rng.permuted(np.broadcast_to(np.arange(idx.size), (int(count), idx.size)), axis=1)]
    return torch.from_numpy(out)


# -- the comparison against one null ---------------------------------------------------------

#: permutations drawn and evaluated at once (memory: chunk x N gathered values)
_CHUNK = 1000


@dataclass(frozen=True)
class NullComparison:
    """One statistic against one null, over the ``n`` images that have both values.

    Attributes:
        statistic, null: names (``null`` one of :data:`NULLS`).
        n: images compared (finite observed value and a null value).
        observed, null_mean: their means over those images.
        excess: mean per-image excess observed - null with a bootstrap 95% CI.
        ratio: observed / null_mean (NaN when null_mean is 0).
        z: the mean excess in units of its null spread (permutation std of the mean
            for pair-based nulls; the standard error of the mean for the uniform null).
        p: two-sided p (permutation for pair-based nulls, Wilcoxon for the uniform one).
        n_permutations: permutations drawn (0 for the uniform null).
        null_std: the null spread z divides by (std of the mean excess over the
            permutations; the standard error of the mean excess for the uniform null).
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


def _ratio(observed: float, null_mean: float) -> float:
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
    ``partners`` (C,) the number of usable partners of each image.
    """

    block: np.ndarray
    has_nan: bool
    columns: np.ndarray
    null: np.ndarray
    excess: np.ndarray
    observed: np.ndarray
    partners: np.ndarray


def _prepare(pairs: torch.Tensor, groups: torch.Tensor) -> _Prepared:
    null = partner_null(pairs, groups).numpy()
    observed = pairs.diagonal().numpy()
    cols = np.flatnonzero(np.isfinite(observed) & np.isfinite(null))
    block = np.ascontiguousarray(pairs.numpy()[:, cols]).reshape(-1)
    g = groups.numpy()
    usable = (g[:, None] == g[None, cols]) & np.isfinite(pairs.numpy()[:, cols])
    partners = usable.sum(0) - 1  # the image itself is usable: its observed value is finite
    return _Prepared(block, bool(np.isnan(block).any()), cols, null[cols], observed[cols] - null[cols], observed[cols],
                     partners.astype(float))


def _permutation_means(
    prepared: list[_Prepared], groups: torch.Tensor, n_permutations: int, seed: int
) -> list[np.ndarray]:
    """(B,) mean excess recomputed on each within-group permutation of the RoIs, per prepared statistic.

    Permuting the RoIs (σ) and recomputing every image's excess gives, for image i
    with k_i usable partners, ``(( k_i + 1) · pairs[σ(i), i] − observed_i) / k_i − null_i``:
    the observed excess at σ = identity, mean exactly 0 over σ. For a group of two
    this is a sign flip of the excess. The same permutations serve every statistic.
    """
    gen = torch.Generator().manual_seed(int(seed))
    out: list[list[np.ndarray]] = [[] for _ in prepared]
    for start in range(0, int(n_permutations), _CHUNK):
        perms = permutations_within(groups, min(_CHUNK, int(n_permutations) - start), gen).numpy()
        for k, prep in enumerate(prepared):
            c = prep.columns.size
            if c == 0:
                out[k].append(np.full(perms.shape[0], np.nan))
                continue
            values = prep.block.take(perms[:, prep.columns] * c + np.arange(c))
            excess = ((prep.partners + 1) * values - prep.observed) / prep.partners - prep.null
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
    return NullComparison(statistic, null, n, observed, null_mean, bootstrap_mean_ci(prep.excess, seed),
                          _ratio(observed, null_mean), z, _two_sided_p(t, t_null), int(b), spread)


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
    p, g = _check_pairs(pairs, groups)
    prep = _prepare(p, g)
    t_null = _permutation_means([prep], g, n_permutations, seed)[0]
    return _comparison(prep, t_null, seed, statistic, null, n_permutations)


def uniform_comparison(
    observed: Any, expected: Any, seed: int = 0, *, statistic: str = "", null: str = "uniform"
) -> NullComparison:
    """Observed per-image values against per-image analytic expectations (the uniform null).

    Same fields as :func:`excess_test`, over images where both are finite; p is the
    two-sided Wilcoxon signed-rank p of observed - expected (:func:`paired_p`) and
    z = mean excess / its standard error.
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
                          _ratio(observed_mean, null_mean), z, paired_p(excess), 0, se)


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
) -> dict[str, dict[str, NullComparison]]:
    """Every statistic against every null (or the ``nulls`` named): ``result[statistic][null]``.

    The (N,N) pair matrices are built once (:func:`advspatial.regions.pairwise_statistics`);
    each pair-based null draws one set of permutations shared by all statistics.
    ``statistics`` defaults to all of ``STATISTICS``. The object-conditioned null
    needs ``composition`` (N,) (e.g. :func:`foreground_share` of the RoA); without
    it that null is left out of the result. Memory is O(N^2) per statistic.
    """
    from ._checks import _check_maps, _check_mask, _check_same
    from .overlap import STATISTICS, average_ranks, pairwise_statistics

    _check_maps(importance, "importance")
    _check_maps(attack, "attack")
    _check_mask(roi, "roi")
    _check_mask(roa, "roa")
    _check_same(importance.shape, attack=attack, roi=roi, roa=roa)
    names = tuple(STATISTICS if statistics is None else statistics)
    unknown = set(names) - set(STATISTICS)
    if unknown:
        raise unknown_name("statistic", sorted(unknown)[0], STATISTICS)
    check_range("n_permutations", n_permutations, 1)
    n = importance.shape[0]
    labels = _as_groups(labels, n, "labels")
    imp_rank, att_rank = average_ranks(importance.flatten(1)), average_ranks(attack.flatten(1))
    pairs = pairwise_statistics(importance, attack, roi, roa, imp_rank, att_rank)
    pairs = {s: pairs[s].detach().cpu().double() for s in names}
    pixels = int(roi[0].numel()) if n else 1
    expected = uniform_null(roi.flatten(1).sum(1), roa.flatten(1).sum(1), pixels)
    unknown_nulls = set(nulls) - set(NULLS)
    if unknown_nulls:
        raise unknown_name("null", sorted(unknown_nulls)[0], NULLS)
    out: dict[str, dict[str, NullComparison]] = {s: {} for s in names}
    if "uniform" in nulls:
        for s in names:
            out[s]["uniform"] = uniform_comparison(pairs[s].diagonal(), expected[s], seed, statistic=s)
    for null in NULLS[1:]:
        if null not in nulls or (null == "object-conditioned" and composition is None):
            continue
        groups = null_groups(null, labels, composition, strata)
        prepared = [_prepare(pairs[s], groups) for s in names]
        t_null = _permutation_means(prepared, groups, n_permutations, seed)
        for s, prep, tn in zip(names, prepared, t_null):
            out[s][null] = _comparison(prep, tn, seed, s, null, n_permutations)
    return out


# -- accuracies and paired accuracy differences -------------------------------------------------

#: sign-flip resamples of the paired test when the per-image scores are not all 0/1
SIGN_FLIPS = 20000


@dataclass(frozen=True)
class Proportion:
    """An accuracy ``k / n`` with its Wilson score 95% interval."""

    value: float
    low: float
    high: float
    k: int
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson_interval(k: int, n: int, level: float = 0.95) -> Proportion:
    """``k/n`` with the Wilson score interval (Wilson 1927); NaN for n = 0.

    Unlike the normal (Wald) interval it stays inside [0, 1] and has close to
    nominal coverage at accuracies near 0 or 1, where robust accuracies live.
    """
    from scipy.stats import norm

    check_range("level", level, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    if n < 0 or k < 0 or k > n:
        raise ConfigError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Proportion(math.nan, math.nan, math.nan, 0, 0)
    z = float(norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends: the float residue of centre - half is not a bound
    high = 1.0 if k == n else min(1.0, centre + half)
    return Proportion(p, low, high, int(k), int(n))


def accuracy(correct: Any, level: float = 0.95) -> Proportion:
    """Wilson-interval accuracy of per-image 0/1 outcomes (NaN left out)."""
    v = _finite(correct)
    if np.any((v != 0) & (v != 1)):
        raise ConfigError("accuracy needs 0/1 outcomes per image")
    return wilson_interval(int(v.sum()), int(v.size), level)


def mcnemar_p(a_correct: Any, b_correct: Any) -> float:
    """Exact two-sided McNemar p of paired 0/1 outcomes: a binomial test on the discordant pairs.

    Under H0 (the two classifiers are equally accurate on these images) each of
    the ``n01 + n10`` discordant images is equally likely to favour either, so
    p = P(|Bin(n01+n10, 1/2) - m/2| >= |n10 - m/2|). 1.0 without discordant pairs.
    """
    from scipy.stats import binomtest

    a, b = _paired_arrays(a_correct, b_correct)
    if np.any((a != 0) & (a != 1)) or np.any((b != 0) & (b != 1)):
        raise ConfigError("McNemar needs 0/1 outcomes per image")
    wins, losses = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue)


def _paired_arrays(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a_arr, b_arr = (np.asarray(v.detach().cpu().double() if isinstance(v, torch.Tensor) else v, float).reshape(-1)
                    for v in (a, b))
    if a_arr.shape != b_arr.shape:
        raise ShapeError(f"paired outcomes must have one value per image each, got {a_arr.shape} and {b_arr.shape}")
    keep = np.isfinite(a_arr) & np.isfinite(b_arr)
    return a_arr[keep], b_arr[keep]


def sign_flip_p(differences: Any, resamples: int = SIGN_FLIPS, seed: int = 0) -> float:
    """Two-sided paired randomization p of the mean difference: flip each image's sign at random.

    Under H0 the two conditions are exchangeable within an image, so each
    difference is as likely to have either sign. Monte Carlo with ``resamples``
    flips, p = (1 + #{|mean*| >= |mean|}) / (1 + resamples). 1.0 when every
    difference is 0.
    """
    d = _finite(differences)
    if d.size == 0:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    rng = np.random.default_rng(int(seed))
    observed = abs(d.mean())
    hits = 0
    for start in range(0, int(resamples), 2000):
        size = min(2000, int(resamples) - start)
        signs = rng.integers(0, 2, size=(size, d.size)) * 2 - 1
        hits += int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed - 1e-12))
    return (1 + hits) / (1 + int(resamples))


@dataclass(frozen=True)
class PairedAccuracy:
    """Accuracy of A minus accuracy of B on the same images: Δ with a bootstrap CI and a paired p.

    ``test`` names the p: ``mcnemar`` (exact, both outcomes 0/1) or
    ``sign-flip`` (a per-image score in [0,1] on one side, e.g. the mean over
    the draws of a random control; reduces to McNemar's statistic for 0/1).
    """

    a: float
    b: float
    delta: Estimate
    p: float
    test: str

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "delta": self.delta.as_dict(), "p": self.p, "test": self.test}


def paired_accuracy(a_scores: Any, b_scores: Any, seed: int = 0) -> PairedAccuracy:
    """Δ = mean(a) - mean(b) over images, paired: bootstrap CI of the per-image differences and a paired p.

    ``a_scores`` and ``b_scores`` are per-image correctness: 0/1, or a share
    in [0,1] (a randomized defence or control evaluated over several draws).
    The p is McNemar's exact test when both are 0/1, else the sign-flip test.
    """
    a, b = _paired_arrays(a_scores, b_scores)
    if np.any((a < 0) | (a > 1)) or np.any((b < 0) | (b > 1)):
        raise ConfigError("paired accuracies need per-image scores in [0, 1]")
    binary = bool(np.all((a == 0) | (a == 1)) and np.all((b == 0) | (b == 1)))
    p = mcnemar_p(a, b) if binary else sign_flip_p(a - b, seed=seed)
    return PairedAccuracy(float(a.mean()) if a.size else math.nan, float(b.mean()) if b.size else math.nan,
                          bootstrap_mean_ci(a - b, seed=seed), p, "mcnemar" if binary else "sign-flip")


# -- multiple comparisons ---------------------------------------------------------------------

def _adjust(pvalues: Any, step: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``step`` (ascending finite p-values -> adjusted, same order) and put the results back in place.

    NaN entries stay NaN and are not counted in the family; results are capped at 1.
    """
    p = np.asarray(pvalues, dtype=float)
    finite = np.isfinite(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ConfigError("p-values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    v = p[finite]
    if v.size:
        order = np.argsort(v, kind="stable")
        res = np.empty(v.size)
        res[order] = np.minimum(1.0, step(v[order]))
        out[finite] = res
    return out


def holm(pvalues: Any) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error); NaN entries stay NaN and are not counted.

    Sorted ascending, p_(k) becomes max_{j<=k} min(1, (m - j + 1) p_(j)).
    """
    return _adjust(pvalues, lambda v: np.maximum.accumulate((v.size - np.arange(v.size)) * v))


def benjamini_hochberg(pvalues: Any) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate); NaN entries stay NaN and are not counted.

    Sorted ascending, p_(k) becomes min_{j>=k} min(1, m p_(j) / j).
    """
    return _adjust(pvalues, lambda v: np.minimum.accumulate((v * v.size / np.arange(1, v.size + 1))[::-1])[::-1])


# -- verdicts -----------------------------------------------------------------------------------

VERDICTS = ("supported", "not supported", "reversed", "equivalent to null", "not interpretable", "insufficient data")

_CLAUSES = {
    "supported": "the attack co-locates with the RoI beyond chance",
    "reversed": "the attack avoids the RoI more than chance",
    "equivalent to null": "co-location is at chance level (the CI lies within the smallest effect of interest)",
    "not supported": "no clear difference from chance",
    "not interpretable": "a validity gate failed, so this says nothing about the model",
    "insufficient data": "too few images to judge",
}


def verdict(
    effect: Estimate, p_adjusted: float, gates: Mapping[str, bool], sesoi: float,
    alpha: float = 0.05, min_n: int = 30,
) -> str:
    """One of :data:`VERDICTS` by fixed rules, checked in this order.

    A failed gate -> "not interpretable"; fewer than ``min_n`` images ->
    "insufficient data"; adjusted p < alpha with the CI above 0 -> "supported",
    below 0 -> "reversed"; CI inside [-sesoi, +sesoi] -> "equivalent to null";
    anything else -> "not supported".
    """
    check_range("sesoi", sesoi, 0.0)
    check_range("alpha", alpha, 0.0, 1.0)
    if not all(bool(ok) for ok in gates.values()):
        return "not interpretable"
    if effect.n < min_n:
        return "insufficient data"
    significant = p_adjusted < alpha  # False for NaN
    if significant and effect.low > 0:
        return "supported"
    if significant and effect.high < 0:
        return "reversed"
    if -sesoi <= effect.low and effect.high <= sesoi:
        return "equivalent to null"
    return "not supported"


def describe(comparison: NullComparison, verdict: str, p_adjusted: float | None = None) -> str:
    """One plain sentence: observed vs the null, the excess with its CI and z, then what it means.

    E.g. "iou: observed 0.107 is below the any-class null 0.116 (excess -0.009
    [-0.011, -0.007], z = -7.1, p = 0.0001, n = 1000): the attack avoids the RoI
    more than chance". A p-value appears only beside the effect, never alone
    (``p_adj`` when ``p_adjusted`` is given). Observed and null get as many
    significant digits (3 to 6) as it takes to tell them apart.
    """
    if verdict not in VERDICTS:
        raise unknown_name("verdict", verdict, VERDICTS)
    c = comparison
    e = c.excess
    side = "above" if c.observed > c.null_mean else "below" if c.observed < c.null_mean else "equal to"
    obs, null = _distinct(c.observed, c.null_mean)
    p_text = f"p_adj = {p_adjusted:.2g}" if p_adjusted is not None else f"p = {c.p:.2g}"
    name = f"{c.statistic}: " if c.statistic else ""
    return (f"{name}observed {obs} is {side} the {c.null or 'chance'} null {null} "
            f"(excess {e.mean:+.2g} [{e.low:+.2g}, {e.high:+.2g}], z = {c.z:.1f}, {p_text}, n = {c.n}): "
            f"{_CLAUSES[verdict]}")


def _distinct(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` with the fewest significant digits (3..6) that make them differ."""
    for digits in range(3, 7):
        sa, sb = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if sa != sb:
            break
    return sa, sb


# -- one-pixel RoA -------------------------------------------------------------------------------

def poisson_binomial_pmf(probabilities: Any) -> np.ndarray:
    """(N+1,) pmf of the number of successes of independent Bernoulli(p_i) trials (DP convolution)."""
    probs = np.asarray(probabilities, dtype=float).reshape(-1)
    if np.any(~np.isfinite(probs)) or np.any((probs < 0) | (probs > 1)):
        raise ConfigError("probabilities must lie in [0, 1]")
    pmf = np.zeros(probs.size + 1)
    pmf[0] = 1.0
    for k, p in enumerate(probs):
        pmf[1:k + 2] = pmf[1:k + 2] * (1 - p) + pmf[:k + 1] * p
        pmf[0] *= 1 - p
    return pmf


def pixel_in_roi_test(hits: Any, roi_share: Any, seed: int = 0) -> dict[str, Any]:
    """Exact test of how many one-pixel attacks land in the RoI, against per-image chance.

    Image i's pixel lies in its RoI with chance ``roi_share[i]`` (|RoI|/P) if placed
    at random, so the count is Poisson-binomial under the null. Two-sided p = sum of
    the pmf values <= pmf(observed) * (1 + 1e-7) (the rule of ``scipy.stats.binomtest``).
    Images with a non-finite share are left out. Returns observed and expected
    counts, their ratio, p, n and ``excess`` = mean(hit - share) with a bootstrap CI.
    """
    h = torch.as_tensor(hits).detach().cpu().reshape(-1)
    share = torch.as_tensor(roi_share).detach().cpu().double().reshape(-1)
    if h.dtype != torch.bool or h.shape != share.shape:
        raise ShapeError(f"hits must be an (N,) bool tensor and roi_share (N,), got {tuple(h.shape)} {h.dtype} "
                         f"and {tuple(share.shape)}")
    keep = torch.isfinite(share)
    h, share = h[keep].double().numpy(), share[keep].numpy()
    pmf = poisson_binomial_pmf(share)
    observed = int(h.sum())
    expected = float(share.sum())
    p = float(min(1.0, pmf[pmf <= pmf[observed] * (1 + 1e-7)].sum())) if h.size else math.nan
    return {"observed": observed, "expected": expected, "ratio": _ratio(float(observed), expected), "p": p,
            "n": int(h.size), "excess": bootstrap_mean_ci(h - share, seed)}


# -- resolution ------------------------------------------------------------------------------------

def pool_to_scale(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N,h,w) adaptive average pooling of (N,H,W) maps, e.g. an RoA brought to the CAM's resolution."""
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
        raise ShapeError(f"maps must be an (N,H,W) tensor, got {getattr(maps, 'shape', type(maps))}")
    h, w = (int(s) for s in size)
    if h < 1 or w < 1 or h > maps.shape[1] or w > maps.shape[2]:
        raise ConfigError(f"size must lie in [1, {maps.shape[1]}] x [1, {maps.shape[2]}], got {tuple(size)}")
    values = maps if maps.is_floating_point() else maps.float()
    return torch.nn.functional.adaptive_avg_pool2d(values[:, None], (h, w))[:, 0]
