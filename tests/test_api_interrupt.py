"""Ctrl-C in the Python API: advspatial.run, analyze and study end with one line saying how to complete the work
(the same call with resume=True), and that call completes it. And a silent step of advspatial.run gets a line."""

from __future__ import annotations

import time

import pytest
from helpers import self_labelled_tiny_cnn

import advspatial
from advspatial.api import Interrupted


def interrupt(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise KeyboardInterrupt


def check_one_line(caught: pytest.ExceptionInfo[Interrupted], what: str, out: object, frames: int = 2) -> None:
    exc = caught.value
    assert isinstance(exc, KeyboardInterrupt)  # code that catches KeyboardInterrupt keeps working
    assert str(exc) == (f"advspatial: aborted; complete the {what} with: the same call and resume=True "
                        f"(out={str(out)!r}); its finished stages are kept")
    assert exc.__cause__ is None and exc.__suppress_context__  # the interrupted frames are not shown
    assert len(caught.traceback) == frames  # the caller's line (this test) and advspatial's


def test_ctrl_c_in_run_says_how_to_resume_and_resume_completes_it(tmp_path, monkeypatch) -> None:
    from advspatial.experiments import running

    model, x, y = self_labelled_tiny_cnn(8)
    out = tmp_path / "r"
    with monkeypatch.context() as patch:
        patch.setattr(running, "write_results", interrupt)  # every stage computed, then Ctrl-C
        with pytest.raises(Interrupted) as caught:
            advspatial.run("baseline", model=model, data=(x, y), out=str(out), progress=False)
    check_one_line(caught, "run", out)
    assert not (out / "metrics.json").exists() and any((out / "stages").rglob("*.pt"))
    done = advspatial.run("baseline", model=model, data=(x, y), out=str(out), progress=False, resume=True)
    assert (out / "metrics.json").is_file() and len(done.rows) == 8


def test_ctrl_c_in_analyze_names_its_run_directory(tmp_path, monkeypatch) -> None:
    import advspatial.experiments

    model, x, y = self_labelled_tiny_cnn(4)
    monkeypatch.setattr(advspatial.experiments, "run_experiment", interrupt)
    with pytest.raises(Interrupted) as caught:
        advspatial.analyze(model, clean=x, adv=(x + 0.05).clamp(0, 1), labels=y, out=str(tmp_path / "a"),
                           progress=False)
    check_one_line(caught, "run", tmp_path / "a", frames=3)  # analyze calls run


def test_ctrl_c_in_study_says_how_to_resume(tmp_path, monkeypatch) -> None:
    from advspatial.studies import run as study_run

    model, x, y = self_labelled_tiny_cnn(8)
    other, _, _ = self_labelled_tiny_cnn(1)
    monkeypatch.setattr(study_run, "measure_model", interrupt)  # Ctrl-C while the first model is measured
    out = tmp_path / "s"
    with pytest.raises(Interrupted) as caught:
        advspatial.study({"a": model, "b": other}, data=(x, y), out=out, quick=True, n=8, attacks=["fgsm"],
                         progress=False)
    check_one_line(caught, "study", out)
    assert (out / "study.yaml").is_file()  # what resume=True reads back


def test_a_silent_step_of_run_gets_a_still_working_line(tmp_path, monkeypatch, capsys) -> None:
    """advspatial.run printed nothing for 18 minutes while a check with no bar of its own ran."""
    from advspatial import progress
    from advspatial.experiments import running

    write_results = running.write_results

    def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.6)  # a step without a bar, longer than the interval
        return write_results(*args, **kwargs)

    monkeypatch.setattr(running, "write_results", slow)
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.15)
    monkeypatch.setattr(progress, "TICK", 0.02)
    model, x, y = self_labelled_tiny_cnn(4)
    out = tmp_path / "r"
    advspatial.run("baseline", model=model, data=(x, y), out=str(out), progress=True)
    beats = [line for line in capsys.readouterr().err.splitlines() if line.startswith(f"baseline: {out}: still")]
    assert beats and beats[0].startswith(f"baseline: {out}: still working, ")
    advspatial.run("baseline", model=model, data=(x, y), out=str(tmp_path / "quiet"), progress=False)
    assert "still working" not in capsys.readouterr().err  # progress=False: no heartbeat either
