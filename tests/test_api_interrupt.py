"""Ctrl-C in the Python API: advspatial.run, analyze and study end with one line saying how to complete the work
(the same call with resume=True), and that call completes it."""

from __future__ import annotations

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
