"""Tests for the self-contained HTML report."""

from __future__ import annotations

import base64
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure as MplFigure

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
