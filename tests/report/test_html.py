"""Tests for the self-contained HTML report."""

from __future__ import annotations

import base64
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
from matplotlib.figure import Figure as MplFigure

from advspatial.errors import DataError
from advspatial.report.html import Figure, Section, Table, write_report
from helpers import ReportParser


def make_png(path: Path) -> Path:
    fig = MplFigure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    fig.savefig(path)
    return path


def test_report_embeds_images_and_sections(tmp_path: Path) -> None:
    png = make_png(tmp_path / "a.png")
    sections = [
        Section("Setup", ["model <b>x</b>"], tables=[Table("t", ["a", "b"], [["r", 0.123456], ["s", float("nan")]])]),
        Section("Where attacks act", figures=[Figure(png, "a line")], notes=["careful"]),
    ]
    out = write_report(tmp_path / "report.html", "title", "sub", {"n": 3}, sections)
    text = out.read_text()
    parser = ReportParser()
    parser.feed(text)
    assert parser.sections == ["setup", "where-attacks-act", "config"]
    assert len(parser.images) == 1 and parser.images[0].startswith("data:image/png;base64,")
    assert base64.b64decode(parser.images[0].split(",", 1)[1]) == png.read_bytes()
    assert parser.external == []
    assert "&lt;b&gt;" in text, "paragraph text is escaped"
    assert "0.1235" in text and ">-<" in text


@pytest.mark.parametrize("href", ["javascript:alert(1)", "https://example.org/x", "/etc/passwd", "../up.html",
                                  "models/../../up.html", "C:\\x", ""])
def test_a_link_leads_only_to_a_file_inside_the_report_directory(tmp_path: Path, href: str) -> None:
    """A study's link to a model's own report comes from its metrics.json: ``javascript:...`` became an
    ``<a href>``. Nothing is written when a link is refused."""
    with pytest.raises(DataError, match="does not lead to a file inside the report's directory"):
        write_report(tmp_path / "report.html", "t", "s", {}, [Section("x", links=[("own report", href)])])
    assert not (tmp_path / "report.html").exists()
    out = write_report(tmp_path / "report.html", "t", "s", {}, [Section("x", links=[("own", "models/a/report.html")])])
    assert 'href="models/a/report.html"' in out.read_text()


def test_a_figure_is_read_only_from_a_regular_file_inside_the_report_directory(tmp_path: Path) -> None:
    """A figure linked to a file outside the run, or named with '..', was embedded into report.html."""
    outside = make_png(tmp_path / "outside.png")
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    (run / "figures" / "linked.png").symlink_to(outside)
    for path in (run / "figures" / "linked.png", run / "figures" / ".." / ".." / "outside.png", outside):
        with pytest.raises(DataError, match="outside .* or is reached through a symbolic link"):
            write_report(run / "report.html", "t", "s", {}, [Section("x", figures=[Figure(path, "c")])])
    assert not (run / "report.html").exists()


def test_a_folded_table_counts_its_rows_in_words() -> None:
    from advspatial.report.html import render_table

    one = render_table(Table("a stage", ["stage"], [["clean-pass"]], folded=True))
    two = render_table(Table("stages", ["stage"], [["a"], ["b"]], folded=True))
    assert "<summary>a stage (1 row)</summary>" in one and "<summary>stages (2 rows)</summary>" in two
