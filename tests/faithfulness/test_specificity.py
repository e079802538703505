"""The specificity sentence (faithfulness/specificity.py): each measure worded apart, every reference's words agree
with its decisions, and a difference within the margin is never worded "more" or "less"."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.faithfulness.record import Comparison, GateResult
from advspatial.faithfulness.specificity import (
    MEASURE_OPENINGS, REFERENCE_NOUNS, specificity_sentence,
)
from advspatial.statistics.outcomes import (
    BEATS, DOES_LESS, EQUIVALENT, SPECIFICITY, Decision, images_to_decide, outcome_of,
)

MARGIN = 0.5
N = 100
MEASURES = ("deletion:road", "deletion:blur", "attack")


def decision(mean: float, half_width: float) -> Decision:
    """A specificity decision whose 95% CI is mean ± half_width (90%: 0.84 of it), read by the package's rule."""
    low, high, low90, high90 = mean - half_width, mean + half_width, mean - 0.84 * half_width, mean + 0.84 * half_width
    outcome = outcome_of(SPECIFICITY, low, high, low90, high90, MARGIN, N)
    within = outcome in (BEATS, DOES_LESS) and -MARGIN < low90 and high90 < MARGIN
    return Decision(SPECIFICITY, outcome, mean, low, high, low90, high90, half_width * N ** 0.5 / 1.96, N, MARGIN,
                    within)


def gate_of(rows: dict[str, dict[str, Decision]]) -> GateResult:
    comparisons = {ref: Comparison(ref, ref, {}, False, True, role="specificity", decisions=ds)
                   for ref, ds in rows.items()}
    return GateResult(False, "", status="undecided", comparisons=comparisons)


def expected_words(d: Decision) -> str:
    """What the sentence must say of one decision, derived here from the rule's numbers."""
    if d.outcome == EQUIVALENT or d.within_margin:
        return "within the margin"
    return {BEATS: "more", DOES_LESS: "less"}.get(d.outcome, "undecided")


def measure_part(sentence: str, measure: str) -> str:
    """The sentence of one measure ('' when absent)."""
    opening = MEASURE_OPENINGS[measure]
    if opening not in sentence:
        return ""
    rest = sentence.split(opening + ": ", 1)[1]
    return rest.split(". On ", 1)[0].rstrip(".")


def clause_of(part: str, noun: str) -> str:
    found = [c for c in part.split("; ") if noun in c]
    assert len(found) == 1, (noun, part)
    return found[0]


def check_clause(clause: str, noun: str, decisions: dict[str, Decision]) -> None:
    words = {m: expected_words(d) for m, d in decisions.items()}
    if len(set(words.values())) > 1:
        listed = ", ".join(f"{w} on {m.split(':', 1)[-1]}" for m, w in words.items())
        assert clause.endswith(f"reads differently per fill against {noun}: {listed}"), clause
        return
    word = next(iter(words.values()))
    subject = r"(the RoI|it) "
    pattern = {"more": subject + r"(does more damage|removes more margin) than ",
               "less": subject + r"(does less damage|removes less margin) than ",
               "within the margin": subject + "is within the margin of ",
               "undecided": subject + f"is undecided against {re.escape(noun)} "}[word]
    assert re.match(pattern, clause), (word, clause)
    if word == "within the margin":
        assert " more " not in clause and " less " not in clause
    if word == "undecided":
        need = max((images_to_decide(d) for d in decisions.values()), key=lambda p: p.images)
        assert clause.endswith(f"({need.text()})")


readings = st.tuples(st.integers(-200, 200), st.integers(2, 150)).map(lambda t: decision(t[0] / 100, t[1] / 100))
row = st.fixed_dictionaries({m: readings for m in MEASURES})


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(REFERENCE_NOUNS)), row, min_size=1))
def test_every_reference_is_worded_by_its_own_decisions_per_measure(rows: dict[str, dict[str, Decision]]) -> None:
    sentence = specificity_sentence(gate_of(rows))
    deletion, attack = measure_part(sentence, "deletion"), measure_part(sentence, "attack")
    assert sentence.index(MEASURE_OPENINGS["deletion"]) < sentence.index(MEASURE_OPENINGS["attack"])
    for ref, ds in rows.items():
        noun = REFERENCE_NOUNS[ref]
        check_clause(clause_of(deletion, noun), noun, {m: d for m, d in ds.items() if m.startswith("deletion:")})
        check_clause(clause_of(attack, noun), noun, {"attack": ds["attack"]})
    for ref in set(REFERENCE_NOUNS) - set(rows):
        assert REFERENCE_NOUNS[ref] not in sentence
    assert deletion.startswith("the RoI ") and attack.startswith("the RoI ")


def test_the_measured_case_beats_on_deletion_and_is_within_the_margin_on_the_attack() -> None:
    """ResNet-20's shape: on deletion the RoI beats the layouts and the centre by about 1 logit on both fills; on the
    attack it does significantly but negligibly less (within the margin). No reference is "does less"."""
    rows = {ref: {"deletion:road": decision(1.0, 0.3), "deletion:blur": decision(1.1, 0.3),
                  "attack": decision(-0.064, 0.045)} for ref in ("class-layout", "dataset-layout", "centre")}
    assert rows["centre"]["attack"].outcome == DOES_LESS and rows["centre"]["attack"].within_margin
    assert specificity_sentence(gate_of(rows)) == (
        "On deletion (what the model uses): the RoI does more damage than the class layout, the dataset layout and "
        "the centre prior. On the restricted attack (gradient mass, not counted in the gate): the RoI is within the "
        "margin of the class layout, the dataset layout and the centre prior.")


def test_within_the_margin_on_every_deletion_fill_is_said_so_whatever_the_attack_reads() -> None:
    same = {"deletion:road": decision(0.05, 0.1), "deletion:blur": decision(0.3, 0.1), "attack": decision(2.0, 0.2)}
    assert same["deletion:road"].outcome == EQUIVALENT and same["deletion:blur"].within_margin
    apart = {"deletion:road": decision(0.05, 0.1), "deletion:blur": decision(1.5, 0.1), "attack": decision(0.0, 0.1)}
    gate = gate_of({"edges": same, "centre": apart})
    sentence = specificity_sentence(gate)
    assert "is within the margin of the image's edges (the model looks where the edges are)" in sentence
    assert "reads differently per fill against the centre prior: within the margin on road, more on blur" in sentence


def test_no_specificity_row_gives_no_sentence_and_a_row_without_the_attack_gives_one_sentence() -> None:
    assert specificity_sentence(GateResult(False, "", status="undecided")) == ""
    only_deletion = {"centre": {"deletion:road": decision(1.0, 0.2), "deletion:blur": decision(1.0, 0.2)}}
    sentence = specificity_sentence(gate_of(only_deletion))
    assert sentence == "On deletion (what the model uses): the RoI does more damage than the centre prior."


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.floats(-2.0, 2.0), st.floats(0.01, 1.0)), min_size=1, max_size=2))
def test_a_row_outcome_never_reads_beats_or_does_less_for_a_fill_within_the_margin(fills) -> None:
    """The specificity table's outcome column: a fill whose difference lies within the margin (its 90% CI inside
    it, even with a 95% CI off 0) is never counted as *beats* or *does less* (seen: the default CNN's HiResCAM at
    30% read "beats" against the class layout with road's +0.411 within the margin ±0.717)."""
    decisions = {f"deletion:{fill}": decision(mean, half) for fill, (mean, half) in zip(("road", "blur")[:len(fills)],
                                                                                        fills, strict=True)}
    row = Comparison("class-layout", "class layout", {}, False, True, role="specificity", decisions=decisions)
    words = {expected_words(d) for d in decisions.values()}
    if row.outcome in (BEATS, DOES_LESS):
        assert words == {"more" if row.outcome == BEATS else "less"}, (row.outcome, decisions)
    if words == {"within the margin"}:
        assert row.outcome in ("within the margin", EQUIVALENT), (row.outcome, decisions)
    if len(words) > 1:
        assert row.outcome == "mixed", (row.outcome, decisions)
