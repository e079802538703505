"""A self-contained HTML report: inline CSS, figures embedded as base64 PNG.

It opens offline in any browser and can be mailed as one file. Experiments
describe their report as a list of :class:`Section` objects.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import DataError
from ..files import atomic_write_text, inner_file
from ..statistics.wording import how_many

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;\
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.1em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
.subtitle{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em}
.banner{background:#fdecea;border:2px solid #c0392b;padding:.6em 1em;font-weight:600}
.answer{background:#eef5fb;border-left:4px solid #1f6fb2;padding:.4em 1em;margin:.8em 0}.answer p{margin:.4em 0}
.answer img.overview{display:block;max-width:100%;max-height:330px;margin:.3em auto}
nav.toc{font-size:.9em;color:#555}nav.toc a{margin-right:.9em}
details{margin:1em 0}pre{background:#f7f7f7;padding:.8em;overflow:auto}
"""


@dataclass
class Table:
    """A table; ``folded`` ones render inside a ``<details>`` block (long tables a reader opens on demand)."""

    caption: str
    columns: list[str]
    rows: list[list[Any]]
    folded: bool = False


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    anchor: str = ""
    #: (text, relative address) links listed after the paragraphs, e.g. to another run's own report
    links: list[tuple[str, str]] = field(default_factory=list)
    #: the tables before the paragraphs (a report's verdict table, which its first screen must show)
    tables_first: bool = False
    #: (title, text) blocks folded under a ``<details>`` at the section's end (a legend a reader opens on demand)
    folded: list[tuple[str, str]] = field(default_factory=list)


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return html.escape(str(value))


def render_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{format_cell(v)}</td>" for v in row) + "</tr>" for row in table.rows)
    rendered = f"<table><caption>{html.escape(table.caption)}</caption><tr>{head}</tr>{body}</table>"
    if table.folded:
        rows = how_many(len(table.rows), "row")
        return f"<details><summary>{html.escape(table.caption)} ({rows})</summary>{rendered}</details>"
    return rendered


def embed_png(path: Path, root: Path) -> str:
    """The figure file ``path`` as a data URL; only a regular file inside ``root`` (the report's own directory),
    reached without a symbolic link: a figure name comes from the run's findings, and a report must never carry
    a file from elsewhere (one-line :class:`~advspatial.errors.DataError` otherwise)."""
    data = base64.b64encode(own_png(inner_file(root, path, "figure"))).decode("ascii")
    return f"data:image/png;base64,{data}"


#: the first bytes of every PNG file
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def own_png(path: Path) -> bytes:
    """The bytes of the figure ``path``, when it is a PNG with no other name (one link): a hard link placed in a
    run would otherwise carry a file from elsewhere into the report (one-line
    :class:`~advspatial.errors.DataError`)."""
    try:
        with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NOFOLLOW)) as handle:
            links = os.fstat(handle.fileno()).st_nlink
            data = handle.read()
    except OSError as exc:
        raise DataError(f"figure {path} is unreadable ({exc.strerror or exc}); run again") from exc
    if links != 1:
        raise DataError(f"figure {path} has {links} names (a hard link to a file elsewhere?); a report embeds only "
                        "files its run wrote - remove it and run again")
    if not data.startswith(PNG_SIGNATURE):
        raise DataError(f"figure {path} is not a PNG image; a report embeds only the figures its run wrote - "
                        "remove it and run again")
    return data


def inner_link(href: str) -> str:
    """``href`` when it is a relative path to a file inside the report's directory (``models/a/report.html``); a
    scheme (``javascript:``, ``https:``), an absolute path or a ``..`` is a one-line
    :class:`~advspatial.errors.DataError`: a link's address may come from a findings file."""
    path = PurePosixPath(href)
    if not href or ":" in href or "\\" in href or path.is_absolute() or any(p in ("..", ".") for p in path.parts):
        raise DataError(f"link {href[:80]!r} does not lead to a file inside the report's directory; valid: a "
                        "relative path such as models/LABEL/report.html")
    return href


def render_section(section: Section, root: Path) -> str:
    """One section as HTML; figures and links only from inside ``root``, the report's directory."""
    anchor = section.anchor or section.title.lower().replace(" ", "-")
    parts = [f'<section id="{html.escape(anchor)}"><h2>{html.escape(section.title)}</h2>']
    tables = [render_table(t) for t in section.tables]
    if section.tables_first:
        parts += tables
    parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
    if section.links:
        items = "".join(f'<li><a href="{html.escape(inner_link(href))}">{html.escape(text)}</a></li>'
                        for text, href in section.links)
        parts.append(f"<ul>{items}</ul>")
    if not section.tables_first:
        parts += tables
    for fig in section.figures:
        parts.append(
            f'<figure><img alt="{html.escape(fig.caption)}" src="{embed_png(fig.path, root)}">'
            f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
        )
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in section.notes]  # notes read after what they explain
    parts += [f"<details><summary>{html.escape(title)}</summary><p>{html.escape(text)}</p></details>"
              for title, text in section.folded]
    parts.append("</section>")
    return "\n".join(parts)


def write_report(
    path: str | Path, title: str, subtitle: str, config: dict[str, Any], sections: Sequence[Section],
    banner: str = "", answer: Sequence[str] = (), answer_figure: Path | None = None,
    answer_links: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write the report to ``path``; the resolved config is included at the end.

    ``banner``: a line the page opens with, above the title (a smoke test's: the reader must see it first).
    ``answer``: the sentences the page opens with under the title (:func:`~advspatial.report.answer.answer_lines`):
    what the run found, before any table, under ``answer_figure`` (a PNG inside the run: the picture of the answer,
    so that the first screen shows it) and over ``answer_links`` ((text, section anchor) pairs: where the first screen
    sends a reader, e.g. to what would decide the undecided rows); the sections follow a one-line list of links.
    Figures and links come only from inside ``path``'s directory (:func:`embed_png`, :func:`inner_link`); when one
    does not, nothing is written and the report already there stays as it was.
    """
    path = Path(path)
    toc = "".join(
        f'<a href="#{html.escape(s.anchor or s.title.lower().replace(" ", "-"))}">{html.escape(s.title)}</a>'
        for s in sections
    )
    opening = "".join(f"<p>{html.escape(line)}</p>" for line in answer)
    opening += "".join(f'<p><a href="#{html.escape(anchor)}">{html.escape(text)}</a></p>'
                       for text, anchor in answer_links)
    if answer_figure is not None:
        opening = (f'<img class="overview" alt="where the model looks and where the attack acts" '
                   f'src="{embed_png(answer_figure, path.parent)}">' + opening)
    config_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{format_cell(v)}</td></tr>" for k, v in config.items())
    document = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>"
        + (f"<p class='banner'>{html.escape(banner)}</p>" if banner else "")
        + f"<h1>{html.escape(title)}</h1>"
        f"<p class='subtitle'>{html.escape(subtitle)}</p>"
        + (f"<div class='answer'>{opening}</div>" if opening else "")
        + f"<nav class='toc'>{toc}</nav>"
        + "\n".join(render_section(s, path.parent) for s in sections)
        + f"<section id='config'><h2>Resolved config</h2><table>{config_rows}</table></section>"
        "</body></html>"
    )
    atomic_write_text(path, document)
    return path
