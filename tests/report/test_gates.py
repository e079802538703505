"""The faithfulness gate in a report (report/gates.py): every cell's outcome and what would decide it, the control,
the specificity rows, the randomization check."""

from __future__ import annotations

import math

import torch

from advspatial.faithfulness.gate import summarize_gate
from advspatial.faithfulness.record import GateResult
from advspatial.report.gates import decision_cell, gate_tables, randomization_table
from advspatial.statistics.outcomes import Decision

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
    assert "Specificity" in titles and "Positive control" not in titles  # no control columns here
    rows = {r[1]: r for r in tables[1].rows}
    assert rows["beats location (its shape at a random place)"][2:4] == ["faithfulness", "beats"]
    assert rows["beats image edges"][2] == "specificity"


def test_a_decided_cell_shows_no_projection_and_a_missing_one_a_dash() -> None:
    d = Decision("specificity", "equivalent", 0.001, -0.01, 0.012, -0.008, 0.01, 0.05, 200, 0.05)
    assert decision_cell(d) == "+0.001 [-0.010, +0.012] equivalent"
    assert decision_cell(None) == "-"
    far = Decision("faithfulness", "undecided", 0.0, -0.1, 0.1, -0.08, 0.08, 1.0, 100, 0.0)
    assert decision_cell(far).endswith("(no n decides)")
    assert math.isinf(GateResult(False, "", status="undecided").images_to_decide()) is False


def test_randomization_table_flags_maps_that_survive_randomization() -> None:
    gates = {"ig": GateResult(False, "", randomization=[{"spearman": 0.95}, {"spearman": 0.91}]),
             "hirescam": GateResult(True, "passed", randomization=[{"spearman": 0.10}, {"spearman": 0.05}]),
             "none": GateResult(False, "")}
    rows = {r[0]: r for r in randomization_table(gates).rows}
    assert rows["ig"][-1].startswith("FAILS") and rows["hirescam"][-1] == "passes" and "none" not in rows
