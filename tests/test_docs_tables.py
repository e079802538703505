"""The generated tables of the documentation are in its Markdown sources and up to date.

The settings tables of docs/experiments/*.md, the experiments' table and the presets' table of docs/getting-started.md
are rendered into the pages (docs/hooks.py), so a page reads the same on GitHub, in an editor and in the built site.
A stale table fails here: render them again with ``python docs/hooks.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest
from helpers import load_script

ROOT = Path(__file__).resolve().parent.parent


def hooks() -> ModuleType:
    return load_script(ROOT / "docs" / "hooks.py", "advspatial_docs_hooks")


PAGES = [p for p in sorted((ROOT / "docs").rglob("*.md")) if "<!-- " in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_generated_table_of_the_page_is_rendered_and_current(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert hooks().render_tables(text) == text, (
        f"{page.relative_to(ROOT)}: a generated table is missing or stale; render it with: python docs/hooks.py")


def test_the_pages_that_need_tables_have_them() -> None:
    """The collection above is not empty: every experiment's page, the index and getting-started hold tables."""
    found = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in PAGES}
    assert "<!-- presets: table -->" in found["docs/getting-started.md"]
    assert "<!-- experiments: table -->" in found["docs/experiments/index.md"]
    for name in ("maps", "spatial", "analyze"):
        page = found[f"docs/experiments/{name}.md"]
        table = re.search(rf"<!-- settings: {name} -->\n\n(\|.*\n)+\n<!-- /settings -->", page)
        assert table and table.group(0).count("\n|") >= 3, name


def test_rendering_replaces_an_old_table_and_keeps_the_text_around_it() -> None:
    module = hooks()
    page = "Before.\n\n<!-- settings: baseline -->\n\n| an old | table |\n|---|---|\n\n<!-- /settings -->\n\nAfter.\n"
    rendered = module.render_tables(page)
    assert rendered.startswith("Before.\n\n<!-- settings: baseline -->\n\n") and rendered.endswith(
        "\n<!-- /settings -->\n\nAfter.\n")
    assert "an old" not in rendered and module.render_tables(rendered) == rendered


def test_a_marker_without_its_closing_marker_gets_its_table_and_the_closing_marker() -> None:
    module = hooks()
    rendered = module.render_tables("<!-- presets: table -->\nAfter.\n")
    assert rendered.endswith("\n<!-- /presets -->\nAfter.\n") and module.presets_table() in rendered


def test_the_check_names_a_stale_page_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    module = hooks()
    page = tmp_path / "page.md"
    page.write_text("<!-- settings: baseline -->\n", encoding="utf-8")
    monkeypatch.setattr(module, "documentation_pages", lambda: [page])
    assert module.main(["--check"]) == 1 and f"stale: {page}" in capsys.readouterr().out
    assert page.read_text(encoding="utf-8") == "<!-- settings: baseline -->\n"
    assert module.main([]) == 0 and module.main(["--check"]) == 0


def test_the_site_shows_the_tables_without_their_markers() -> None:
    module = hooks()

    class Page:
        class file:  # the shape of mkdocs' page.file
            src_uri = "page.md"

    shown = module.on_page_markdown("A.\n\n<!-- settings: baseline -->\n", Page(), {}, None)
    assert "<!--" not in shown and "| setting (YAML key) |" in shown and shown.startswith("A.\n\n")


def test_the_site_stylesheet_wraps_tables_between_words() -> None:
    """mkdocs.yml names the stylesheet, and it keeps identifiers whole (no break inside ``gate_calibration``)."""
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    sheets = [ROOT / "docs" / sheet for sheet in config.get("extra_css", [])]
    css = " ".join(sheet.read_text(encoding="utf-8") for sheet in sheets)
    assert sheets and "word-break: normal" in css and "overflow-wrap: normal" in css and "white-space: nowrap" in css
