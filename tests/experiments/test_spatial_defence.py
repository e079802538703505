"""The defence verdict rule and the Holm family of the adaptive table (pure functions, known answers)."""

from __future__ import annotations

import math

import pytest

from advspatial.experiments.spatial.claims import VERDICT_WORDS, adjust_family, defence_verdict, harm_verdict


def _cmp(mean: float, low: float, high: float, p: float, n: int = 100) -> dict:
    return {"delta": {"mean": mean, "low": low, "high": high, "n": n}, "p": p}


def _conv(converged: bool = True, zero: bool = True) -> dict:
    return {"converged": converged, "reaches_zero": zero, "steps_gap": 0.0 if converged else 0.1,
            "restarts_gap": 0.0, "largest_eps": "eps=0.8", "accuracy": {"eps=0.8": 0.0 if zero else 0.4}}


def _row(vs_control: dict, vs_undefended: dict, converged: bool = True, full: bool = True, zero: bool = True,
         control_flat: bool = True) -> dict:
    control = {"converged": control_flat, "eot_gap": 0.0 if control_flat else 0.1}
    return {"vs_control": vs_control, "vs_undefended": vs_undefended, "control_full_strength": full,
            "convergence": {"defended": _conv(converged, zero), "control": control}}


UP, DOWN, FLAT = _cmp(0.1, 0.05, 0.15, 1e-6), _cmp(-0.1, -0.15, -0.05, 1e-6), _cmp(0.0, -0.02, 0.02, 0.9)
WHITE = {"converged": True}


@pytest.mark.parametrize(("vs_control", "vs_undefended", "converged", "full", "zero", "flat", "expected"), [
    (UP, UP, True, True, True, True, "helps"),
    (UP, UP, False, True, True, True, "not converged"),
    (UP, UP, True, True, False, True, "not converged"),  # stays accurate at 8x eps: masking, never "helps"
    (UP, UP, True, False, True, True, "not checked"),  # a weak EOT on the control decides nothing
    (UP, UP, True, True, True, False, "not checked"),  # nor does a control whose EOT curve still falls
    (UP, FLAT, True, True, True, True, "does not help"),  # beats its control but not the undefended model
    (FLAT, UP, True, True, True, True, "does not help"),
    (DOWN, FLAT, True, True, True, True, "worse than its control"),
    (DOWN, FLAT, True, False, True, True, "not checked"),  # a weaker (early-stopped) control attack cannot convict
    (FLAT, DOWN, True, False, True, True, "worse than undefended"),
    (FLAT, DOWN, False, True, False, True, "worse than undefended"),  # a weak attack on the defence only understates it
    (_cmp(0.1, 0.05, 0.15, 0.2), UP, True, True, True, True, "does not help"),  # CI above 0 but adjusted p too large
])
def test_verdict_rule(vs_control, vs_undefended, converged, full, zero, flat, expected):
    row = _row(dict(vs_control), dict(vs_undefended), converged, full, zero, flat)
    adjust_family({"only": row})
    verdict, why = defence_verdict(row, roi_faithful=True, alpha=0.05, white=WHITE)
    assert verdict == expected and expected in VERDICT_WORDS
    if expected in ("not checked", "not converged"):
        assert why  # the verdict names what failed


def test_worse_than_undefended_needs_a_converged_white_box():
    row = _row(dict(FLAT), dict(DOWN))
    adjust_family({"a": row})
    assert defence_verdict(row, True, 0.05, white={"converged": False})[0] == "not checked"


def test_gates_and_sample_size_come_first():
    row = _row(dict(UP), dict(UP))
    adjust_family({"a": row})
    assert defence_verdict(row, roi_faithful=False, alpha=0.05, white=WHITE)[0] == "not interpretable"
    small = _row(_cmp(0.1, 0.05, 0.15, 1e-6, n=10), dict(UP))
    adjust_family({"a": small})
    assert defence_verdict(small, roi_faithful=True, alpha=0.05, white=WHITE)[0] == "insufficient data"
    assert defence_verdict({"evaluated": False}, True, 0.05, WHITE)[0] == "not evaluated adaptively"


def _harm(comparison: dict, flat: bool = True) -> dict:
    return {"claim": "makes the model more vulnerable inside the RoI", "comparison": comparison,
            "convergence": {"undefended": {"converged": flat}}}


def test_harm_is_a_verdict_in_the_family():
    rows = {"a": _row(dict(FLAT), dict(FLAT))}
    harm = _harm(dict(DOWN))
    adjust_family(rows, harm)
    assert "p_adjusted" in harm["comparison"]
    assert harm_verdict(harm, 0.05) == "makes the model more vulnerable inside the RoI"
    assert harm_verdict(_harm(dict(DOWN, p_adjusted=1e-6), flat=False), 0.05) == "not checked"
    assert harm_verdict(_harm(dict(FLAT, p_adjusted=0.9)), 0.05) == "no harm shown inside the RoI"
    assert harm_verdict(_harm(dict(_cmp(-0.1, -0.15, -0.05, 1e-6, n=10), p_adjusted=1e-6)), 0.05) == "insufficient data"


def test_holm_runs_across_every_configuration_and_comparison():
    rows = {k: _row(_cmp(0.1, 0.05, 0.15, 0.01), _cmp(0.1, 0.05, 0.15, 0.02)) for k in ("a", "b", "c")}
    adjust_family(rows)
    adjusted = sorted(r[w]["p_adjusted"] for r in rows.values() for w in ("vs_control", "vs_undefended"))
    assert adjusted[0] == pytest.approx(0.06) and all(not math.isnan(p) for p in adjusted)
    # 6 tests: none survives
    assert all(defence_verdict(r, True, 0.05, WHITE)[0] == "does not help" for r in rows.values())
