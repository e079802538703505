"""MkDocs hooks of the advspatial documentation (named in mkdocs.yml under ``hooks:``).

1. Settings tables generated from the experiments' config dataclasses at build time,
   so the pages never drift from ``advspatial run NAME --help``. A page writes
   ``<!-- settings: NAME -->`` (an experiment name) or ``<!-- settings: common -->``
   (the settings every experiment has) on a line of its own.
2. The experiments' pages and navigation come from the experiment registry: the "Experiments"
   entry of the navigation lists every registered experiment (``on_config``), and an experiment
   without a hand-written page docs/experiments/NAME.md gets a generated one (``on_files``: its
   description, its package's docstring and its settings table), so a new experiment is one package
   plus one registry line.
3. The presets' budget table (``<!-- presets: table -->``) from ``advspatial.experiments.presets``, so the
   budgets a page shows are the ones ``--preset`` sets.
4. Sphinx-style roles in docstrings (``:func:`x```, ``:class:`~a.b.C```) are shown
   as plain code: the Markdown docstrings of the API reference have no such roles.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

TABLE = re.compile(r"^<!--\s*experiments:\s*table\s*-->\s*$", re.MULTILINE)
PRESETS = re.compile(r"^<!--\s*presets:\s*table\s*-->\s*$", re.MULTILINE)
MARKER = re.compile(r"^<!--\s*settings:\s*([\w-]+)\s*-->\s*$", re.MULTILINE)
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
            raise PluginError(f"<!-- settings: {name} -->: no experiment {name!r}; known: {', '.join(registry)}")
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


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markdown = TABLE.sub(lambda m: experiments_table(), markdown)
    markdown = PRESETS.sub(lambda m: presets_table(), markdown)
    return MARKER.sub(lambda m: settings_table(m.group(1)), markdown)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return ROLE.sub(r"\1", html)
