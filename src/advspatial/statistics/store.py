"""One store against its nulls and its references, in one call: the engine's entry point for an experiment's kept
images (:func:`compare_store`).

A *store* (:class:`Store`) is what an experiment keeps of the successful images of one attack map, as (N, ...)
tensors: ``importance``, ``attack`` (maps), ``roi``, ``roa`` (their regions), ``labels``, ``composition`` (the
foreground share the object-conditioned null matches partners on), and where kept ``ids`` (global sample ids), the
image references by name (``references``: ``centre``, ``intensity``, ``edges``) and other explainers' maps by name
(``panel``). From it the engine computes, once:

- every statistic against every null (:func:`~.inference.compare_to_nulls`'s comparisons);
- the model-free **reference RoIs** (:func:`reference_rois`) against the same nulls, on the primary statistic;
- the **decomposition**: per image, the share of the attack map inside the model's RoI and inside each reference
  region of the same pixel count (:attr:`StoreComparison.shares`), and per reference the paired difference of the
  raw shares, RoI minus reference (:class:`~.inference.ExcessDifference`), with the per-image values behind them (a
  study pools those). A region that is the same in every image (the centre) has an excess of 0 over any null by
  construction, so only the raw shares can say whether the RoI catches more of the attack than it does;
- optionally the primary statistic under other RoIs of the same attack maps (an explainer-sensitivity panel),
  against the same-class null.

Inside, the groups of every pair-based null are made once and each null's permutations are drawn once for every
statistic, reference and panel RoI; the placements of the uniform null once for the model's RoIs and once for
the references'. Each number equals what the separate engine calls give on the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError, check_range
from ..regions import STATISTICS
from ..regions.checks import check_mask, check_same_shape
from ..regions.overlap import energy_in_roi_pairs
from ..regions.references import REFERENCE_MAPS, LayoutSums, top_count_masks
from .estimates import Estimate, bootstrap_mean_ci, finite_values
from .excess import PerImage
from .inference import (
    ExcessDifference, NullComparison, Pairs, compare_pairs, difference_of, excess_influence, placement_comparison_of,
    statistic_pairs,
)
from .nulls import as_groups, null_groups, pair_groups
from .placement import check_sample_ids, energy_placement_table, placement_shifts

#: the statistic of the primary claim, of the references and of the panel
PRIMARY_STATISTIC = "energy_in_roi"
#: the null the primary claim, the beyond-reference differences and the panel are measured against
PRIMARY_NULL = "same-class"


def informative(composition: torch.Tensor) -> bool:
    """Can partners be matched on this composition? Not when most images share one value.

    On natural images nearly every pixel is "foreground" (share 1.0 for most
    CIFAR-10 images), so strata would split tied images by their order: the
    object-conditioned null is then left out rather than reported as if matched.
    """
    if composition.numel() == 0:
        return False
    _, counts = torch.unique(composition, return_counts=True)
    return int(counts.max()) <= composition.numel() // 2


@dataclass(frozen=True)
class Store:
    """The kept images of one attack map, each field (N, ...) (the module docstring says what each holds).

    ``ids``: global sample ids, where kept; ``references``: the image reference maps by name (``centre``,
    ``intensity``, ``edges``), where kept; ``panel``: other explainers' maps by method, where kept.
    """

    importance: torch.Tensor
    attack: torch.Tensor
    roi: torch.Tensor
    roa: torch.Tensor
    labels: torch.Tensor
    composition: torch.Tensor
    ids: torch.Tensor | None = None
    references: Mapping[str, torch.Tensor] = field(default_factory=dict)
    panel: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, index: torch.Tensor) -> Store:
        """The images at ``index``, every tensor on the CPU."""

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t[index].cpu()

        return Store(pick(self.importance), pick(self.attack), pick(self.roi), pick(self.roa), pick(self.labels),
                     pick(self.composition), None if self.ids is None else pick(self.ids),
                     {k: pick(v) for k, v in self.references.items()}, {k: pick(v) for k, v in self.panel.items()})

    @staticmethod
    def concatenated(parts: Sequence[Store]) -> Store:
        """The stores one after the other (e.g. the kept images of every batch; at least one)."""
        first = parts[0]

        def cat(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
            return torch.cat(list(tensors))

        return Store(cat(p.importance for p in parts), cat(p.attack for p in parts), cat(p.roi for p in parts),
                     cat(p.roa for p in parts), cat(p.labels for p in parts), cat(p.composition for p in parts),
                     None if first.ids is None else cat(_ids_of(p) for p in parts),
                     {k: cat(p.references[k] for p in parts) for k in first.references},
                     {k: cat(p.panel[k] for p in parts) for k in first.panel})


def _ids_of(store: Store) -> torch.Tensor:
    """A part's ids (every part of a concatenation keeps them when the first does)."""
    if store.ids is None:
        raise ValueError("stores to concatenate keep ids in some parts only")
    return store.ids


def reference_rois(store: Store, seed: int) -> dict[str, torch.Tensor]:
    """{reference: RoI} for the kept images: RoIs of exactly the model RoI's pixel count per image.

    The image references (centre, intensity, edges) come from the store (:attr:`Store.references`, kept by the
    experiment); the class and dataset layouts are the mean RoI maps of the *other* kept images.
    """
    imp, labels, ids = store.importance, store.labels, store.ids
    counts = store.roi.flatten(1).sum(1)
    sums = LayoutSums()
    sums.add(imp, labels)
    class_layout, dataset_layout = sums.leave_one_out(imp, labels)
    maps = {"class-layout": class_layout, "dataset-layout": dataset_layout,
            **{r: store.references[r] for r in REFERENCE_MAPS if r in store.references}}
    return top_count_masks({name: maps[name].to(imp.dtype) for name in REFERENCE_MAPS if name in maps}, counts, seed,
                           ids)


@dataclass(frozen=True)
class StoreValues:
    """The per-image values behind a store's primary endpoints (a study compares them across models).

    ``excess``: the primary statistic's excess over the same-class null (its mean and CI are that comparison's: the
    image-specific part, this image's RoI against same-class partners' RoIs);
    ``beyond``: per reference, the share of the attack map inside the model's RoI minus the share inside the
    reference region, paired per image (``observed``: the RoI's share, ``null``: the reference's; their means are
    :attr:`StoreComparison.beyond`).
    """

    excess: PerImage
    beyond: dict[str, PerImage]


@dataclass(frozen=True)
class StoreComparison:
    """A store against its nulls and its references (:func:`compare_store`).

    Attributes:
        comparisons: ``{statistic: {null: comparison}}``, the nulls in :data:`~.nulls.NULLS` order.
        references: ``{reference: {null: comparison}}`` of the primary statistic ({} without references).
        beyond: ``{reference: the RoI's share of the attack map minus the reference region's}``, paired per image.
        shares: the mean share of the attack map inside each region with its 95% CI: ``"roi"`` (the model's RoI)
            and every reference ({"roi": ...} alone without references).
        values: the per-image values behind ``comparisons``' primary row and ``beyond``.
        panel: ``{name: comparison}`` of the primary statistic with each panel RoI, against the same-class null.
    """

    comparisons: dict[str, dict[str, NullComparison]]
    references: dict[str, dict[str, NullComparison]]
    beyond: dict[str, ExcessDifference]
    shares: dict[str, Estimate]
    values: StoreValues
    panel: dict[str, NullComparison]

    @property
    def primary(self) -> NullComparison:
        """The primary statistic against the same-class null (the plain co-location endpoint)."""
        return self.comparisons[PRIMARY_STATISTIC][PRIMARY_NULL]


def compare_store(store: Store, permutations: int, seed: int, strata: int,
                  statistics: Sequence[str] = STATISTICS, *, references: bool = True,
                  panel: Mapping[str, torch.Tensor] | None = None) -> StoreComparison:
    """Every statistic x null for the kept images of one attack map, the reference RoIs' comparisons and the
    differences beyond them, in one call (needs >= 3 images).

    ``statistics`` must include the primary statistic (``energy_in_roi``). The object-conditioned null is
    computed only where the composition is :func:`informative`. ``references=False`` leaves the references out
    (``references``, ``beyond`` and ``values.beyond`` are then empty). ``panel`` names other (N,H,W) RoIs of the
    same attack maps. The model's RoIs are placed at shifts keyed by image position, the references' by the
    store's ``ids`` (when kept); every test uses ``seed``.

    Examples:
        >>> import torch
        >>> from advspatial.regions import binarize
        >>> from advspatial.statistics.store import Store, compare_store
        >>> gen = torch.Generator().manual_seed(0)
        >>> importance = torch.rand(12, 8, 8, generator=gen)
        >>> attack = importance + 0.1 * torch.rand(12, 8, 8, generator=gen)
        >>> store = Store(importance, attack, roi=binarize(importance).mask, roa=binarize(attack, seed=1).mask,
        ...               labels=torch.arange(12) % 2, composition=torch.rand(12, generator=gen))
        >>> result = compare_store(store, permutations=200, seed=0, strata=2)
        >>> list(result.comparisons["energy_in_roi"])
        ['uniform', 'any-class', 'same-class', 'object-conditioned']
        >>> list(result.beyond) == ['class-layout', 'dataset-layout']
        True
        >>> result.primary.excess.mean > 0
        True
    """
    check_range("permutations", permutations, 1)
    names = tuple(statistics)
    if PRIMARY_STATISTIC not in names:
        raise ConfigError(f"statistics must include {PRIMARY_STATISTIC!r}: the references and the differences "
                          f"beyond them are measured on it, got {names}")
    attack, roi = store.attack, store.roi
    model, tables = statistic_pairs(store.importance, attack, roi, store.roa, names, placements=True)
    n, pixels = roi.shape[0], int(roi[0].numel())
    composition = store.composition if informative(store.composition) else None
    groups = pair_groups(as_groups(store.labels, n, "labels"), composition, strata)
    rois = reference_rois(store, seed) if references else {}
    panel = dict(panel or {})
    for name, other in panel.items():
        check_mask(other, f"panel RoI {name!r}")
        check_same_shape(roi.shape, **{f"panel RoI {name!r}": other})
    tested = {("statistic", s): Pairs(s, model[s], tuple(groups)) for s in names}
    tested |= {("reference", r): Pairs(PRIMARY_STATISTIC, _energy_pairs(other, attack), tuple(groups))
               for r, other in rois.items()}
    tested |= {("panel", p): Pairs(PRIMARY_STATISTIC, _energy_pairs(other, attack), (PRIMARY_NULL,))
               for p, other in panel.items()}
    compared, per_image = compare_pairs(tested, groups, permutations, seed)
    shifts = placement_shifts(torch.arange(n), permutations, pixels, seed)
    comparisons = {s: {"uniform": placement_comparison_of(tables[s], shifts, seed, s), **compared["statistic", s]}
                   for s in names}
    shifts = placement_shifts(check_sample_ids(store.ids, n), permutations, pixels, seed)
    rows = {r: {"uniform": placement_comparison_of(energy_placement_table(attack, other), shifts, seed,
                                                   PRIMARY_STATISTIC), **compared["reference", r]}
            for r, other in rois.items()}
    excess = per_image[("statistic", PRIMARY_STATISTIC), PRIMARY_NULL]
    own = _diagonal(model[PRIMARY_STATISTIC])
    inside = {r: _diagonal(tested["reference", r].values) for r in rois}
    values = StoreValues(excess, {r: share_difference(own, other) for r, other in inside.items()})
    shares = {"roi": bootstrap_mean_ci(finite_values(own), seed),
              **{r: bootstrap_mean_ci(finite_values(other), seed) for r, other in inside.items()}}
    return StoreComparison(comparisons, rows, {r: difference_of(v, seed) for r, v in values.beyond.items()}, shares,
                           values, {p: compared["panel", p][PRIMARY_NULL] for p in panel})


def store_values(store: Store, seed: int) -> StoreValues:
    """Only the per-image values of :func:`compare_store` (no test is run): what a study keeps of a store."""
    groups = null_groups(PRIMARY_NULL, store.labels)
    pairs = _energy_pairs(store.roi, store.attack)
    own = _diagonal(pairs)
    return StoreValues(excess_influence(pairs, groups),
                       {r: share_difference(own, _diagonal(_energy_pairs(other, store.attack)))
                        for r, other in reference_rois(store, seed).items()})


def share_difference(own: np.ndarray, other: np.ndarray) -> PerImage:
    """Per image, the share of the attack map inside the model's RoI (``own``) minus the share inside another
    region of the same size (``other``), on the images where both are finite: a paired difference of raw shares
    (``observed``: the RoI's share, ``null``: the other region's)."""
    cols = np.flatnonzero(np.isfinite(own) & np.isfinite(other))
    return PerImage(cols, own[cols] - other[cols], own[cols], other[cols])


def _diagonal(pairs: torch.Tensor) -> np.ndarray:
    """(N,) float64 statistic of each image's own region with its own attack map (a pair matrix's diagonal)."""
    return pairs.diagonal().double().cpu().numpy().copy()


def _energy_pairs(roi: torch.Tensor, attack: torch.Tensor) -> torch.Tensor:
    """(N,N) float64 CPU energy in RoI j of attack map i (the engine's form of the pair matrix)."""
    return energy_in_roi_pairs(roi, attack).detach().cpu().double()


__all__ = ["PRIMARY_NULL", "PRIMARY_STATISTIC", "Store", "StoreComparison", "StoreValues", "compare_store",
           "informative", "reference_rois", "share_difference", "store_values"]
