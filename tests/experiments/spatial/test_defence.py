"""The defence verdict rule and the Holm family of the adaptive table (pure functions, known answers); the typed
records of the adaptive stage and of the findings, saved and read back."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from advspatial.defence.adaptive import AdaptiveBudget
from advspatial.defence.convergence import Convergence, CurveGrid
from advspatial.defence.adaptive_evaluation import AdaptivePlan, ComponentOutcome
from advspatial.experiments.spatial.claims import (
    HARM_CLAIM, VERDICT_WORDS, adjust_family, defence_verdict, harm_verdict,
)
from advspatial.experiments.spatial.config import DefenceSetting, Role
from advspatial.experiments.spatial.findings import (
    Adaptive, BaselineRow, Comparison, Harm, HarmConvergence, SettingConvergence, SettingMeasures, SettingRow,
    ShareSummary, UndefendedSummary,
)
from advspatial.statistics.accuracy import Proportion
from advspatial.statistics.estimates import Estimate

ACCURACY = Proportion(0.5, 0.4, 0.6, 50, 100)


def _cmp(mean: float, low: float, high: float, p: float, n: int = 100) -> Comparison:
    return Comparison(0.5, 0.5, Estimate(mean, low, high, n), p, "mcnemar")


def _conv(converged: bool = True, zero: bool = True) -> Convergence:
    return Convergence({"eps=0.8": 0.0 if zero else 0.4}, False, converged, 0.01, 100, "rule", reaches_zero=zero,
                       steps_gap=0.0 if converged else 0.1, restarts_gap=0.0, largest_eps="eps=0.8")


def _control(flat: bool = True) -> Convergence:
    return Convergence({"eot=20": 0.1}, True, flat, 0.01, 100, "rule", eot_gap=0.0 if flat else 0.1)


def _row(vs_control: Comparison, vs_undefended: Comparison, converged: bool = True, full: bool = True,
         zero: bool = True, control_flat: bool = True) -> SettingMeasures:
    share = ShareSummary(0.5, 0.4, 0.6, math.nan, 100)
    return SettingMeasures(ACCURACY, ACCURACY, ACCURACY, ACCURACY, share, vs_control, vs_undefended,
                           SettingConvergence(_conv(converged, zero), _control(control_flat)), full)


def _adjusted(row: SettingMeasures) -> SettingMeasures:
    return adjust_family([row])[0][0]


UP, DOWN, FLAT = _cmp(0.1, 0.05, 0.15, 1e-6), _cmp(-0.1, -0.15, -0.05, 1e-6), _cmp(0.0, -0.02, 0.02, 0.9)
WHITE, NOT_FLAT = _conv(), _conv(converged=False)


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
    row = _adjusted(_row(vs_control, vs_undefended, converged, full, zero, flat))
    verdict, why = defence_verdict(row, roi_faithful=True, alpha=0.05, white=WHITE)
    assert verdict == expected and expected in VERDICT_WORDS
    if expected in ("not checked", "not converged"):
        assert why  # the verdict names what failed


def test_worse_than_undefended_needs_a_converged_white_box():
    row = _adjusted(_row(FLAT, DOWN))
    assert defence_verdict(row, True, 0.05, white=NOT_FLAT)[0] == "not checked"


def test_gates_and_sample_size_come_first():
    row = _adjusted(_row(UP, UP))
    assert defence_verdict(row, roi_faithful=False, alpha=0.05, white=WHITE)[0] == "not interpretable"
    small = _adjusted(_row(_cmp(0.1, 0.05, 0.15, 1e-6, n=10), UP))
    assert defence_verdict(small, roi_faithful=True, alpha=0.05, white=WHITE)[0] == "insufficient data"
    assert defence_verdict(None, True, 0.05, WHITE)[0] == "not evaluated adaptively"


def test_an_unadjusted_comparison_never_decides():
    """A comparison outside any Holm family has no adjusted p, so its CI alone cannot make a verdict."""
    assert defence_verdict(_row(UP, UP), True, 0.05, WHITE)[0] == "does not help"


def test_harm_is_a_verdict_in_the_family():
    rows, (harm,) = adjust_family([_row(FLAT, FLAT)], [DOWN])
    assert harm.p_adjusted is not None and rows[0].vs_control.p_adjusted is not None
    assert "p_adjusted" in harm.as_dict() and "p_adjusted" not in DOWN.as_dict()
    assert harm_verdict(harm, WHITE, 0.05) == HARM_CLAIM
    assert harm_verdict(DOWN.adjusted(1e-6), NOT_FLAT, 0.05) == "not checked"
    assert harm_verdict(FLAT.adjusted(0.9), WHITE, 0.05) == "no harm shown inside the RoI"
    assert harm_verdict(_cmp(-0.1, -0.15, -0.05, 1e-6, n=10).adjusted(1e-6), WHITE, 0.05) == "insufficient data"


def test_holm_runs_across_every_configuration_and_comparison():
    rows, _ = adjust_family([_row(_cmp(0.1, 0.05, 0.15, 0.01), _cmp(0.1, 0.05, 0.15, 0.02)) for _ in range(3)])
    adjusted = sorted(c.p_adjusted for r in rows for c in (r.vs_control, r.vs_undefended) if c.p_adjusted is not None)
    assert len(adjusted) == 6 and adjusted[0] == pytest.approx(0.06) and all(not math.isnan(p) for p in adjusted)
    # 6 tests: none survives
    assert all(defence_verdict(r, True, 0.05, WHITE)[0] == "does not help" for r in rows)


def test_attack_maps_stage_round_trip(tmp_path):
    """An attack map saved with and without its completeness check loads back as the same AttackMaps."""
    import torch

    from advspatial.experiments.measurement.stages import MAPS, AttackMaps
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


def _setting_row(role: Role, fraction: float, fill: str,
                 measures: SettingMeasures | None) -> tuple[DefenceSetting, SettingRow]:
    s = DefenceSetting(role, fraction, fill)
    return s, SettingRow(s.label, fraction, fill, s.vulnerability, measures, "does not help", "")


def _adaptive() -> Adaptive:
    measures = replace(_adjusted(_row(UP, FLAT)), control=ShareSummary(0.25, 0.1, 0.5, 3, 12))
    rows = dict([_setting_row("main", 0.2, "zero", measures), _setting_row("prior", 0.2, "zero", None),
                 _setting_row("sweep", 0.3, "blur", None)])
    share = ShareSummary(0.4, 0.2, 0.6, 5, 12)
    return Adaptive(12, AdaptiveBudget(steps=5, eot_iter=2), "rule", UndefendedSummary(ACCURACY, ACCURACY, ACCURACY,
                    WHITE), rows, Harm(HARM_CLAIM, "harm rule", DOWN.adjusted(0.5), HarmConvergence(WHITE),
                                       "no harm shown inside the RoI"),
                    {"defended": ACCURACY}, {"made on the defence": ACCURACY},
                    {("noise", 0.2): BaselineRow(share, share, _control(), True, "")}, WHITE)


def test_typed_keys_serialize_to_the_metrics_keys_and_back():
    """Sweep cells, (attack, defence) pairs, configurations and baselines are typed in code; metrics.json's
    'a|b|c' keys exist only in their serialization, which parses back to the same typed records."""
    from advspatial.experiments.spatial.findings import DrawSpread, NonAdaptive, PairedComparisons, Sweep, SweepCell

    cell = SweepCell(ACCURACY, DrawSpread(0.4, 0.05, 3), FLAT)
    sweep = Sweep({("adv", 0.1, "zero"): cell, ("clean", 0.05, "blur"): cell})
    assert list(sweep.as_dict()) == ["adv|0.1|zero", "clean|0.05|blur"]
    assert list(sweep.as_dict()["adv|0.1|zero"]) == ["defended", "control", "vs_control"]
    assert Sweep.from_dict(sweep.as_dict()) == sweep
    pairs = NonAdaptive({("pgd-l2", "prior"): PairedComparisons(UP.adjusted(0.1), DOWN.adjusted(0.2))})
    assert list(pairs.as_dict()) == ["pgd-l2|prior"] and NonAdaptive.from_dict(pairs.as_dict()) == pairs
    adaptive = _adaptive()
    data = adaptive.as_dict()
    assert list(data["settings"]) == ["main", "prior", "sweep|0.3|blur"] and list(data["baselines"]) == ["noise|0.2"]
    assert Adaptive.from_dict(data) == adaptive


def test_rows_serialize_to_the_flat_objects_of_metrics_json():
    """A configuration's row is one flat object, its numbers between what it is and its verdict (none when it was
    not attacked adaptively); the keys and their order are metrics.json's."""
    data = _adaptive().as_dict()
    main, prior = data["settings"]["main"], data["settings"]["prior"]
    assert list(main) == ["label", "fraction", "fill", "vulnerability", "evaluated", "clean", "adaptive:identity",
                          "adaptive:local", "adaptive:worst", "control", "vs_control", "vs_undefended", "convergence",
                          "control_full_strength", "verdict", "why"]
    assert list(prior) == ["label", "fraction", "fill", "vulnerability", "evaluated", "verdict", "why"]
    assert main["evaluated"] and not prior["evaluated"] and main["label"] == "gradient RoA, fraction 0.2, zero fill"
    assert list(main["vs_control"]) == ["a", "b", "delta", "p", "test", "p_adjusted"]
    assert list(main["convergence"]["defended"]) == ["accuracy", "converged", "tolerance", "steps_gap",
                                                     "restarts_gap", "reaches_zero", "largest_eps", "n", "rule"]
    assert list(main["convergence"]["control"]) == ["accuracy", "converged", "tolerance", "eot_gap", "reaches_zero",
                                                    "n", "full_strength", "rule"]
    assert list(data) == ["images", "budget", "rule", "undefended", "settings", "harm", "roi_restricted", "transfer",
                          "baselines", "convergence"]
    assert list(data["undefended"]) == ["clean", "white-box", "roi:white-box", "convergence"]
    assert list(data["harm"]) == ["claim", "rule", "comparison", "convergence", "verdict"]
    assert list(data["baselines"]["noise|0.2"]) == ["clean", "robust", "convergence", "randomized", "label"]
    assert data["budget"]["full_eot"] is False and data["budget"]["components"] == ["apgd-ce", "apgd-dlr", "square"]


def test_a_bootstrap_share_keeps_its_nan_count_through_metrics_json():
    """A randomized control's share summary has no count (k NaN); a Wilson one keeps its integer k: both read back
    as they were written."""
    import json

    from advspatial.experiments.findings import from_json, to_json

    for share in (ShareSummary(0.25, 0.1, 0.5, math.nan, 12), ShareSummary(0.25, 0.1, 0.5, 3, 12)):
        text = json.dumps(to_json(share))
        back = from_json(ShareSummary, json.loads(text), "share")
        assert json.dumps(to_json(back)) == text and type(back.k) is type(share.k)


def _component(n: int, seed: int, curve: bool = True) -> ComponentOutcome:
    gen = torch.Generator().manual_seed(seed)
    correct = {g: torch.randint(0, 2, (n,), generator=gen).float() for g in ("identity", "local", "worst")}
    points = {p: torch.rand(n, generator=gen) for p in ("steps=5", "steps=10")} if curve else {}
    return ComponentOutcome(correct, points)


def test_adaptive_stage_records_save_as_their_dicts_and_load_back(tmp_path):
    """Each adaptive record is saved as the dict of its fields (the stage files of a run, which a resumed run reads)
    and loads back as the same record; only the main defence's carries the RoI-restricted attack and the transfer."""
    from advspatial.experiments.spatial.records import (
        ADAPTIVE, BASELINES, UNDEFENDED, BaselineOutcome, SettingOutcome, UndefendedOutcome,
    )
    from advspatial.rundir import RunDir

    rundir = RunDir(tmp_path)
    clean = torch.tensor([1.0, 0.0, 1.0])
    main = SettingOutcome(_component(3, 0), _component(3, 1), clean, clean, _component(3, 2, curve=False), clean)
    other = SettingOutcome(_component(3, 3), _component(3, 4), clean)
    undefended = UndefendedOutcome(_component(3, 5), _component(3, 6), clean, clean, clean)
    baseline = BaselineOutcome(_component(3, 7), clean)
    saved = {"defended": main.defended.as_dict(), "control": main.control.as_dict(), "clean": clean,
             "transfer": clean, "roi": {"correct": main.roi.correct, "curve": {}}, "roi_transfer": clean}
    assert list(main.as_dict()) == list(saved) and list(other.as_dict()) == ["defended", "control", "clean"]
    assert list(undefended.as_dict()) == ["white-box", "roi", "clean", "transfer", "roi_transfer"]
    for stage, value in ((ADAPTIVE.at("main"), main), (ADAPTIVE.at("sweep", 0.3, "blur"), other),
                         (UNDEFENDED, undefended), (BASELINES.at("noise", 0.2), baseline)):
        stage.save(rundir, value, 0)
        assert_same(stage.load(rundir, 0), value)
    assert UNDEFENDED.key(1) == "adaptive/undefended/batch-00001"
    assert ADAPTIVE.at("sweep", 0.3, "blur").key(0) == "adaptive/sweep/0.3/blur/batch-00000"
    restricted = main.restricted()
    assert restricted.roi is main.roi and restricted.transfer is main.transfer
    with pytest.raises(ValueError, match="main defence"):
        other.restricted()


def test_records_of_consecutive_batches_join_in_batch_order():
    """Joining the records of two batches concatenates every tensor, those of nested components key by key."""
    from advspatial.experiments.spatial.records import SettingOutcome

    parts = [SettingOutcome(_component(n, n), _component(n, n + 1), torch.ones(n), torch.zeros(n),
                            _component(n, n + 2, curve=False), torch.ones(n)) for n in (3, 2)]
    whole = SettingOutcome.concatenated(parts)
    assert torch.equal(whole.defended.correct["local"],
                       torch.cat([parts[0].defended.correct["local"], parts[1].defended.correct["local"]]))
    assert torch.equal(whole.control.curve["steps=10"],
                       torch.cat([parts[0].control.curve["steps=10"], parts[1].control.curve["steps=10"]]))
    assert whole.roi is not None and whole.roi.curve == {} and whole.clean.shape == (5,)
    assert SettingOutcome.concatenated([parts[0]]).as_dict().keys() == parts[0].as_dict().keys()


def assert_same(a: object, b: object) -> None:
    """Two records (or tensors, dicts of them) hold the same values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif a is None:
        assert b is None
    else:
        assert type(a) is type(b)
        assert_same(a.as_dict(), b.as_dict())


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
    from advspatial.experiments.spatial.claims import AT_CHANCE, WEAK_EOT, baseline_row
    from advspatial.experiments.spatial.records import BaselineOutcome

    shares = torch.tensor(clean)
    outcome = BaselineOutcome(ComponentOutcome({"worst": torch.zeros_like(shares)}, {}), shares)
    budget = AdaptiveBudget() if full_eot else AdaptiveBudget(eot_iter=2, eot_early_stop=True)
    row = baseline_row("noise", outcome, AdaptivePlan(0.1, budget, CurveGrid()), chance=0.1)
    want = {"": "", "at chance": AT_CHANCE, "both": f"{WEAK_EOT}; {AT_CHANCE}"}[expected]
    assert row.label == want
    assert row.clean.value == pytest.approx(float(shares.mean()))


@pytest.mark.parametrize("verdict", VERDICT_WORDS)
def test_the_defence_headline_names_the_verdict_after_a_colon_whatever_it_is(verdict: str) -> None:
    """"the main neutralization defence helps" reads as a sentence, "... defence not interpretable" did not: the
    verdict follows a colon, so every word of the rule reads as the verdict it is."""
    from advspatial.experiments.spatial.report import defence_headline

    adaptive = _adaptive()
    main = next(s for s in adaptive.settings if s.role == "main")
    adaptive.settings[main] = replace(adaptive.settings[main], verdict=verdict, why="")
    assert defence_headline(adaptive).startswith(f"Defence: the main neutralization defence: {verdict} (adaptive ")


@pytest.mark.parametrize("main_verdict", ["not interpretable", "does not help"])
def test_the_harm_sentence_says_what_its_roi_is_when_the_gate_failed(main_verdict: str) -> None:
    """The harm rule is not gated: its finding is about the defended model under attacks confined to the region the
    defence spares. Where that region's explainer failed its gate, the sentence says so, beside the report's
    "every RoI-dependent result is not evidence about the model"; where the gate held, it says nothing more."""
    from advspatial.experiments.spatial.report import defence_headline, harm_caveat

    adaptive = _adaptive()
    main = next(s for s in adaptive.settings if s.role == "main")
    adaptive.settings[main] = replace(adaptive.settings[main], verdict=main_verdict, why="")
    adaptive = replace(adaptive, harm=replace(adaptive.harm, verdict=HARM_CLAIM),
                       roi_restricted={"defended (white-box, worst gradient)": ACCURACY,
                                       "undefended (white-box)": ACCURACY})
    caveat = harm_caveat(adaptive)
    assert bool(caveat) == (main_verdict == "not interpretable")
    assert f"It {HARM_CLAIM}{caveat}: with the attack confined" in defence_headline(adaptive)
    if caveat:
        assert "not where the model looks" in caveat
