"""The gate's record (faithfulness/record.py): how its reason reads after its status."""

from __future__ import annotations

from advspatial.faithfulness.record import GateResult


def test_why_does_not_repeat_the_status_the_sentence_already_says() -> None:
    """"faithfulness gate undecided (undecided: n=15 < 30)" said its status twice: why() drops the leading status
    and keeps every other reason as it is."""
    assert GateResult(False, "undecided: n=15 < 30", status="undecided").why() == "n=15 < 30"
    failed = GateResult(False, "fails randomization: cascade 0.87", status="failed")
    assert failed.why() == "fails randomization: cascade 0.87"
    assert GateResult(True, "passed").why() == "passed"
