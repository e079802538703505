"""The run's model passes in its report's setup section, and what it said it would cost beside what it took."""

from __future__ import annotations

from advspatial.report.html import Section
from advspatial.report.passes import forecast_sentence, outside_sentence, passes_paragraph, with_passes

PASSES = {"images": 4, "forward": 1200, "backward": 400, "calls": 30, "forward_per_image": 300.0,
          "backward_per_image": 100.0, "complete": True, "outside_stages": {"forward": 2, "backward": 0, "calls": 1},
          "stages": {"attack/pgd": {"forward": 800, "backward": 400, "calls": 20},
                     "clean-pass": {"forward": 398, "backward": 0, "calls": 9}}}


def test_the_setup_section_states_the_totals_and_a_table_per_stage() -> None:
    sections = [Section("Verdicts", ["v"]), Section("Setup", ["model on data"])]
    setup = with_passes(sections, PASSES)[1]
    assert setup.paragraphs[0] == "model on data"
    assert setup.paragraphs[1] == passes_paragraph(PASSES)
    assert "1,200 images forward" in setup.paragraphs[1] and "400 back" in setup.paragraphs[1]
    assert "300.0 forward and 100.0 backward per test image, n = 4" in setup.paragraphs[1]
    rows = setup.tables[-1].rows
    assert rows[0] == ["attack/pgd", 800, 400, 200.0, 100.0, 40.0, "-", "-", "-", "-", "-"]  # counted before rounds
    assert rows[-1][0] == "(outside stages, this process)" and len(rows) == 3
    assert sections[1].paragraphs == ["model on data"]  # the input is not changed


def test_a_report_without_a_setup_section_gets_one_and_an_old_run_gets_nothing() -> None:
    sections = [Section("Verdicts", ["v"])]
    assert [s.title for s in with_passes(sections, PASSES)] == ["Verdicts", "Setup"]
    assert with_passes(sections, None) == sections


def test_incomplete_counts_are_called_lower_bounds() -> None:
    assert "lower bounds" in passes_paragraph({**PASSES, "complete": False})
    assert "lower bounds" not in passes_paragraph(PASSES)


def test_a_run_counted_with_rounds_states_what_a_gpu_would_wait_on() -> None:
    counted = {**PASSES, "rounds": 50, "backward_calls": 20, "syncs": 35, "images_per_round": 24.0,
               "syncs_per_call": 0.88, "non_model_seconds_per_call": 0.0012,
               "stages": {"attack/pgd": {"forward": 800, "backward": 400, "calls": 20, "backward_calls": 20,
                                         "rounds": 10, "syncs": 8, "images_per_round": 80.0, "syncs_per_call": 0.2,
                                         "non_model_seconds_per_call": 0.002, "wall_seconds": 1.234}}}
    text = passes_paragraph(counted)
    assert "50 rounds" in text and "24.0 images each" in text and "20 backward calls" in text
    assert "35 host synchronisations outside the model (0.88 per call)" in text and "1.20 ms of CPU" in text
    row = with_passes([Section("Setup", [])], counted)[0].tables[-1].rows[0]
    assert row == ["attack/pgd", 800, 400, 200.0, 100.0, 40.0, 10, 80.0, 0.2, 2.0, 1.23]
    assert "rounds" not in passes_paragraph(PASSES)


def test_stages_read_from_the_model_cache_are_named_with_the_passes_not_repeated() -> None:
    reused = {**PASSES, "reused_stages": {"gate/hirescam/mprt": {"forward": 1500, "backward": 1400},
                                          "prior-classes": {"forward": 2000, "backward": 1000}}}
    text = passes_paragraph(reused)
    assert "2 stages (gate/hirescam/mprt, prior-classes) depend only on the model" in text
    assert "3,500 forward and 2,400 backward image-passes not repeated" in text
    assert "model cache" not in passes_paragraph(PASSES)


FORECAST = {"seconds": 300.0, "dominant": "the faithfulness gates", "dominant_share": 0.5,
            "sentence": "about 5 minutes on this machine (the faithfulness gates about 50%; an estimate)"}


def test_the_forecast_said_before_the_run_is_stated_beside_what_it_took() -> None:
    text = forecast_sentence({"forecast": FORECAST, "wall_seconds": 330.0})
    assert text == ("Before its first stage the run said: about 5 minutes on this machine (the faithfulness gates "
                    "about 50%; an estimate). It took 5 min 30 s, 1.10 times the 5 min 00 s forecast.")
    setup = with_passes([Section("Setup", ["model on data"])], PASSES, text)[0]
    assert setup.paragraphs == ["model on data", passes_paragraph(PASSES), text]
    assert with_passes([Section("Verdicts", ["v"])], None, text)[1].paragraphs == [text]  # an old run's ledger
    for said_nothing in ({"wall_seconds": 330.0}, {"forecast": None, "wall_seconds": 3.0}, {"forecast": FORECAST}):
        assert forecast_sentence(said_nothing) == ""


def test_the_time_outside_the_stages_is_stated_by_phase_the_largest_first() -> None:
    phases = {"setup": {"cpu_seconds": 1.0, "wall_seconds": 1.25}, "rows": {"cpu_seconds": 0.0, "wall_seconds": 0.01},
              "statistics": {"cpu_seconds": 20.0, "wall_seconds": 21.5}}
    sentence = outside_sentence({**PASSES, "outside_stages": {**PASSES["outside_stages"], "phase_seconds": phases}})
    assert sentence == (" Outside its stages this process spent 22.8 s (elapsed, on this machine): the statistics "
                        "and verdicts 21.5 s, loading the model and images 1.2 s.")  # the rows' 0.01 s: too small
    assert sentence in passes_paragraph({**PASSES, "outside_stages": {"phase_seconds": phases}})
    assert outside_sentence(PASSES) == ""  # a run that recorded no phases


def test_one_call_and_one_round_are_said_in_the_singular() -> None:
    """A baseline run makes one forward call: "in 1 forward call", "1 round", "1 backward call"."""
    one = {**PASSES, "calls": 1, "rounds": 1, "backward_calls": 1, "syncs": 1, "images_per_round": 40.0}
    text = passes_paragraph(one)
    assert "in 1 forward call (" in text and "1 round (" in text and ", 1 backward call, " in text, text
    assert "1 host synchronisation outside" in text
    assert "in 30 forward calls" in passes_paragraph(PASSES)
