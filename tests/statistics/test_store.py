"""One store against its nulls and its references in one call: every number equals the separate engine calls'."""

from __future__ import annotations

import dataclasses
import doctest

import numpy as np
import pytest
import torch

from advspatial.errors import ConfigError, ShapeError
from advspatial.regions import binarize
from advspatial.regions.overlap import energy_in_roi, energy_in_roi_pairs
from advspatial.statistics import store as store_engine
from advspatial.statistics.excess import PerImage
from advspatial.statistics.inference import (
    ExcessDifference, NullComparison, compare_to_nulls, difference_of, excess_influence,
)
from advspatial.statistics.store import Store, StoreComparison, StoreValues, compare_store, reference_rois, store_values

PERMUTATIONS, SEED, STRATA = 300, 3, 2


def synthetic_store(n: int = 36, seed: int = 0) -> Store:
    """Attack maps that follow the importance map, three classes, ids that are not positions, one all-zero attack
    map (its energy is undefined: left out) and every image reference."""
    gen = torch.Generator().manual_seed(seed)
    imp = torch.rand(n, 8, 8, generator=gen)
    attack = imp ** 3 + 0.2 * torch.rand(n, 8, 8, generator=gen)
    attack[0] = 0.0
    ids = torch.arange(100, 100 + n)
    composition = torch.rand(n, generator=gen)
    references = {"centre": torch.rand(1, 8, 8, generator=gen).expand(n, 8, 8),
                  "intensity": torch.rand(n, 8, 8, generator=gen), "edges": torch.rand(n, 8, 8, generator=gen)}
    return Store(imp, attack, binarize(imp, sample_ids=ids).mask, binarize(attack, seed=1, sample_ids=ids).mask,
                 torch.arange(n) % 3, composition, ids, references)


def exact(value: object) -> str:
    """The repr of a result: floats print their shortest exact form, so equal reprs are bit-identical numbers
    (NaN included)."""
    return repr(value)


def same_values(a: PerImage, b: PerImage) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("columns", "values", "observed", "null"))


@pytest.fixture(scope="module")
def store() -> Store:
    return synthetic_store()


@pytest.fixture(scope="module")
def panel(store: Store) -> dict[str, torch.Tensor]:
    return {"top 10%": binarize(store.importance, fraction=0.1, sample_ids=store.ids).mask,
            "other map": binarize(store.references["intensity"], sample_ids=store.ids).mask}


@pytest.fixture(scope="module")
def result(store: Store, panel: dict[str, torch.Tensor]) -> StoreComparison:
    return compare_store(store, PERMUTATIONS, SEED, STRATA, panel=panel)


def test_the_result_is_typed_and_ordered(result: StoreComparison) -> None:
    assert isinstance(result.values, StoreValues) and isinstance(result.values.excess, PerImage)
    assert list(result.comparisons) == ["iou", "dice", "energy_in_roi", "pointing_game", "spearman", "pearson"]
    nulls = ["uniform", "any-class", "same-class", "object-conditioned"]
    assert all(list(by_null) == nulls for by_null in result.comparisons.values())
    references = ["class-layout", "dataset-layout", "centre", "intensity", "edges"]
    assert list(result.references) == list(result.beyond) == list(result.values.beyond) == references
    assert all(list(by_null) == nulls for by_null in result.references.values())
    assert all(isinstance(c, NullComparison) and c.statistic == "energy_in_roi"
               for by_null in result.references.values() for c in by_null.values())
    assert all(isinstance(d, ExcessDifference) for d in result.beyond.values())
    assert list(result.panel) == ["top 10%", "other map"]
    assert all((c.statistic, c.null) == ("energy_in_roi", "same-class") for c in result.panel.values())
    assert result.primary is result.comparisons["energy_in_roi"]["same-class"]
    assert result.primary.n == 35   # the all-zero attack map has no energy share


def test_every_statistic_equals_compare_to_nulls(store: Store, result: StoreComparison) -> None:
    """The model's placements are keyed by image position (compare_to_nulls' default ids)."""
    alone = compare_to_nulls(store.importance, store.attack, store.roi, store.roa, store.labels,
                             composition=store.composition, n_permutations=PERMUTATIONS, seed=SEED, strata=STRATA)
    assert exact(result.comparisons) == exact(alone)


def test_every_reference_equals_its_own_engine_call(store: Store, result: StoreComparison) -> None:
    """A reference RoI's row is compare_to_nulls on that RoI, its placements keyed by the store's ids."""
    for name, roi in reference_rois(store, SEED).items():
        alone = compare_to_nulls(store.importance, store.attack, roi, store.roa, store.labels,
                                 composition=store.composition, statistics=("energy_in_roi",),
                                 n_permutations=PERMUTATIONS, seed=SEED, strata=STRATA, sample_ids=store.ids)
        assert exact(result.references[name]) == exact(alone["energy_in_roi"]), name


def test_beyond_and_the_values_equal_the_separate_differences(store: Store,
                                                                result: StoreComparison) -> None:
    model = energy_in_roi_pairs(store.roi, store.attack)
    excess = excess_influence(model, store.labels)
    assert same_values(result.values.excess, excess)
    assert result.values.excess.values.mean() == pytest.approx(result.primary.excess.mean, abs=1e-12)
    own = energy_in_roi(store.attack, store.roi).double().numpy()
    for name, roi in reference_rois(store, SEED).items():
        inside = energy_in_roi(store.attack, roi).double().numpy()
        raw = result.values.beyond[name]
        # the paired difference of raw shares, RoI minus reference, per image (float32 shares vs float64 pairs)
        np.testing.assert_allclose(raw.values, (own - inside)[raw.columns], atol=1e-6)
        np.testing.assert_allclose(raw.observed - raw.null, raw.values, atol=1e-12)
        assert exact(result.beyond[name]) == exact(difference_of(raw, SEED))
        assert result.shares[name].mean == pytest.approx(np.nanmean(inside), abs=1e-6)
    assert result.shares["roi"].mean == pytest.approx(np.nanmean(own), abs=1e-6)
    assert all(same_values(a, b) for a, b in zip(store_values(store, SEED).beyond.values(),
                                                 result.values.beyond.values(), strict=True))
    assert same_values(store_values(store, SEED).excess, result.values.excess)


def test_every_panel_row_equals_its_own_engine_call(store: Store, panel: dict[str, torch.Tensor],
                                                    result: StoreComparison) -> None:
    for name, roi in panel.items():
        alone = compare_to_nulls(store.importance, store.attack, roi, store.roa, store.labels,
                                 statistics=("energy_in_roi",), n_permutations=PERMUTATIONS, seed=SEED,
                                 nulls=("same-class",))
        assert exact(result.panel[name]) == exact(alone["energy_in_roi"]["same-class"]), name


def test_a_store_whose_attack_follows_the_roi_beats_every_reference(result: StoreComparison) -> None:
    """The planted answer: the attack map is the importance map cubed, so the model's RoI catches more of it than a
    same-class image's RoI and than every model-free region of the same size."""
    assert result.primary.excess.low > 0 and result.primary.p < 0.01
    assert all(d.effect.low > 0 for d in result.beyond.values()), result.beyond


def test_reference_rois_have_the_model_rois_size(store: Store) -> None:
    counts = store.roi.flatten(1).sum(1)
    rois = reference_rois(store, SEED)
    assert all(torch.equal(roi.flatten(1).sum(1), counts) for roi in rois.values())


def test_without_references_or_informative_composition(store: Store) -> None:
    flat = dataclasses.replace(store, composition=torch.ones(store.labels.shape[0], dtype=torch.float64))
    result = compare_store(flat, 50, SEED, STRATA, statistics=("iou", "energy_in_roi"), references=False)
    assert list(result.comparisons) == ["iou", "energy_in_roi"]
    assert all("object-conditioned" not in by_null for by_null in result.comparisons.values())
    assert result.references == result.beyond == result.values.beyond == result.panel == {}
    assert list(result.shares) == ["roi"]
    assert result.values.excess.columns.size == result.primary.n


def test_bad_input_is_refused(store: Store) -> None:
    with pytest.raises(ConfigError, match="energy_in_roi"):
        compare_store(store, 50, SEED, STRATA, statistics=("iou",))
    with pytest.raises(ShapeError, match="panel RoI 'small'"):
        compare_store(store, 50, SEED, STRATA, panel={"small": store.roi[:, :4]})


def test_the_docstring_example_runs() -> None:
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(store_engine.compare_store, "compare_store", globs={}):
        runner.run(test)
    assert runner.summarize(verbose=False).attempted > 0 and runner.summarize(verbose=False).failed == 0


def test_a_difference_of_per_image_values_keeps_the_images_both_have() -> None:
    a = PerImage(np.array([0, 2, 3]), np.array([1.0, 2.0, 4.0]), np.array([5.0, 6.0, 7.0]), np.array([.5, .6, .7]))
    b = PerImage(np.array([2, 3, 4]), np.array([0.5, 1.0, 9.0]), np.zeros(3), np.zeros(3))
    d = a.minus(b)
    assert d.columns.tolist() == [2, 3] and d.values.tolist() == [1.5, 3.0]
    assert d.observed.tolist() == [6.0, 7.0] and d.null.tolist() == [.6, .7]


def test_a_store_selected_and_concatenated_keeps_every_field(store: Store) -> None:
    first, second = store.select(torch.arange(0, 10)), store.select(torch.arange(10, len(store)))
    again = Store.concatenated([first, second])
    assert len(first) == 10 and len(again) == len(store)
    for name in ("importance", "attack", "roi", "roa", "labels", "composition", "ids"):
        assert torch.equal(getattr(again, name), getattr(store, name))
    assert list(again.references) == list(store.references)
    assert all(torch.equal(again.references[r], store.references[r].contiguous()) for r in store.references)
