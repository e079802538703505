"""Co-location claims: the one-pixel test, composition, and the claim rows from the engine."""

from __future__ import annotations

import math

import pytest
import torch

from advspatial.experiments.measurement import colocation
from advspatial.statistics.store import Store, compare_store, informative
from advspatial.regions import binarize


def one_pixel_store(n: int, inside: int) -> Store:
    """n images, RoI = the left half (8x4 of 8x8); the first ``inside`` attacked pixels land in it."""
    roi = torch.zeros(n, 8, 8, dtype=torch.bool)
    roi[:, :, :4] = True
    roa = torch.zeros(n, 8, 8, dtype=torch.bool)
    for i in range(n):
        roa[i, i % 8, 1 if i < inside else 6] = True
    return Store(roi.float() + 0.01, roa.float(), roi, roa, torch.arange(n) % 2, torch.zeros(n), torch.arange(n))


def test_pixel_claims_judge_against_the_same_class_partner_first() -> None:
    """Every RoI is the left half and every pixel lands in it: far above uniform placement, but a same-class
    image's RoI catches the pixel just as well -- pure layout, no image-specific co-location."""
    claims = colocation.pixel_claims(one_pixel_store(40, 40), "onepixel", {"RoI faithfulness": True}, 500, seed=0)
    primary, uniform = claims
    assert primary.primary and not uniform.primary
    assert (primary.null, uniform.null) == ("same-class", "uniform")
    assert primary.statistic == uniform.statistic == "attacked pixel in RoI"
    assert primary.observed == 1.0 and primary.null_value == pytest.approx(1.0)
    assert primary.effect.mean == pytest.approx(0.0) and primary.p == pytest.approx(1.0)
    assert uniform.null_value == pytest.approx(0.5) and uniform.effect.low > 0 and uniform.p < 0.01


def test_pixel_claims_find_image_specific_hits() -> None:
    """Each image's RoI is its own random quarter and the pixel lands in it: the partner null is near 1/4."""
    gen = torch.Generator().manual_seed(3)
    n = 60
    imp = torch.rand(n, 8, 8, generator=gen)
    roi = binarize(imp, fraction=0.25, sample_ids=torch.arange(n)).mask
    roa = torch.zeros_like(roi)
    for i in range(n):
        where = roi[i].flatten().nonzero()[0]
        roa[i].view(-1)[where] = True
    store = Store(imp, roa.float(), roi, roa, torch.arange(n) % 3, torch.zeros(n), torch.arange(n))
    primary, _ = colocation.pixel_claims(store, "onepixel", {}, 500, seed=0)
    assert primary.observed == 1.0 and primary.null_value < 0.4 and primary.effect.low > 0.5 and primary.p < 0.01


def _content_store(n: int = 60, edge_driven: bool = False, seed: int = 0) -> Store:
    """Images whose attack map follows either the model's RoI (image-specific) or the image's edge map."""
    gen = torch.Generator().manual_seed(seed)
    imp = torch.rand(n, 8, 8, generator=gen)
    edges = torch.rand(n, 8, 8, generator=gen)
    driver = edges if edge_driven else imp
    attack = driver ** 4 + 0.05 * torch.rand(n, 8, 8, generator=gen)
    ids = torch.arange(n)
    composition = torch.rand(n, generator=gen)
    references = {"edges": edges, "intensity": torch.rand(n, 8, 8, generator=gen),
                  "centre": torch.rand(1, 8, 8).expand(n, 8, 8)}
    return Store(imp, attack, binarize(imp, sample_ids=ids).mask, binarize(attack, seed=1, sample_ids=ids).mask,
                 ids % 3, composition, ids, references)


@pytest.mark.parametrize("edge_driven", [False, True])
def test_the_headline_claim_is_an_intersection_union_test_over_raw_shares(edge_driven: bool) -> None:
    from advspatial.experiments.measurement.decomposition import decompose, headline_sentence
    from advspatial.statistics.claims import judge

    store = _content_store(edge_driven=edge_driven)
    result = compare_store(store, permutations=300, seed=0, strata=2)
    assert list(result.beyond) == ["class-layout", "dataset-layout", "centre", "intensity", "edges"]
    parts = decompose("pgd", "contribution", result, 0.2, 1.0, 0)
    claim = colocation.headline_claim("pgd", result, parts, {"RoI faithfulness": True})
    assert claim.primary
    assert claim.p == max([d.p for d in result.beyond.values()] + [result.primary.p])
    assert claim.effect.low == min(r.difference.low for r in parts.rows)   # the weakest row
    assert claim.observed - claim.null_value == pytest.approx(claim.effect.mean, abs=1e-12)
    judge([claim])
    sentence = headline_sentence(parts)
    if edge_driven:   # the attack follows the edges: the edges catch more of it than the model's RoI
        assert result.beyond["edges"].effect.high < 0
        assert claim.verdict != "supported" and "weakest: the image's strongest edges" in claim.null
        assert "the image's strongest edges catch more" in sentence and "beyond layout" not in sentence
    else:
        assert all(d.effect.low > 0 for d in result.beyond.values()), result.beyond
        assert claim.verdict == "supported" and "beyond layout and image content" in sentence


def test_the_quoted_row_is_named_weakest_not_closest_when_another_region_catches_more() -> None:
    """The rows of CW-L2 on the default CNN (500 images): the class-layout region catches decidedly more than the RoI
    (Δ -0.015 [-0.025, -0.005]), the brightest pixels undecidedly (Δ -0.010 [-0.029, +0.008]). The claim quotes the
    lower bound, the brightest pixels, which is not the region closest to the RoI's share: the label says
    "weakest" (the rule's word), not "closest"."""
    import dataclasses

    from advspatial.experiments.measurement.decomposition import decompose
    from advspatial.statistics.outcomes import DOES_LESS, UNDECIDED

    store = _content_store()
    result = compare_store(store, permutations=100, seed=0, strata=2)
    parts = decompose("cw-l2", "contribution", result, 0.2, 1.0, 0)
    beaten = {"class-layout": (-0.015, -0.025, -0.005, DOES_LESS), "intensity": (-0.010, -0.029, 0.008, UNDECIDED)}

    def shifted(row):  # type: ignore[no-untyped-def]
        if row.region not in beaten:
            return row
        mean, low, high, outcome = beaten[row.region]
        return dataclasses.replace(row, difference=dataclasses.replace(
            row.difference, outcome=outcome, mean=mean, low=low, high=high, low90=low + 0.003, high90=high - 0.003,
            margin=0.019, within_margin=False))

    parts = dataclasses.replace(parts, rows=tuple(shifted(r) for r in parts.rows))
    claim = colocation.headline_claim("cw-l2", result, parts, {"RoI faithfulness": True})
    assert (claim.effect.mean, claim.effect.low) == (-0.010, -0.029)
    assert claim.null == "every region of the same size; weakest: the image's brightest pixels"
    assert "closest" not in claim.null_words()
    layout, brightest = parts.row("class-layout"), parts.row("intensity")
    assert layout is not None and brightest is not None
    assert layout.difference.mean < brightest.difference.mean   # the class layout is nearer (beyond) the RoI's share


def test_a_region_no_image_entered_is_named_undecidable_not_weakest_and_prints_no_nan() -> None:
    """Images of distinct classes have no same-class partner: that row has no estimate, so the claim names it as
    the row that keeps it undecided, and its terminal line says "no estimate" where it printed +nan."""
    import dataclasses

    from advspatial.experiments.measurement.decomposition import decompose
    from advspatial.statistics.estimates import interval_text

    store = dataclasses.replace(_content_store(n=12), labels=torch.arange(12))  # every image its own class
    result = compare_store(store, permutations=100, seed=0, strata=2)
    parts = decompose("pgd", "contribution", result, 0.2, 1.0, 0)
    claim = colocation.headline_claim("pgd", result, parts, {"RoI faithfulness": True})
    assert claim.effect.n == 0 and math.isnan(claim.effect.mean)
    assert claim.null == "every region of the same size; undecidable here: a same-class image's RoI"
    e = claim.effect
    assert interval_text(e.mean, e.low, e.high) == "no estimate"


def test_a_fixed_region_that_catches_as_much_is_never_beaten() -> None:
    """A region that is the same in every image has an excess of 0 over any null: compared on raw shares, a centre
    that catches as much of the attack as the RoI keeps the claim from "supported" and the sentence says where
    the attack acts."""
    from advspatial.experiments.measurement.decomposition import decompose, headline_sentence
    from advspatial.statistics.claims import judge

    gen = torch.Generator().manual_seed(3)
    n = 120
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    centre = torch.exp(-((yy - 3.5) ** 2 + (xx - 3.5) ** 2) / 6).expand(n, 8, 8)
    imp = centre + 0.02 * torch.rand(n, 8, 8, generator=gen)            # the model looks at the centre
    attack = centre ** 2 + 0.01 * torch.rand(n, 8, 8, generator=gen)    # and so does the attack
    ids = torch.arange(n)
    composition = torch.rand(n, generator=gen)
    references = {"centre": centre, "edges": torch.rand(n, 8, 8, generator=gen),
                  "intensity": torch.rand(n, 8, 8, generator=gen)}
    store = Store(imp, attack, binarize(imp, sample_ids=ids).mask, binarize(attack, seed=1, sample_ids=ids).mask,
                  ids % 3, composition, ids, references)
    result = compare_store(store, permutations=200, seed=0, strata=2)
    parts = decompose("pgd", "contribution", result, 0.2, 1.0, 0)
    claim = colocation.headline_claim("pgd", result, parts, {"RoI faithfulness": True})
    judge([claim])
    assert claim.verdict != "supported"
    sentence = headline_sentence(parts)
    assert "region of the same size catches as much" in sentence and "beyond layout" not in sentence
    assert ", where the model also looks" in sentence


def test_composition_is_the_foreground_share() -> None:
    x = torch.zeros(2, 1, 4, 4)
    x[0, 0, :2] = 1.0
    assert colocation.composition(x).tolist() == [0.5, 0.0]


def test_attack_claims_mark_exactly_one_primary_row() -> None:
    gen = torch.Generator().manual_seed(0)
    imp = torch.rand(40, 8, 8, generator=gen)
    att = imp + 0.5 * torch.rand(40, 8, 8, generator=gen)  # co-located by construction
    ids = torch.arange(40)
    store = Store(imp, att, binarize(imp, sample_ids=ids).mask, binarize(att, seed=1, sample_ids=ids).mask, ids % 2,
                  torch.rand(40, generator=gen))
    comparisons = compare_store(store, permutations=500, seed=0, strata=2).comparisons
    claims = colocation.attack_claims("pgd", comparisons, {"RoI faithfulness": True}, primary=True)
    assert [c.primary for c in claims].count(True) == 1   # the API still marks one row when asked
    main = claims[0]
    assert (main.statistic, main.null) == ("energy_in_roi", "same-class")
    assert main.effect.low > 0  # the planted co-location is found
    assert not any(c.primary for c in colocation.attack_claims("pgd", comparisons, {}, primary=False))


def test_object_conditioned_null_only_where_composition_varies() -> None:
    assert informative(torch.tensor([0.1, 0.4, 0.4, 0.7]))
    assert not informative(torch.tensor([1.0, 1.0, 1.0, 0.9]))  # natural images: all "foreground"
    assert not informative(torch.zeros(0))


def test_max_normalized_maps_equal_up_to_scale() -> None:
    from advspatial.experiments.measurement.stages import max_normalized

    maps = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(max_normalized(maps), max_normalized(7.5 * maps))
    assert not torch.allclose(max_normalized(maps), max_normalized(maps ** 2))
    assert torch.equal(max_normalized(torch.zeros(1, 2, 2)), torch.zeros(1, 2, 2))
