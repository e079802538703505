"""The documentation site (mkdocs.yml, docs/) builds in strict mode, offline, and holds its key pages.

One strict build into a temporary directory (``make docs`` builds the same into site/), then
checks on its output: every page exists, the API reference documents every name each package
exports in ``__all__``, the experiment pages carry the generated settings tables, the methods page
defines RoI/RoA and every verdict word, and nothing points at web fonts or social cards.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import load_script

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                       reason="mkdocs is not installed: pip install -e '.[docs]' (or make docs)"),
    pytest.mark.xdist_group("docs-build"),  # one build, on one worker
]

def registered_experiments() -> list[str]:
    """Every registered experiment: each has a page and a navigation entry (docs/hooks.py derives them)."""
    from advspatial.experiments import experiments

    return list(experiments())


EXPERIMENTS = registered_experiments()
# API page -> the package it documents
API_PAGES = {
    "advspatial": "advspatial", "attacks": "advspatial.attacks", "maps": "advspatial.maps",
    "regions": "advspatial.regions", "statistics": "advspatial.statistics",
    "faithfulness": "advspatial.faithfulness", "defence": "advspatial.defence", "experiments": "advspatial.experiments",
    "models": "advspatial.models", "data": "advspatial.data", "analysis": "advspatial.analysis",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    print(f"strict docs build: {elapsed:.1f} s")
    return out


def read(site: Path, page: str) -> str:
    path = site / page
    assert path.is_file(), f"{page} missing from the built site"
    return path.read_text(encoding="utf-8")


def test_every_page_is_built(site: Path) -> None:
    pages = ["index.html", "getting-started.html", "methods.html", "glossary.html", "experiments/index.html",
             "api/index.html", "findings/index.html",
             "findings/propagation.html", "findings/perceptual.html", "findings/pse.html",
             "findings/localized-training.html"]
    pages += [f"experiments/{name}.html" for name in EXPERIMENTS]
    pages += [f"api/{name}.html" for name in API_PAGES]
    for page in pages:
        assert read(site, page)


def test_api_reference_documents_every_exported_name(site: Path) -> None:
    attacks = read(site, "api/attacks.html")
    assert 'id="advspatial.attacks.Attack"' in attacks
    assert "make_attack" in attacks
    for page, package in API_PAGES.items():
        html = read(site, f"api/{page}.html")
        assert f'id="{package}"' in html
        exported = getattr(importlib.import_module(package), "__all__", [])
        missing = [name for name in exported if f'id="{package}.{name}"' not in html]
        assert not missing, f"api/{page}.html lacks {package}.{missing} (exported in __all__)"


def test_sphinx_roles_of_docstrings_are_rendered_as_code(site: Path) -> None:
    for page in API_PAGES:
        html = read(site, f"api/{page}.html")
        assert ":func:<code>" not in html and ":class:<code>" not in html, page


def test_experiment_pages_carry_the_generated_settings(site: Path) -> None:
    from advspatial.experiments import get_experiment

    common = read(site, "experiments/index.html")
    assert "<code>--batch-size</code>" in common
    for name in EXPERIMENTS:
        html = read(site, f"experiments/{name}.html")
        assert "settings:" not in html, f"an unreplaced settings marker on {name}"
        config_cls = get_experiment(name).config_cls
        hidden = getattr(config_cls, "CLI_HIDDEN", frozenset())  # settings the experiment fixes itself
        fields = [f.name for f in dataclasses.fields(config_cls) if f.name not in hidden]
        undocumented = [f for f in fields if f"<code>{f}</code>" not in html and f"<code>{f}</code>" not in common]
        assert not undocumented, f"experiments/{name}.html lacks settings {undocumented}"
    assert "<code>--eps-linf</code>" in read(site, "experiments/spatial.html")


def test_getting_started_shows_the_generated_presets_table(site: Path) -> None:
    """The presets' budgets come from the presets module (docs/hooks.py), so the page shows what --preset sets."""
    from advspatial.experiments.presets import GENERIC_BUDGETS, PRESETS

    html = read(site, "getting-started.html")
    assert "presets: table" not in html, "an unreplaced presets marker"
    missing = [key for key in GENERIC_BUDGETS if f"{key}:" not in html]
    assert not missing, f"getting-started.html lacks the budgets {missing}"
    assert all(f"<th>{name}</th>" in html for name in PRESETS if name != "none")
    assert "8/255" in html  # the cifar10 preset's L-inf budget, as a fraction of 255


def test_every_registered_experiment_is_documented(site: Path) -> None:
    """Each registered experiment has a page, a row in the index table and a navigation entry."""
    index = read(site, "experiments/index.html")
    for name in EXPERIMENTS:
        assert (site / "experiments" / f"{name}.html").is_file(), name
        assert f'href="{name}/"' in index or f'href="{name}.html"' in index, f"{name} is not in the index table"
    nav = read(site, "index.html")
    missing = [name for name in EXPERIMENTS if f"experiments/{name}" not in nav]
    assert not missing, f"not in the navigation: {missing}"


def load_hooks() -> Any:
    return load_script(ROOT / "docs" / "hooks.py", "docs_hooks")


def test_an_experiment_without_a_page_gets_a_generated_one() -> None:
    """A new experiment is one package plus one registry line: the hooks give it a navigation entry and a page
    with its description and settings table (checked on a registered experiment, as if it had no page)."""
    from advspatial.experiments import get_experiment

    hooks = load_hooks()
    page = hooks.generated_page("propagation", get_experiment("propagation"))
    assert get_experiment("propagation").description in page
    assert "`pixels_list`" in page and "| setting (YAML key) |" in page
    config = {"nav": [{"Home": "index.md"}, {"Experiments": ["experiments/index.md"]}]}
    nav = hooks.on_config(config)["nav"][1]["Experiments"]
    assert nav[0] == "experiments/index.md" and {"propagation": "experiments/propagation.md"} in nav
    assert len(nav) == 1 + len(EXPERIMENTS)


def test_methods_page_defines_the_regions_and_every_verdict(site: Path) -> None:
    from advspatial.statistics.verdicts import VERDICTS

    methods = read(site, "methods.html")
    assert "Region of Importance" in methods and "Region of Attack" in methods
    missing = [word for word in VERDICTS if word not in methods]
    assert not missing, f"methods.html does not explain the verdicts {missing}"
    assert "helps" in methods  # the defence's own verdict words


def test_site_fetches_no_web_fonts_and_has_no_social_cards(site: Path) -> None:
    for path in site.rglob("*.html"):
        html = path.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in html and "fonts.gstatic.com" not in html, path
    assert not (site / "assets" / "images" / "social").exists()
