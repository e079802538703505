"""Co-location claims: the one-pixel test, composition, and the claim rows from the engine."""

from __future__ import annotations

import pytest
import torch

from advspatial.experiments import colocation
from advspatial.regions import binarize


def one_pixel_store(n: int, inside: int) -> dict[str, torch.Tensor]:
    """n images, RoI = the left half (8x4 of 8x8); the first ``inside`` attacked pixels land in it."""
    roi = torch.zeros(n, 8, 8, dtype=torch.bool)
    roi[:, :, :4] = True
    roa = torch.zeros(n, 8, 8, dtype=torch.bool)
    for i in range(n):
        roa[i, i % 8, 1 if i < inside else 6] = True
    return {"roi": roi, "roa": roa}


def test_pixel_claim_counts_hits_against_the_roi_share() -> None:
    all_in = colocation.pixel_claim(one_pixel_store(40, 40), "onepixel", {"RoI faithfulness": True}, seed=0)
    assert all_in.observed == 1.0 and all_in.null_value == pytest.approx(0.5) and all_in.p < 1e-6
    assert all_in.effect.low > 0 and all_in.primary
    half = colocation.pixel_claim(one_pixel_store(40, 20), "onepixel", {}, seed=0)
    assert half.observed == 0.5 and half.p == pytest.approx(1.0)
    none = colocation.pixel_claim(one_pixel_store(40, 0), "onepixel", {}, seed=0)
    assert none.effect.high < 0 and none.p < 1e-6


def test_composition_is_the_foreground_share() -> None:
    x = torch.zeros(2, 1, 4, 4)
    x[0, 0, :2] = 1.0
    assert colocation.composition(x).tolist() == [0.5, 0.0]


def test_attack_claims_mark_exactly_one_primary_row() -> None:
    gen = torch.Generator().manual_seed(0)
    imp = torch.rand(40, 8, 8, generator=gen)
    att = imp + 0.5 * torch.rand(40, 8, 8, generator=gen)  # co-located by construction
    ids = torch.arange(40)
    store = {"importance": imp, "attack": att, "roi": binarize(imp, sample_ids=ids).mask,
             "roa": binarize(att, seed=1, sample_ids=ids).mask, "labels": ids % 2,
             "composition": torch.rand(40, generator=gen)}
    comparisons = colocation.compare_store(store, permutations=500, seed=0, strata=2)
    claims = colocation.attack_claims("pgd", comparisons, {"RoI faithfulness": True}, primary=True)
    assert [c.primary for c in claims].count(True) == 1
    main = claims[0]
    assert (main.statistic, main.null) == ("energy_in_roi", "same-class")
    assert main.effect.low > 0  # the planted co-location is found
    assert not any(c.primary for c in colocation.attack_claims("pgd", comparisons, {}, primary=False))


def test_object_conditioned_null_only_where_composition_varies() -> None:
    assert colocation.informative(torch.tensor([0.1, 0.4, 0.4, 0.7]))
    assert not colocation.informative(torch.tensor([1.0, 1.0, 1.0, 0.9]))  # natural images: all "foreground"
    assert not colocation.informative(torch.zeros(0))


def test_max_normalized_maps_equal_up_to_scale() -> None:
    from advspatial.experiments.spatial.context import max_normalized

    maps = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(max_normalized(maps), max_normalized(7.5 * maps))
    assert not torch.allclose(max_normalized(maps), max_normalized(maps ** 2))
    assert torch.equal(max_normalized(torch.zeros(1, 2, 2)), torch.zeros(1, 2, 2))
