"""The report sections several experiments share: the explainer's gate verdict and the faithfulness section."""

from __future__ import annotations

from advspatial.faithfulness.record import ClassGate, GateResult
from advspatial.report.sections import explainer_verdict, faithfulness_section


def test_explainer_verdict_names_the_explainer_and_the_gate() -> None:
    assert (explainer_verdict("RoI explainer", "gradcam", "GAP head", "passed")
            == "RoI explainer: gradcam (GAP head). It is FAITHFUL by the gate below.")
    assert (explainer_verdict("CAM explainer", "hirescam", "flatten/FC head", "failed", "n < 30")
            == "CAM explainer: hirescam (flatten/FC head). It is NOT faithful by the gate below (n < 30).")
    assert "It is UNDECIDED by the gate below" in explainer_verdict("RoI", "cam", "why", "undecided")
    assert "cannot judge this setting" in explainer_verdict("RoI", "cam", "why", "cannot judge")
    assert explainer_verdict("RoI", "cam", "why", "failed", "").endswith("by the gate below ().")


def test_faithfulness_section_holds_the_paragraphs_and_the_gate_tables() -> None:
    gates = {"gradcam": GateResult(True, "passed", per_class={"0": ClassGate(3, {})})}
    section = faithfulness_section(["first", "second"], gates, per_class_of=["gradcam"])
    assert section.title == "Faithfulness gate" and section.anchor == "faithfulness"
    assert section.paragraphs == ["first", "second"]
    assert len(section.tables) == 4  # the summary, one row per comparison, the randomization check, per class
    assert len(faithfulness_section([], gates).tables) == 3
