"""The faithfulness gate in a report (report/gates.py): every cell's outcome and what would decide it, the control,
the specificity rows, the randomization check."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.faithfulness.gate import summarize_gate
from advspatial.faithfulness.record import GateResult
from advspatial.report.gates import decision_cell, gate_tables, randomization_table
from advspatial.statistics.outcomes import (
    BEATS, DOES_LESS, EQUIVALENT, FAITHFULNESS, NOT_BETTER, SPECIFICITY, Decision, outcome_of,
)

PASSING = [{"spearman": 0.05}]


def columns(n: int = 80, edges_effect: float = 0.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """Gate columns where the RoI clearly beats location and scatter, and against the image's edges differs by
    ``edges_effect`` per image on every measure (plus noise)."""
    gen = torch.Generator().manual_seed(seed)
    cols = {"clean:correct": torch.ones(n), "attack:margin_clean": torch.full((n,), 4.0)}
    for fill in ("road", "blur"):
        cols[f"deletion:{fill}:drop:roi"] = 2.0 + 0.2 * torch.randn(n, generator=gen)
        for region in ("shifted", "scattered"):
            cols[f"deletion:{fill}:drop:{region}"] = 0.5 + 0.2 * torch.randn(n, generator=gen)
        cols[f"deletion:{fill}:drop:ref:edges"] = cols[f"deletion:{fill}:drop:roi"] - edges_effect \
            + 2.0 * torch.randn(n, generator=gen)
    cols["attack:margin:roi"] = 1.0 + 0.2 * torch.randn(n, generator=gen)
    for region in ("shifted", "scattered"):
        cols[f"attack:margin:{region}"] = 3.5 + 0.2 * torch.randn(n, generator=gen)
    cols["attack:margin:ref:edges"] = cols["attack:margin:roi"] + 4 * edges_effect + 4 * torch.randn(n, generator=gen)
    return cols


def test_every_cell_shows_its_outcome_and_an_undecided_one_the_images_that_would_decide_it() -> None:
    gate = summarize_gate(columns(edges_effect=0.05), torch.zeros(80, dtype=torch.long), randomization=PASSING)
    assert gate.status == "passed"
    edges = gate.comparisons["edges"]
    assert edges.role == "specificity"
    undecided = [d for d in edges.decisions.values() if d.outcome == "undecided"]
    assert undecided
    text = decision_cell(undecided[0])
    assert "undecided (~" in text and text.startswith(f"{undecided[0].mean:+.3f} [")
    tables = gate_tables({"gradcam": gate})
    titles = [t.caption.split(":")[0] for t in tables]
    assert titles[:2] == ["Faithfulness gate per explainer", "Faithfulness gate"]
    assert "Specificity on deletion" in titles and "Positive control" not in titles  # no control columns here
    rows = {r[1]: r for r in tables[1].rows}
    assert rows["beats location (its shape at a random place)"][2:4] == ["faithfulness", "beats"]
    assert rows["beats image edges"][2] == "specificity"


def test_a_decided_cell_shows_no_projection_and_a_missing_one_a_dash() -> None:
    d = Decision("specificity", "equivalent", 0.001, -0.01, 0.012, -0.008, 0.01, 0.05, 200, 0.05)
    assert decision_cell(d) == "+0.001 [-0.010, +0.012] equivalent; 90% CI [-0.008, +0.010]"
    assert decision_cell(None) == "-"
    far = Decision("faithfulness", "undecided", 0.0, -0.1, 0.1, -0.08, 0.08, 1.0, 100, 0.0)
    assert decision_cell(far).endswith("(no n decides)")
    assert math.isinf(GateResult(False, "", status="undecided").images_to_decide()) is False


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.floats(-0.1, 0.1), st.floats(0.0005, 0.05), st.floats(0.6, 0.95), st.floats(0.002, 0.03),
       st.sampled_from((FAITHFULNESS, SPECIFICITY)))
def test_a_cell_decided_on_the_margin_quotes_the_90_percent_ci_it_was_decided_on(
        mean: float, half95: float, shrink: float, margin: float, rule: str) -> None:
    low, high, low90, high90 = mean - half95, mean + half95, mean - half95 * shrink, mean + half95 * shrink
    outcome = outcome_of(rule, low, high, low90, high90, margin, 100)
    within = outcome in (BEATS, DOES_LESS) and -margin < low90 and high90 < margin
    d = Decision(rule, outcome, mean, low, high, low90, high90, 0.1, 100, margin, within)
    cell = decision_cell(d)
    assert cell.startswith(f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] "), cell
    quoted = re.search(r"90% CI \[([+-]\d\.\d{3}), ([+-]\d\.\d{3})\]", cell)
    assert (quoted is not None) == (within or outcome in (EQUIVALENT, NOT_BETTER)), cell
    if quoted:
        assert (float(quoted[1]), float(quoted[2])) == (float(f"{low90:+.3f}"), float(f"{high90:+.3f}"))
        assert high90 < margin and (outcome == NOT_BETTER or -margin < low90), cell


def test_randomization_table_flags_maps_that_survive_randomization() -> None:
    gates = {"ig": GateResult(False, "", randomization=[{"spearman": 0.95}, {"spearman": 0.91}]),
             "hirescam": GateResult(True, "passed", randomization=[{"spearman": 0.10}, {"spearman": 0.05}]),
             "none": GateResult(False, "")}
    table = randomization_table(gates)
    rows = {r[0]: r for r in table.rows}
    assert rows["ig"][-1].startswith("FAILS") and rows["hirescam"][-1] == "passes" and "none" not in rows
    # the column names its check: a map can pass the cascade and fail the gate on efficient MPRT
    assert table.columns[-1].startswith("cascade check")


def test_randomization_table_shows_draws_images_and_collapsed_maps() -> None:
    """Every randomized map that collapsed to a constant is counted in the table, per check, with its draws."""
    last = {"spearman": 0.02, "per_draw": [[0.0] * 40] * 5, "n_collapsed": 3, "maps": 200}
    mprt = {"smooth_mprt": {"n_collapsed": 0, "maps": 200}, "efficient_mprt": {"n_collapsed": 3, "maps": 200}}
    gates = {"gradcam": GateResult(False, "", randomization=[{"spearman": 0.3}, last], mprt=mprt)}
    (row,) = randomization_table(gates).rows
    assert row[2:4] == [5, 40]
    assert row[6] == "cascade 3 of 200, sMPRT 0 of 200, eMPRT 3 of 200"


def test_every_gate_table_prints_each_measures_margin_with_its_scale() -> None:
    """δ = 10% of the RoI's own mean damage per measure, in the measure's units, in the gate, specificity and attack
    tables; the restricted attack has its own table and no column in the gate's."""
    cols = columns(edges_effect=0.05)
    gate = summarize_gate(cols, torch.zeros(80, dtype=torch.long), randomization=PASSING)
    tables = {t.caption.split(":")[0].split(",")[0]: t for t in gate_tables({"gradcam": gate})}
    for fill in ("blur", "road"):
        delta = 0.1 * float(cols[f"deletion:{fill}:drop:roi"].double().mean())
        text = f"±{delta:.3g} logits (10% of the RoI's mean damage, {delta / 0.1:.3g})"
        for name in ("Faithfulness gate", "Specificity on deletion"):
            table = tables[name]
            margin_row = next(r for r in table.rows if r[1] == "equivalence margin δ")
            assert margin_row[table.columns.index(f"deletion Δlogit ({fill})")] == text
    assert not any("attack" in c for c in tables["Faithfulness gate"].columns)
    attack = tables["Restricted attack"]
    removed = float((cols["attack:margin_clean"] - cols["attack:margin:roi"]).double().mean())
    assert attack.rows[0][1:] == ["equivalence margin δ", "-",
                                  f"±{0.1 * removed:.3g} logits of margin (10% of the RoI's mean damage, "
                                  f"{removed:.3g})"]
    assert [r[1] for r in attack.rows[1:]] == ["location", "scatter", "image edges"]
    assert gate.comparisons["location"].decisions["attack"].margin == pytest.approx(0.1 * removed)


def test_a_specificity_difference_within_the_margin_is_never_worded_does_less_or_beats() -> None:
    less = Decision("specificity", "does less", -0.064, -0.112, -0.019, -0.10, -0.03, 0.3, 244, 0.211, True)
    assert decision_cell(less) == "-0.064 [-0.112, -0.019] within the margin (CI below 0); 90% CI [-0.100, -0.030]"
    more = Decision("specificity", "beats", 0.064, 0.019, 0.112, 0.03, 0.10, 0.3, 244, 0.211, True)
    assert decision_cell(more) == "+0.064 [+0.019, +0.112] within the margin (CI above 0); 90% CI [+0.030, +0.100]"
    clear = Decision("specificity", "does less", -0.6, -0.8, -0.4, -0.75, -0.45, 0.3, 244, 0.211, False)
    assert decision_cell(clear) == "-0.600 [-0.800, -0.400] does less"
