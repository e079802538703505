"""The defence verdict rule and the Holm family of the adaptive table (pure functions, known answers)."""

from __future__ import annotations

import math

import pytest

from advspatial.experiments.spatial.defence_verdicts import VERDICT_WORDS, adjust_family, defence_verdict


def _cmp(mean: float, low: float, high: float, p: float, n: int = 100) -> dict:
    return {"delta": {"mean": mean, "low": low, "high": high, "n": n}, "p": p}


def _row(vs_control: dict, vs_undefended: dict, converged: bool | None = True, full: bool = True) -> dict:
    return {"vs_control": vs_control, "vs_undefended": vs_undefended, "converged": converged,
            "control_full_strength": full}


UP, DOWN, FLAT = _cmp(0.1, 0.05, 0.15, 1e-6), _cmp(-0.1, -0.15, -0.05, 1e-6), _cmp(0.0, -0.02, 0.02, 0.9)


@pytest.mark.parametrize(("vs_control", "vs_undefended", "converged", "full", "expected"), [
    (UP, UP, True, True, "helps"),
    (UP, UP, None, True, "not converged"),  # convergence not checked: never "helps"
    (UP, UP, False, True, "not converged"),
    (UP, FLAT, True, True, "does not help"),  # beats its control but not the undefended model
    (FLAT, UP, True, True, "does not help"),
    (DOWN, FLAT, True, True, "worse than its control"),
    (DOWN, FLAT, True, False, "does not help"),  # a weaker (early-stopped) control attack cannot convict
    (FLAT, DOWN, True, False, "worse than undefended"),
    (_cmp(0.1, 0.05, 0.15, 0.2), UP, True, True, "does not help"),  # CI above 0 but adjusted p too large
])
def test_verdict_rule(vs_control, vs_undefended, converged, full, expected):
    row = _row(dict(vs_control), dict(vs_undefended), converged, full)
    adjust_family({"only": row})
    assert defence_verdict(row, roi_faithful=True, alpha=0.05) == expected
    assert expected in VERDICT_WORDS


def test_gates_and_sample_size_come_first():
    row = _row(dict(UP), dict(UP))
    adjust_family({"a": row})
    assert defence_verdict(row, roi_faithful=False, alpha=0.05) == "not interpretable"
    small = _row(_cmp(0.1, 0.05, 0.15, 1e-6, n=10), dict(UP))
    adjust_family({"a": small})
    assert defence_verdict(small, roi_faithful=True, alpha=0.05) == "insufficient data"


def test_holm_runs_across_every_configuration_and_comparison():
    rows = {k: _row(_cmp(0.1, 0.05, 0.15, 0.01), _cmp(0.1, 0.05, 0.15, 0.02)) for k in ("a", "b", "c")}
    adjust_family(rows)
    adjusted = sorted(r[w]["p_adjusted"] for r in rows.values() for w in ("vs_control", "vs_undefended"))
    assert adjusted[0] == pytest.approx(0.06) and all(not math.isnan(p) for p in adjusted)
    assert all(defence_verdict(r, True, 0.05) == "does not help" for r in rows.values())  # 6 tests: none survives
