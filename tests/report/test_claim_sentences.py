"""Every sentence a report or the terminal prints about a claim agrees with the numbers it quotes."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.report.answer import claim_sentence, verdict_line
from advspatial.report.verdicts import verdict_cell, what_this_run_shows
from advspatial.statistics.claims import Claim, judge
from advspatial.statistics.estimates import Estimate
from advspatial.statistics.outcomes import PRACTICAL_FACTOR, Projection

ABOUT = re.compile(r"about ([\d,]+) images would decide")


@st.composite
def judged_claims(draw: st.DrawFn) -> Claim:
    """A claim with a mean inside its CI, a p that may disagree with the CI, judged by the fixed rule."""
    mean = draw(st.floats(-0.05, 0.05))
    low = mean - draw(st.floats(1e-4, 0.04))
    high = mean + draw(st.floats(1e-4, 0.04))
    n = draw(st.integers(2, 600))
    null = draw(st.floats(0.1, 0.5))
    claim = Claim("the attack acts where the model looks", "pgd", "energy_in_roi", "same-class", null + mean, null,
                  Estimate(mean, low, high, n), (null + mean) / null, draw(st.floats(1e-6, 1.0)),
                  gates={"RoI faithfulness": True}, primary=draw(st.booleans()), scale="energy_in_roi")
    judge([claim])
    return claim


def _texts(c: Claim) -> list[str]:
    return [claim_sentence(c), verdict_cell(c), *what_this_run_shows([c]), verdict_line([c])]


@settings(max_examples=400, deadline=None, derandomize=True)
@given(judged_claims())
def test_a_ci_on_one_side_of_zero_never_reads_undecided(c: Claim) -> None:
    one_side = c.effect.n > 0 and (c.effect.low > 0 or c.effect.high < 0)
    for text in _texts(c):
        if one_side:
            assert "undecided" not in text, text


@settings(max_examples=400, deadline=None, derandomize=True)
@given(judged_claims())
def test_projections_are_practical_and_comparison_words_follow_the_sign(c: Claim) -> None:
    for text in _texts(c):
        for found in ABOUT.findall(text):
            assert int(found.replace(",", "")) <= PRACTICAL_FACTOR * max(c.effect.n, 1), text
    sentence = claim_sentence(c)
    if c.effect.n and " above the " in sentence:
        assert c.effect.mean > 0, sentence
    if c.effect.n and " below the " in sentence:
        assert c.effect.mean < 0, sentence
    for text in what_this_run_shows([c]):
        if " is above the " in text:
            assert c.observed > c.null_value or c.effect.mean > 0, text
        if " is below the " in text:
            assert c.effect.mean < 0, text


def test_an_impractical_projection_says_so() -> None:
    assert Projection("beats", 157_648_632, 0.8, 16).text().startswith("no practical number of images decides it")
    assert Projection("beats", 1_500, 0.8, 16).text() == "about 1,500 images would decide it (beats)"


def test_each_primary_statement_heads_only_the_attacks_tested_on_it() -> None:
    """A run's primary claims are one Holm family, but not one statement: the one-pixel attack's is against the
    same-class null, the others' beyond every region of the same size. The verdict line must not put the
    one-pixel attack's verdict under the others' statement."""
    beyond, same_class = ("the attack acts where the model looks, beyond layout and image content",
                          "the attack acts where the model looks")

    def primary(statement: str, subject: str, verdict: str) -> Claim:
        return Claim(statement, subject, "energy_in_roi", "same-class", 0.3, 0.3, Estimate(0.0, -0.01, 0.01, 80),
                     1.0, 0.5, primary=True, verdict=verdict)

    line = verdict_line([primary(beyond, "pgd", "supported"), primary(same_class, "onepixel", "not interpretable"),
                         primary(beyond, "fgsm", "reversed")])
    assert line == (f"Primary claim ({beyond}; Holm across attacks): pgd: SUPPORTED; fgsm: REVERSED. "
                    f"Primary claim ({same_class}; Holm across attacks): onepixel: not interpretable.")
    assert verdict_line([primary(beyond, "pgd", "supported")]) == (
        f"Primary claim ({beyond}; Holm across attacks): pgd: SUPPORTED.")


def test_the_primary_claim_against_every_region_names_the_region_it_quotes() -> None:
    """The primary claim's null is every region of the RoI's size, its numbers the weakest row's: a sentence
    compares with that region ("the region of the same size the claim is weakest against (the class-layout
    region)"), never with "the every region of the same size; weakest: ... null". A run written when the label read
    "closest" (the same row, by the same rule) reads "weakest" when read back."""
    from advspatial.report.verdicts import what_this_run_shows

    weakest = "the region of the same size the claim is weakest against (the class-layout region)"
    for label in ("weakest", "closest"):
        claim = Claim("the attack acts where the model looks, beyond layout and image content",
                      "pgd (contribution RoA)", "energy_in_roi", f"every region of the same size; {label}: the "
                      "class-layout region", 0.33, 0.30, Estimate(0.03, 0.02, 0.04, 200), 1.1, 0.001,
                      gates={"RoI faithfulness": True}, primary=True, scale="energy_in_roi")
        claim = Claim.from_dict(claim.as_dict())
        assert claim.null == "every region of the same size; weakest: the class-layout region"
        judge([claim])
        assert claim.verdict == "supported"
        assert f"above {weakest}, n = 200" in claim_sentence(claim)
        assert f"energy_in_roi 0.330 is above {weakest} 0.300 by +0.030" in what_this_run_shows([claim])[0]
    assert not any("the every" in text or "region null" in text for text in _texts(claim))
    def null_of(null: str) -> str:
        return Claim("c", "s", "energy_in_roi", null, 0.3, 0.3, Estimate(0, 0, 0, 1), 1, 1).null_words()

    assert null_of("same-class") == "the same-class null"
    assert null_of("every region of the same size") == "every region of the same size"  # a study's pooled claim
    # a value or a bound reads as it stands: "above 0.1 x the layer's ...", not "above the 0.1 x ... null"
    assert null_of("0 (no propagation)") == "0 (no propagation)"
    assert null_of("0.1 x the layer's largest clean activation") == "0.1 x the layer's largest clean activation"
    assert null_of("one half") == "one half" and null_of("natural model") == "the natural model null"
    assert null_of("random signs, same per-group energy") == "the null (random signs, same per-group energy)"
