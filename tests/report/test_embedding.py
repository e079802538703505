"""A report embeds only its run's own figures: a regular PNG file with one name, inside the run."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
from matplotlib.figure import Figure as MplFigure

from advspatial.errors import DataError
from advspatial.report.html import Figure, Section, write_report


def make_png(path: Path) -> Path:
    fig = MplFigure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    fig.savefig(path)
    return path


def figure_section(path: Path) -> list[Section]:
    return [Section("x", figures=[Figure(path, "c")])]


def test_a_hard_link_to_a_file_outside_the_run_is_not_embedded(tmp_path: Path) -> None:
    secret = make_png(tmp_path / "secret.png")
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    os.link(secret, run / "figures" / "forest.png")
    with pytest.raises(DataError, match="2 names"):
        write_report(run / "report.html", "t", "s", {}, figure_section(run / "figures" / "forest.png"))
    assert not (run / "report.html").exists()


def test_a_file_that_is_not_a_png_is_not_embedded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    (run / "figures" / "a.png").write_text("secret text")
    with pytest.raises(DataError, match="is not a PNG image"):
        write_report(run / "report.html", "t", "s", {}, figure_section(run / "figures" / "a.png"))


def test_the_run_s_own_png_is_embedded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    png = make_png(run / "figures" / "a.png")
    text = write_report(run / "report.html", "t", "s", {}, figure_section(png)).read_text()
    assert "data:image/png;base64," in text
