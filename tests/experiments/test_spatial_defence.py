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


def test_attack_maps_stage_round_trip(tmp_path):
    """An attack map saved with and without its completeness check loads back as the same AttackMaps."""
    import torch

    from advspatial.experiments.maps.stages import MAPS, AttackMaps
    from advspatial.rundir import RunDir

    rundir = RunDir(tmp_path)
    plain = AttackMaps(torch.rand(2, 4, 4))
    checked = AttackMaps(torch.rand(2, 4, 4), torch.tensor([0.01, 0.3]), torch.tensor([False, True]),
                         torch.tensor([16, 32]))
    for b, value in enumerate((plain, checked)):
        MAPS.at("pgd", "contribution").save(rundir, value, b)
        loaded = MAPS.at("pgd", "contribution").load(rundir, b)
        assert torch.equal(loaded.map, value.map)
        for name in ("completeness_error", "flagged", "steps_used"):
            got, want = getattr(loaded, name), getattr(value, name)
            assert (got is None and want is None) or torch.equal(got, want)
    assert MAPS.at("pgd", "contribution").key(1) == "maps/pgd/contribution/batch-00001"


def test_typed_keys_serialize_to_the_metrics_keys_and_back():
    """Sweep cells, (attack, defence) pairs, configurations and baselines are typed in code; metrics.json's
    'a|b|c' keys exist only in their serialization, which parses back to the same typed keys."""
    from advspatial.experiments.spatial.metrics import Adaptive, NonAdaptive, Sweep
    from advspatial.experiments.spatial.stages import DefenceSetting

    sweep = Sweep({("adv", 0.1, "zero"): {"x": 1}, ("clean", 0.05, "blur"): {"x": 2}})
    assert list(sweep.as_dict()) == ["adv|0.1|zero", "clean|0.05|blur"]
    assert Sweep.from_dict(sweep.as_dict()) == sweep
    pairs = NonAdaptive({("pgd-l2", "prior"): {"p": 0.5}})
    assert list(pairs.as_dict()) == ["pgd-l2|prior"] and NonAdaptive.from_dict(pairs.as_dict()) == pairs
    rows = {DefenceSetting(role, f, fill): {"fraction": f, "fill": fill}
            for role, f, fill in (("main", 0.2, "zero"), ("prior", 0.2, "zero"), ("sweep", 0.3, "blur"))}
    adaptive = Adaptive(4, {}, "rule", {}, rows, {}, {}, {}, {("noise", 0.2): {"label": ""}}, {})
    data = adaptive.as_dict()
    assert list(data["settings"]) == ["main", "prior", "sweep|0.3|blur"] and list(data["baselines"]) == ["noise|0.2"]
    assert Adaptive.from_dict(data) == adaptive


@pytest.mark.parametrize(("clean", "full_eot", "expected"), [
    ([1.0] * 30 + [0.0] * 20, True, ""),  # 0.60 [0.46, 0.72]: above chance, plotted
    ([0.0] * 50, True, "at chance"),  # CIFAR-10 ResNet-20 under noise sd 0.2: nothing left to trade
    ([1.0] * 5 + [0.0] * 45, True, "at chance"),  # 0.10 [0.04, 0.21]: the CI reaches 1/K = 0.1
    ([1.0] * 12 + [0.0] * 38, True, ""),  # 0.24 [0.14, 0.37]: above chance
    ([0.0] * 50, False, "both"),  # a weak EOT and at chance: both labels
])
def test_a_baseline_at_chance_is_labelled_and_kept_out_of_the_plot(clean, full_eot, expected):
    """A baseline whose clean accuracy's CI reaches chance (1/K) trades no clean accuracy for robustness: its
    point (clean ~0, robust ~0) says nothing, so it carries a label, which keeps it out of the trade-off plot."""
    import torch

    from advspatial.defence.adaptive import AdaptiveBudget
    from advspatial.experiments.spatial.claims import AT_CHANCE, WEAK_EOT, baseline_row

    shares = torch.tensor(clean)
    outcome = {"clean": shares, "baseline": {"correct": {"worst": torch.zeros_like(shares)}}}
    budget = AdaptiveBudget() if full_eot else AdaptiveBudget(eot_iter=2, eot_early_stop=True)
    row = baseline_row("noise", outcome, lambda component, randomized: {}, budget, chance=0.1)
    want = {"": "", "at chance": AT_CHANCE, "both": f"{WEAK_EOT}; {AT_CHANCE}"}[expected]
    assert row["label"] == want
    assert row["clean"]["value"] == pytest.approx(float(shares.mean()))
