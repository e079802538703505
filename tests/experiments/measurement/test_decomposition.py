"""The headline's decomposition: every sentence it prints agrees with the numbers it quotes."""

from __future__ import annotations

import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.experiments.measurement.decomposition import (
    CONTENT_REGIONS, FIXED_REGIONS, PLURAL_REGIONS, REGION_NOUNS, REGION_PLACES, SAME_CLASS, Decomposition,
    RegionRow, as_much, beyond_every_region, clears_margin, conclusion, headline_sentence, row_clause,
)
from advspatial.statistics.estimates import Estimate
from advspatial.statistics.outcomes import BEATS, DOES_LESS, EQUIVALENT, SPECIFICITY, Decision, outcome_of

INTERVAL = re.compile(r"Δ ([+-]\d+\.\d{3}) \[([+-]\d+\.\d{3}), ([+-]\d+\.\d{3})\]")
MARGIN_INTERVAL = re.compile(r"Δ ([+-]\d+\.\d{3}), 90% CI \[([+-]\d+\.\d{3}), ([+-]\d+\.\d{3})\] inside the "
                             r"margin ±(\d+\.\d{3})")


@st.composite
def decisions(draw: st.DrawFn) -> Decision:
    """A paired difference read by the specificity rule, with CIs that nest (90% inside 95%) around the mean."""
    mean = draw(st.floats(-0.1, 0.1))
    half95 = draw(st.floats(0.0005, 0.05))
    half90 = half95 * draw(st.floats(0.6, 0.95))
    margin = draw(st.floats(0.002, 0.03))
    n = draw(st.integers(30, 2000))
    low, high, low90, high90 = mean - half95, mean + half95, mean - half90, mean + half90
    outcome = outcome_of(SPECIFICITY, low, high, low90, high90, margin, n)
    within = outcome in (BEATS, DOES_LESS) and -margin < low90 and high90 < margin
    return Decision(SPECIFICITY, outcome, mean, low, high, low90, high90, half95 / 1.96 * math.sqrt(n), n, margin,
                    within)


@st.composite
def decompositions(draw: st.DrawFn) -> Decomposition:
    regions = draw(st.lists(st.sampled_from((*FIXED_REGIONS, *CONTENT_REGIONS)), min_size=1, max_size=5,
                            unique=True))
    rows = [RegionRow(r, Estimate(draw(st.floats(0.05, 0.6)), math.nan, math.nan, 100), draw(decisions()))
            for r in regions]
    rows.append(RegionRow(SAME_CLASS, Estimate(0.25, math.nan, math.nan, 100), draw(decisions())))
    return Decomposition("pgd", "contribution", Estimate(draw(st.floats(0.05, 0.9)), 0.0, 1.0, 100), 0.2,
                         tuple(rows), draw(st.booleans()))


def _rounded(*values: float) -> tuple[float, ...]:
    return tuple(float(f"{v:+.3f}") for v in values)


def _numbers_agree(clause: str, d: Decision) -> None:
    """The interval a clause quotes is the decision's, rounded: the 90% CI where it says "as much" (the interval
    the margin tests decide on), the 95% CI otherwise; and its words follow it."""
    if "as much" in clause or "nothing image-specific" in clause:
        found = MARGIN_INTERVAL.search(clause)
        assert found, clause
        mean, low90, high90, margin = (float(v) for v in found.groups())
        assert (mean, low90, high90, margin) == (*_rounded(d.mean, d.low90, d.high90), float(f"{d.margin:.3f}"))
        assert -d.margin < d.low90 and d.high90 < d.margin, clause
        return
    found = INTERVAL.search(clause)
    assert found, clause
    mean, low, high = (float(v) for v in found.groups())
    assert (mean, low, high) == _rounded(d.mean, d.low, d.high)
    undecided_size = "its estimate inside the margin and its CI past it" in clause
    if undecided_size:  # the size words: the estimate inside the margin, the quoted 95% CI reaching past it
        assert abs(d.mean) < d.margin and (d.high >= d.margin if d.mean > 0 else d.low <= -d.margin), clause
    else:  # a direction without them: its estimate clears the margin
        assert not re.search(r"catch(es)? more", clause) or abs(d.mean) >= d.margin, clause
    if "catches more than" in clause:  # the RoI catches more
        assert d.low > 0, clause
    if re.search(r"catch(es)? more \(", clause):  # the region catches more
        assert d.high < 0, clause
    if "this image's RoI catches more" in clause:  # the image-specific part, either way
        assert d.low > 0, clause
    if "a same-class image's RoI catches more" in clause:
        assert d.high < 0, clause
    assert "less than the margin" not in clause, clause  # a size the quoted CI would contradict
    if "undecided" in clause:
        assert d.low <= 0 <= d.high, clause


@settings(max_examples=300, deadline=None, derandomize=True)
@given(decisions(), st.sampled_from((*FIXED_REGIONS, *CONTENT_REGIONS)))
def test_every_region_clause_follows_its_numbers(d: Decision, region: str) -> None:
    clause = row_clause(RegionRow(region, Estimate(0.3, math.nan, math.nan, d.n), d))
    _numbers_agree(clause, d)
    # the verb agrees with the region's noun: "the image's strongest edges catch", "a centred region catches"
    noun = REGION_NOUNS[region]
    assert f"{noun} catches" not in clause if region in PLURAL_REGIONS else f"{noun} catch " not in clause, clause
    assert ("more than" in clause and "the RoI catches" in clause) == (d.outcome == BEATS and not as_much(d))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(decompositions())
def test_every_headline_sentence_follows_its_numbers(d: Decomposition) -> None:
    text = headline_sentence(d)
    assert text.startswith(f"pgd puts {d.roi_share.mean:.0%} of its contribution map in the RoI (20% of the pixels)")
    # "beyond layout and image content" only where the RoI beats every region by at least its margin
    assert ("beyond layout and image content" in text) == (beyond_every_region(d) and d.roi_faithful)
    # where the model looks is said only of a RoI whose gate did not fail
    assert "the model also looks" not in text or d.roi_faithful
    assert "this model looks" not in text or d.roi_faithful
    if "beyond layout and image content" in text:
        assert all(r.difference.low > 0 and r.difference.mean >= r.difference.margin for r in d.rows)
    if beyond_every_region(d):  # "each by at least the margin" flatly only where every row's CI lies beyond it
        flat = all(r.difference.low >= r.difference.margin for r in d.rows)
        assert ("each by at least the margin at its point estimate" in text) == (not flat), text
    # a fixed region named as where the attack acts catches as much as the RoI or more, and its numbers are quoted
    for region, place in REGION_PLACES.items():
        row = d.row(region)
        if f"the attack acts {place}" in text:
            assert row is not None and (as_much(row.difference) or row.difference.outcome == DOES_LESS)
            assert REGION_NOUNS[region] in text, text
    # the conclusion names every content region that catches more of the attack than the RoI, or as much, and no
    # other: a place is never named alone while a region made from the image's content catches more
    said = conclusion(d).lower()
    for row in d.rows:
        if row.region not in CONTENT_REGIONS:
            continue
        more = not as_much(row.difference) and row.difference.outcome == DOES_LESS
        if beyond_every_region(d):
            continue
        assert (REGION_NOUNS[row.region] in said) == (more or as_much(row.difference)), (said, row)
        clause = next((c for c in re.split(r"; |, and ", said) if REGION_NOUNS[row.region] in c), "")
        assert ("catch more of the attack than the roi" in clause) == more, said
    # every region the sentence names, it names with that region's own numbers and words
    for sentence_part in re.split(r"; |\. ", text):
        for row in d.rows:
            if sentence_part.lstrip().startswith(("the RoI catches more than " + REGION_NOUNS[row.region],
                                                  REGION_NOUNS[row.region], "against " + REGION_NOUNS[row.region])):
                if INTERVAL.search(sentence_part):
                    _numbers_agree(sentence_part, row.difference)
    specific = d.row(SAME_CLASS)
    assert specific is not None
    tail = text.split("(the image-specific part): ", 1)[1]
    _numbers_agree(tail, specific.difference)
    # its reading quotes the margin it is decided against, as every region's does
    assert f"margin ±{specific.difference.margin:.3f}" in tail


def test_a_decomposition_round_trips_through_its_dict() -> None:
    d = Decision(SPECIFICITY, BEATS, 0.02, 0.01, 0.03, 0.012, 0.028, 0.05, 200, 0.014)
    parts = Decomposition("pgd", "contribution", Estimate(0.3, 0.28, 0.32, 200), 0.2,
                          (RegionRow("centre", Estimate(0.28, 0.26, 0.30, 200), d),))
    assert Decomposition.from_dict(parts.as_dict()) == parts
    assert clears_margin(d) and not beyond_every_region(
        Decomposition("pgd", "contribution", parts.roi_share, 0.2, ()))


def test_a_region_ahead_within_the_margin_at_its_estimate_is_not_said_to_be_less_than_the_margin() -> None:
    """The ResNet-20 n = 200 case: deepfool's dataset layout ahead of the RoI, its CI below 0, its estimate inside
    the margin and its CI past it (-0.024 beyond -0.019): the sentence says so, never "by less than the margin"."""
    close = Decision(SPECIFICITY, DOES_LESS, -0.012, -0.024, -0.001, -0.022, -0.003, 0.04, 200, 0.019)
    clause = row_clause(RegionRow("dataset-layout", Estimate(0.3, math.nan, math.nan, 200), close))
    assert clause == (f"{REGION_NOUNS['dataset-layout']} catches more (Δ -0.012 [-0.024, -0.001], margin ±0.019), "
                      "its estimate inside the margin and its CI past it")
    far = Decision(SPECIFICITY, DOES_LESS, -0.04, -0.06, -0.02, -0.057, -0.023, 0.04, 200, 0.019)
    clause = row_clause(RegionRow("dataset-layout", Estimate(0.3, math.nan, math.nan, 200), far))
    assert clause == f"{REGION_NOUNS['dataset-layout']} catches more (Δ -0.040 [-0.060, -0.020], margin ±0.019)"


def test_by_at_least_the_margin_is_qualified_where_a_row_s_ci_reaches_below_it() -> None:
    """Every row's estimate clears its margin, one row's CI reaches below it: the conclusion says the margin is
    cleared at the point estimates, not flatly."""
    clear = Decision(SPECIFICITY, BEATS, 0.05, 0.03, 0.07, 0.033, 0.067, 0.05, 200, 0.014)
    close = Decision(SPECIFICITY, BEATS, 0.02, 0.008, 0.032, 0.010, 0.030, 0.05, 200, 0.014)
    share = Estimate(0.3, math.nan, math.nan, 200)
    rows = (RegionRow("centre", share, clear), RegionRow(SAME_CLASS, share, clear))
    d = Decomposition("pgd", "contribution", Estimate(0.4, 0.38, 0.42, 200), 0.2, rows)
    assert conclusion(d).endswith("every region of the same size, each by at least the margin.")
    d = Decomposition("pgd", "contribution", d.roi_share, 0.2, (RegionRow("centre", share, close), rows[1]))
    assert conclusion(d).endswith("each by at least the margin at its point estimate.")


def test_the_fixed_regions_all_beaten_quote_the_lowest_bound_not_a_closest_region() -> None:
    """Every fixed region beaten by its margin: the clause quotes the row with the lowest 95% bound (the dataset
    layout's wider CI), which is not the region closest to the RoI's share (the centre's Δ is smaller), so it says
    "by the lowest bound", never "the closest"."""
    share = Estimate(0.3, math.nan, math.nan, 200)
    near = Decision(SPECIFICITY, BEATS, 0.030, 0.024, 0.036, 0.025, 0.035, 0.05, 200, 0.014)
    wide = Decision(SPECIFICITY, BEATS, 0.045, 0.016, 0.074, 0.021, 0.069, 0.2, 200, 0.014)
    far = Decision(SPECIFICITY, BEATS, 0.060, 0.050, 0.070, 0.052, 0.068, 0.05, 200, 0.014)
    rows = (RegionRow("centre", share, near), RegionRow("dataset-layout", share, wide),
            RegionRow("class-layout", share, far), RegionRow(SAME_CLASS, share, far))
    text = headline_sentence(Decomposition("pgd", "contribution", Estimate(0.4, 0.38, 0.42, 200), 0.2, rows))
    assert ("the RoI catches more than every fixed region of the same size (centre, class layout, dataset layout; "
            f"by the lowest bound, against {REGION_NOUNS['dataset-layout']}: Δ +0.045 [+0.016, +0.074])") in text
    assert "closest" not in text


def test_a_place_is_named_beside_the_content_region_that_catches_more() -> None:
    """The default CNN's CW-L2 (n = 382): the class layout catches as much as the RoI, the image's brightest pixels
    more (Δ -0.021 [-0.043, -0.002]): the conclusion names both, not the layout alone."""
    share = Estimate(0.3, math.nan, math.nan, 382)
    layout = Decision(SPECIFICITY, EQUIVALENT, -0.001, -0.012, 0.010, -0.010, 0.008, 0.1, 382, 0.018)
    brightest = Decision(SPECIFICITY, DOES_LESS, -0.021, -0.043, -0.002, -0.039, -0.005, 0.2, 382, 0.019)
    edges = Decision(SPECIFICITY, BEATS, 0.04, 0.02, 0.06, 0.023, 0.057, 0.1, 382, 0.018)
    rows = (RegionRow("class-layout", share, layout), RegionRow("intensity", share, brightest),
            RegionRow("edges", share, edges))
    d = Decomposition("cw-l2", "contribution", Estimate(0.36, 0.35, 0.37, 382), 0.2, rows, roi_faithful=False)
    assert as_much(layout) and not as_much(brightest)
    assert conclusion(d) == ("On this model the attack acts where objects of the class usually are, where the "
                             "explainer's map also points; the image's brightest pixels catch more of the attack "
                             "than the RoI.")
    content_only = Decomposition("cw-l2", "contribution", d.roi_share, 0.2, rows[1:], roi_faithful=False)
    assert conclusion(content_only) == "The image's brightest pixels catch more of the attack than the RoI."
