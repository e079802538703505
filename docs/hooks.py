"""MkDocs hooks of the advspatial documentation (named in mkdocs.yml under ``hooks:``), and the script that
renders its generated tables into the Markdown sources.

1. Settings tables generated from the experiments' config dataclasses, so the pages never drift from
   ``advspatial run NAME --help``. A page opens a table with ``<!-- settings: NAME -->`` (an experiment name) or
   ``<!-- settings: common -->`` (the settings every experiment has) on a line of its own and closes it with
   ``<!-- /settings -->``; the table between the two is generated.
2. The experiments' pages and navigation come from the experiment registry: the "Experiments"
   entry of the navigation lists every registered experiment (``on_config``), and an experiment
   without a hand-written page docs/experiments/NAME.md gets a generated one (``on_files``: its
   description, its package's docstring and its settings table), so a new experiment is one package
   plus one registry line.
3. The presets' budget table (``<!-- presets: table -->`` ... ``<!-- /presets -->``) from
   ``advspatial.experiments.presets``, so the budgets a page shows are the ones ``--preset`` sets; the experiments'
   table (``<!-- experiments: table -->`` ... ``<!-- /experiments -->``) from the registry.
4. Sphinx-style roles in docstrings (``:func:`x```, ``:class:`~a.b.C```) are shown
   as plain code: the Markdown docstrings of the API reference have no such roles.

The tables are written into the Markdown sources, so a page reads the same on GitHub, in an editor and in the built
site: ``python docs/hooks.py`` renders every table of docs/ in place (``--check``: exit 1 naming the pages whose
tables are stale, writing nothing); the build renders them again, so the site never shows a stale one, and
tests/test_docs_tables.py fails while a source is stale.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

#: an opening marker on a line of its own, what an earlier rendering left up to its closing marker (if any), and the
#: closing marker: ``<!-- KIND: ARGUMENT -->`` ... ``<!-- /KIND -->``
GENERATED = re.compile(r"^<!--[ \t]*(settings|presets|experiments):[ \t]*([\w-]+)[ \t]*-->[ \t]*\n"
                       r"((?:(?!<!--).*\n)*?<!--[ \t]*/\1[ \t]*-->[ \t]*$)?", re.MULTILINE)
#: a marker's line, left out of the built site's pages (the site shows the table alone)
MARKER_LINE = re.compile(r"^<!--[ \t]*/?(?:settings|presets|experiments)\b[^>]*-->[ \t]*\n?", re.MULTILINE)
ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const|term):(<code>)~?")


def _import_experiments() -> Any:
    try:
        import advspatial.experiments as experiments
    except ImportError:  # not installed: fall back to the source tree beside this file
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
        import advspatial.experiments as experiments
    return experiments


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return "`" + ",".join(map(str, value)) + "`" if value else '`""`'
    if value == "":
        return '`""`'
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _option(name: str, value: Any) -> str:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return f"`{flag}` / `--no-{name.replace('_', '-')}`"
    return f"`{flag}`"


def settings_table(name: str) -> str:
    """Markdown table of an experiment's own settings (or, for ``common``, those every experiment has)."""
    experiments = _import_experiments()
    base_fields = {f.name: f for f in dataclasses.fields(experiments.ExperimentConfig)}
    if name == "common":
        cls, fields = experiments.ExperimentConfig, list(base_fields.values())
    else:
        registry = experiments.experiments()
        if name not in registry:
            raise ValueError(f"<!-- settings: {name} -->: no experiment {name!r}; known: {', '.join(registry)}")
        cls = registry[name].config_cls
    quick = dict(getattr(cls, "QUICK", {})) if name != "common" else {}
    if name != "common":  # its own settings, those whose default it changes, those --quick changes
        hidden = getattr(cls, "CLI_HIDDEN", frozenset())  # set by the experiment itself, not options
        fields = [f for f in dataclasses.fields(cls)
                  if f.name not in hidden and (f.name not in base_fields or f.name in quick
                                               or _default(f) != _default(base_fields[f.name]))]
    if not fields:
        return "*This experiment has only the [settings every experiment has](index.md#common-settings).*\n"
    header = "| setting (YAML key) | CLI option | default | " + ("with `--quick` | " if quick else "")
    lines = [header + "what it sets |", "|---|---|---|" + ("---|" if quick else "") + "---|"]
    for f in fields:
        value = _default(f)
        help_text = f.metadata.get("help", "")
        if isinstance(value, list):
            help_text += " (comma-separated on the command line, a list in YAML)"
        row = f"| `{f.name}` | {_option(f.name, value)} | {_cell(_show(value))} | "
        if quick:
            row += (_cell(_show(quick[f.name])) if f.name in quick else "") + " | "
        lines.append(row + _cell(help_text) + " |")
    return "\n".join(lines) + "\n"


def registered() -> dict[str, Any]:
    """Every registered experiment, by name (the registry's order: sorted)."""
    return dict(_import_experiments().experiments())


def generated_page(name: str, experiment: Any) -> str:
    """The page of an experiment without a hand-written one: its description, its docstring, its settings."""
    import importlib

    module = importlib.import_module(experiment.run.__module__.rsplit(".", 1)[0]
                                     if experiment.run.__module__.endswith(".run") else experiment.run.__module__)
    doc = (module.__doc__ or "").strip()
    return (f"# {name}\n\n`advspatial run {name}`: {experiment.description}.\n\n"
            "*This page is generated from the experiment's registry line and its package docstring.*\n\n"
            + (f"```text\n{doc}\n```\n\n" if doc else "")
            + "## Settings\n\nIts own settings, and the common ones whose default it changes:\n\n"
            + settings_table(name))


def on_config(config: Any) -> Any:
    """The "Experiments" navigation entry: the index page, then one page per registered experiment."""
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and "Experiments" in entry:
            entry["Experiments"] = ["experiments/index.md",
                                    *({name: f"experiments/{name}.md"} for name in registered())]
    return config


def on_files(files: Any, config: Any) -> Any:
    """A generated page for every registered experiment without docs/experiments/NAME.md."""
    from mkdocs.structure.files import File

    for name, experiment in registered().items():
        uri = f"experiments/{name}.md"
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, content=generated_page(name, experiment)))
    return files


def experiments_table() -> str:
    """A Markdown table of every registered experiment: its page and its one-line description."""
    rows = [f"| [`{name}`]({name}.md) | {_cell(experiment.description)} |" for name, experiment in registered().items()]
    return "\n".join(["| experiment | what it measures |", "|---|---|", *rows]) + "\n"


def presets_table() -> str:
    """The Markdown table of every preset's budgets (``advspatial.experiments.presets.preset_table``)."""
    _import_experiments()
    from advspatial.experiments.presets import preset_table

    return preset_table() + "\n"


def generated_table(kind: str, argument: str) -> str:
    """The Markdown a marker ``<!-- KIND: ARGUMENT -->`` stands for."""
    if kind == "settings":
        return settings_table(argument)
    if argument != "table":
        raise ValueError(f"<!-- {kind}: {argument} -->: valid: <!-- {kind}: table -->")
    return presets_table() if kind == "presets" else experiments_table()


def render_tables(markdown: str) -> str:
    """``markdown`` with the table of every marker rendered between it and its closing marker (added when missing),
    a blank line on each side so that every Markdown reader shows the table."""
    def rendered(m: re.Match[str]) -> str:
        kind, argument, closed = m.group(1), m.group(2), m.group(3) is not None
        end = "" if closed else "\n"  # a first rendering: the opening line's own line end was matched
        return f"<!-- {kind}: {argument} -->\n\n{generated_table(kind, argument)}\n<!-- /{kind} -->{end}"

    return GENERATED.sub(rendered, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    from mkdocs.exceptions import PluginError

    try:
        return MARKER_LINE.sub("", render_tables(markdown))
    except ValueError as exc:
        raise PluginError(f"{page.file.src_uri}: {exc}") from exc


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return ROLE.sub(r"\1", html)


def documentation_pages() -> list[Path]:
    """The Markdown sources whose tables are rendered: every page under docs/."""
    return sorted(Path(__file__).resolve().parent.rglob("*.md"))


def main(argv: list[str]) -> int:
    """``python docs/hooks.py [--check]``: render the tables into the pages (or only name the stale ones)."""
    check = argv == ["--check"]
    if argv and not check:
        print("usage: python docs/hooks.py [--check]", file=sys.stderr)
        return 2
    stale = []
    for page in documentation_pages():
        text = page.read_text(encoding="utf-8")
        rendered = render_tables(text)
        if rendered != text:
            stale.append(page)
            if not check:
                page.write_text(rendered, encoding="utf-8")
    for page in stale:
        print(f"{'stale' if check else 'rendered'}: {page}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
