"""The verdict table, the generated paragraph and the forest plot."""

from __future__ import annotations

import math

from advspatial.statistics.claims import Claim, judge
from advspatial.statistics.estimates import Estimate
from advspatial.report.verdicts import fmt, fmt_p, interval, plot_forest, verdict_table, what_this_run_shows


def make(subject: str, null: str, mean: float, primary: bool, faithful: bool = True) -> Claim:
    return Claim("the attack acts where the model looks", subject, "energy_in_roi", null, 0.3, 0.3 - mean,
                 Estimate(mean, mean - 0.01, mean + 0.01, 200), 1.1, 1e-4, gates={"RoI faithfulness": faithful},
                 primary=primary)


def test_table_has_one_row_per_claim_with_ci_and_verdict() -> None:
    claims = judge([make("pgd", "same-class", 0.02, True), make("fgsm", "same-class", -0.03, True)], sesoi=0.005)
    table = verdict_table(claims, "Verdicts")
    # one claim for every row: it is said once, in the caption, and the rows start with the subject
    assert len(table.rows) == 2 and table.columns[-1] == "verdict" and table.columns[0] == "subject"
    assert table.caption == f"Verdicts: {claims[0].claim}"
    assert table.rows[0][4] == "+0.020 [+0.010, +0.030]" and table.rows[0][-1] == "supported"
    assert table.rows[1][-1] == "reversed"
    undecided = judge([make("pgd", "same-class", 0.002, True)], sesoi=0.005)
    assert verdict_table(undecided, "V").rows[0][-1].startswith("not supported (undecided: about ")


def test_paragraph_is_built_from_verdict_words_and_names_failed_gates() -> None:
    claims = judge([make("pgd", "same-class", 0.02, True), make("cw", "same-class", 0.02, True, faithful=False),
                    make("pgd", "any-class", 0.02, False)], sesoi=0.005)
    text = what_this_run_shows(claims)
    assert len(text) == 2  # primary claims only
    assert "SUPPORTED" in text[0] and "+0.020 [+0.010, +0.030]" in text[0]
    assert "NOT INTERPRETABLE" in text[1] and "RoI faithfulness" in text[1] and "0.02" not in text[1]


def test_forest_plot_writes_a_png(tmp_path) -> None:
    claims = [make("pgd", n, 0.01 * k, k == 0) for k, n in enumerate(("same-class", "any-class", "uniform"))]
    empty = make("pgd", "object-conditioned", math.nan, False)
    empty.effect = Estimate(math.nan, math.nan, math.nan, 0)
    path = plot_forest({"pgd": claims + [empty]}, tmp_path / "forest.png", title="t")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_number_formats() -> None:
    assert interval(None) == "-" and fmt_p(float("nan")) == "-" and fmt_p(2e-5) == "2e-05" and fmt_p(0.0312) == "0.031"
    assert fmt(-2e-20) == "0.000" and fmt(-0.0004) == "0.000" and fmt(-0.0005001) == "-0.001" and fmt(1.5, 2) == "1.50"


def test_claims_about_a_training_procedure_show_their_seeds() -> None:
    agree, few = make("localized", "natural", 0.05, True), make("pgd", "natural", 0.05, True)
    agree.per_seed, few.per_seed = (0.04, -0.01, 0.12), (0.05,)
    plain = make("pgd", "same-class", 0.02, False)
    claims = judge([agree, few, plain], sesoi=0.005)
    table = verdict_table(claims, "Verdicts")
    assert table.columns[-2] == "training seeds: agree, Δ per seed" and table.columns[-1] == "verdict"
    assert table.rows[0][-2:] == ["2 of 3 seeds agree: +0.040, -0.010, +0.120", "not supported"]
    assert table.rows[1][-1] == "insufficient data" and table.rows[2][-2] == "-"
    assert verdict_table([plain], "Verdicts").columns[-2] == "gates", "no seeds column without such a claim"
    text = what_this_run_shows(claims)
    assert "2 of 3 seeds agree" in text[0] and "1 training seed;" in text[1] and "at least 3 seeds" in text[1]
    few.effect = Estimate(0.05, math.nan, math.nan, 200)
    assert interval(few.effect) == "+0.050 [no CI]"


def test_a_claim_against_a_null_of_zero_quotes_no_ratio() -> None:
    """The correlations' uniform null is 0 (about 1e-19 in floats): its quotient is no ratio, in the table or the
    sentence; a null away from 0 keeps its ratio."""
    zero = Claim("the attack acts where the model looks", "pgd", "spearman", "uniform", 0.15, float("nan"),
                 Estimate(0.15, 0.13, 0.17, 200), float("nan"), 1e-4, gates={"RoI faithfulness": True}, primary=True)
    (judged,) = judge([zero], sesoi=0.05)
    assert verdict_table([judged], "V").rows[0][5] == "-"
    (sentence,) = what_this_run_shows([judged])
    assert "ratio" not in sentence and "(n = 200, p_adj" in sentence
    (kept,) = what_this_run_shows(judge([make("pgd", "same-class", 0.02, True)], sesoi=0.005))
    assert "(ratio 1.10, n = 200, p_adj" in kept


def test_a_claim_no_image_entered_prints_no_values_in_its_terminal_line() -> None:
    """A same-class row on images without a same-class partner: its line printed 'observed nan null nan excess +nan
    [+nan, +nan]'; it says it has no estimate, and a measured claim keeps its values."""
    from advspatial.report.verdicts import claim_line

    nan = math.nan
    empty = Claim("the attack acts where the model looks", "pgd", "energy_in_roi", "same-class", nan, nan,
                  Estimate(nan, nan, nan, 0), nan, nan, verdict="insufficient data")
    line = claim_line(empty)
    assert "nan" not in line and "excess no estimate" in line and "observed" not in line
    measured = Claim("the attack acts where the model looks", "pgd", "energy_in_roi", "same-class", 0.31, 0.30,
                     Estimate(0.01, 0.004, 0.016, 120), 1.03, 0.01, verdict="supported")
    assert "observed 0.310 null 0.300 excess +0.010 [+0.004, +0.016]" in claim_line(measured)
