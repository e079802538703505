"""Smoke tests say so (experiments/smoke.py): the marking of a smoke test's results, known answers, and the
``smoke_test`` setting (set by --quick, kept by --resume, out of a real run's fingerprint). The quick runs of
every experiment check the whole path with ``helpers.assert_smoke_test`` in their own test modules."""

from __future__ import annotations

import pytest
import yaml
from helpers import bare_verdict_words

from advspatial.errors import ConfigError
from advspatial.experiments import get_experiment, resolve_config
from advspatial.experiments.results import ExperimentResult
from advspatial.experiments.running import fingerprint, open_run
from advspatial.experiments.smoke import (
    SMOKE_LINE, SMOKE_MARK, is_verdict_key, mark_result, mark_text, unmark_tree, verdict_pattern, would_read,
)
from advspatial.statistics.verdicts import VERDICTS
from advspatial.report.html import Section, Table


def _result() -> ExperimentResult:
    metrics = {"n": 24, "claims": [{"subject": "pgd", "verdict": "supported", "p": 0.01},
                                   {"subject": "fgsm", "verdict": "not supported", "p": 0.4}],
               "adaptive": {"settings": {"main": {"verdict": "does not help", "label": "helps"}}},
               "roi": {"interpretation": "not interpretable: too few images"}, "cascade_verdict": "passed",
               "rule": "A configuration 'helps' only when ..."}
    rows = [{"id": 0, "verdict": "reversed", "energy": 0.5}]
    section = Section("Verdicts", paragraphs=["pgd: acts where it looks — SUPPORTED: excess 0.1",
                                              "Verdict words: supported = the CI lies above 0; reversed = below"],
                      tables=[Table("claims", ["subject", "verdict"], [["pgd", "supported"], ["fgsm", 0.5]])],
                      notes=["supported only when every difference is above 0"])
    return ExperimentResult(metrics, rows, "pgd  0.100  supported\nfgsm  not supported\nverdict: does not help",
                            [section])


def test_a_real_run_is_returned_unchanged() -> None:
    result = _result()
    assert mark_result(result, smoke_test=False) is result


def test_every_verdict_is_marked_and_the_rest_kept() -> None:
    marked = mark_result(_result(), smoke_test=True)
    m = marked.metrics
    assert list(m)[0] == "smoke_test" and m["smoke_test"].startswith(SMOKE_LINE)
    assert [c["verdict"] for c in m["claims"]] == [SMOKE_MARK + "supported", SMOKE_MARK + "not supported"]
    assert m["adaptive"]["settings"]["main"] == {"verdict": SMOKE_MARK + "does not help", "label": "helps"}
    assert m["roi"]["interpretation"] == SMOKE_MARK + "not interpretable: too few images"
    assert m["cascade_verdict"] == SMOKE_MARK + "passed"
    assert m["rule"] == "A configuration 'helps' only when ..." and m["claims"][0]["p"] == 0.01
    assert marked.per_image == [{"id": 0, "verdict": SMOKE_MARK + "reversed", "energy": 0.5}]
    assert marked.summary.splitlines() == [
        marked.summary.splitlines()[0], f"pgd  0.100  {SMOKE_MARK}supported", f"fgsm  {SMOKE_MARK}not supported",
        f"verdict: {SMOKE_MARK}does not help"]
    assert marked.summary.startswith(SMOKE_LINE)
    section = marked.report_sections[0]
    assert section.paragraphs == [f"pgd: acts where it looks — {SMOKE_MARK}SUPPORTED: excess 0.1",
                                  "Verdict words: supported = the CI lies above 0; reversed = below"]  # a legend stays
    assert section.tables[0].rows == [["pgd", SMOKE_MARK + "supported"], ["fgsm", 0.5]]
    assert section.tables[0].columns == ["subject", "verdict"] and section.title == "Verdicts"
    assert section.notes == ["supported only when every difference is above 0"]  # a rule's definition stays
    assert _result().metrics["claims"][0]["verdict"] == "supported", "the input is not changed"


def test_marking_is_idempotent_and_reversible() -> None:
    once = mark_result(_result(), smoke_test=True)
    twice = mark_result(once, smoke_test=True)
    assert twice.metrics["claims"] == once.metrics["claims"] and twice.per_image == once.per_image
    assert twice.report_sections == once.report_sections
    assert [would_read(c["verdict"]) for c in once.metrics["claims"]] == ["supported", "not supported"]
    assert would_read("supported") == "supported"


def test_a_headline_sentence_is_marked_wherever_it_is_shown_and_no_other_sentence_is() -> None:
    """The sentence of where an attack acts against the regions of the RoI's size draws its conclusion in words no
    verdict word marks ("catches more", "acts at the centre"); in a smoke test it reads as what it would read, in
    metrics, summary, answer and report, once however often it is marked, and unmarked when read back."""
    sentence = "pgd puts 28% of its map in the RoI; a centred region catches more. On this model it acts at the centre."
    result = _result()
    result.metrics["content"] = {"pgd": {"contribution": {"decomposition": {}, "sentence": sentence}}}
    result.metrics["forecast"] = {"sentence": "about 2 minutes on this machine"}  # no headline: stays
    result.summary += "\n" + sentence
    result.answer = [sentence]
    result.report_sections[0].paragraphs.append(sentence)
    once = mark_result(result, smoke_test=True)
    for marked in (once, mark_result(once, smoke_test=True)):
        assert marked.metrics["content"]["pgd"]["contribution"]["sentence"] == SMOKE_MARK + sentence
        assert marked.metrics["forecast"]["sentence"] == "about 2 minutes on this machine"
        assert marked.summary.splitlines()[-1] == SMOKE_MARK + sentence
        assert marked.answer == [SMOKE_MARK + sentence]
        assert marked.report_sections[0].paragraphs[-1] == SMOKE_MARK + sentence
    assert unmark_tree(once.metrics)["content"]["pgd"]["contribution"]["sentence"] == sentence


def test_text_marking_takes_whole_words_longest_first() -> None:
    pattern = verdict_pattern(VERDICTS)
    text = "not supported, supported, unsupported, supportedness, 'reversed', \"negligible\", Equivalent to null."
    assert mark_text(text, pattern) == (f"{SMOKE_MARK}not supported, {SMOKE_MARK}supported, unsupported, "
                                        f"supportedness, 'reversed', \"negligible\", {SMOKE_MARK}Equivalent to null.")
    assert mark_text("nothing here", verdict_pattern([])) == "nothing here"


def test_the_independent_check_finds_what_marking_leaves() -> None:
    found = bare_verdict_words("pgd supported; fgsm not supported; NEGLIGIBLE")
    assert sorted(found) == ["NEGLIGIBLE", "not supported", "supported"]
    marked = mark_text("pgd supported; fgsm not supported; NEGLIGIBLE; helps", verdict_pattern(VERDICTS + ("helps",)))
    assert bare_verdict_words(marked) == []


def test_the_experiments_own_words_are_marked_though_no_verdict_holds_them() -> None:
    """A smoke test's few attack steps leave an attack "NOT converged" whatever the attack: the summary and the
    report mark it, a word of the experiment's vocabulary (``words``), though the run's verdict is another word
    (here the gate's "not interpretable"); without the vocabulary it would stay bare."""
    section = Section("Defence", paragraphs=["No configuration attacked adaptively helps by the rule."],
                      tables=[Table("baselines", ["baseline", "convergence"],
                                    [["blur", "defence NOT converged; control flat"]])])
    result = ExperimentResult({"n": 12, "claims": [{"verdict": "not interpretable"}]}, [],
                              "adaptive: attack NOT converged; verdict: not interpretable", [section])
    marked = mark_result(result, smoke_test=True, words=("helps", "not converged"))
    assert marked.summary.splitlines()[1] == (f"adaptive: attack {SMOKE_MARK}NOT converged; "
                                              f"verdict: {SMOKE_MARK}not interpretable")
    section = marked.report_sections[0]
    assert section.tables[0].rows == [["blur", f"defence {SMOKE_MARK}NOT converged; control flat"]]
    assert section.paragraphs == [f"No configuration attacked adaptively {SMOKE_MARK}helps by the rule."]
    assert bare_verdict_words(marked.summary) == []
    assert "attack NOT converged" in mark_result(result, smoke_test=True).summary  # the vocabulary is what marks it


def test_the_spatial_experiment_registers_its_defence_vocabulary() -> None:
    from advspatial.experiments.spatial.claims import HARM_WORDS, MASKING_SUSPECTED, VERDICT_WORDS

    assert set(get_experiment("spatial").verdict_words) == {*VERDICT_WORDS, *HARM_WORDS, MASKING_SUSPECTED}


def test_a_converged_attack_that_does_not_reach_zero_reads_as_what_it_would_read() -> None:
    """An attack can converge (more effort lowers nothing) and still leave images at the largest budget: the report
    then suspects gradient masking, a finding about the defence. After the passing word "converged" no verdict word
    opens the phrase, so the spatial experiment's vocabulary marks the suspicion itself."""
    from advspatial.experiments.spatial.claims import MASKING_SUSPECTED
    from advspatial.experiments.spatial.report import convergence_word
    from advspatial.defence.convergence import Convergence

    converged = Convergence(accuracy={"8x": 0.25}, randomized=False, converged=True, tolerance=0.02, n=12,
                            rule="", reaches_zero=False, steps_gap=0.0, restarts_gap=0.0, largest_eps="8x")
    word = convergence_word(converged)
    assert word == f"converged, does NOT reach 0 at 8x ({MASKING_SUSPECTED})"
    result = ExperimentResult({"n": 12}, [], f"attack on the defence {word}", [])
    marked = mark_result(result, smoke_test=True, words=get_experiment("spatial").verdict_words)
    assert marked.summary.splitlines()[1] == (f"attack on the defence converged, does NOT reach 0 at 8x "
                                              f"({SMOKE_MARK}{MASKING_SUSPECTED})")
    assert bare_verdict_words(marked.summary) == []
    assert bare_verdict_words(result.summary) == [MASKING_SUSPECTED], "the independent check sees the bare phrase"


def test_verdict_keys() -> None:
    assert all(is_verdict_key(k) for k in ("verdict", "cascade_verdict", "interpretation", "cam_interpretation"))
    assert not any(is_verdict_key(k) for k in ("verdicts", "verdict_rule", "label", "subject", 3))


def test_quick_makes_a_smoke_test_whatever_else_is_given(tmp_path) -> None:
    baseline = get_experiment("baseline")
    assert resolve_config(baseline, None, {}, quick=False).smoke_test is False
    assert resolve_config(baseline, None, {}, quick=True).smoke_test is True
    assert resolve_config(baseline, None, {"smoke_test": False, "n": 500}, quick=True).smoke_test is True
    settings = tmp_path / "settings.yaml"
    settings.write_text("smoke_test: false\n")
    assert resolve_config(baseline, str(settings), {}, quick=True).smoke_test is True
    assert resolve_config(baseline, str(settings), {"smoke_test": True}, quick=False).smoke_test is True


def test_a_smoke_test_resumes_as_one_and_a_real_run_keeps_its_fingerprint(tmp_path) -> None:
    baseline = get_experiment("baseline")
    real = resolve_config(baseline, None, {"out": str(tmp_path / "real")}, quick=False)
    assert "smoke_test" not in fingerprint(real), "a real run's fingerprint (and older run directories) unchanged"
    quick = resolve_config(baseline, None, {"out": str(tmp_path / "quick")}, quick=True)
    assert fingerprint(quick)["smoke_test"] is True
    with open_run(tmp_path / "quick", "baseline", quick, resume=False) as rundir:
        (rundir.path / "metrics.json").write_text("{}")  # the run holds results
    saved = yaml.safe_load((tmp_path / "quick" / "config.yaml").read_text())
    assert saved["smoke_test"] is True
    saved.pop("experiment")
    resumed = resolve_config(baseline, None, saved, quick=False)  # what --resume does with config.yaml
    assert resumed.smoke_test is True
    with open_run(tmp_path / "quick", "baseline", resumed, resume=True):
        pass
    resumed.smoke_test = False
    with pytest.raises(ConfigError, match="smoke_test"):
        with open_run(tmp_path / "quick", "baseline", resumed, resume=True):
            pass
