"""Fuzzing ``advspatial report DIR`` (experiments/running.py, studies/run.py, report/html.py) on damaged run and
study directories: any value put at any place of metrics.json, run.json or study.yaml, a key renamed (to ``../``,
``javascript:``...) or removed, the whole file replaced, a figure (a symbolic or a hard link) or the figures
folder linked from outside. The property: the report is re-rendered, or the command refuses in one line and
leaves the report that was there; a file from outside the directory is never embedded and never written.
Budget and profiles: tests/fuzzing.py."""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import TinyCNN
from fuzzing import fuzz_settings, valid_or_one_line
from helpers import OUTSIDE_SECRET, plant_outside_figures, synthetic_images
from hypothesis import given
from hypothesis import strategies as st

import advspatial
from advspatial.experiments.results import findings_checksum
from advspatial.experiments.running import rerender_report
from advspatial.studies.findings import ModelSummary, StudyFindings
from advspatial.studies.models import parse_models
from advspatial.studies.run import rerender_study, write_study
from advspatial.studies.running import STUDY_FILE, Study

_json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.integers(10**300, 10**400),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
              st.sampled_from(["javascript:alert(1)", "../../x", "/etc/passwd", "models/a/report.html", "pgd"])),
    lambda inner: st.one_of(st.lists(inner, max_size=2), st.dictionaries(st.text(max_size=4), inner, max_size=2)),
    max_leaves=4)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cheapest finished maps run with figures: an untrained TinyCNN, 8 synthetic images, FGSM."""
    out = tmp_path_factory.mktemp("fuzz-report") / "run"
    torch.manual_seed(0)
    advspatial.run("maps", model=TinyCNN(num_classes=4).eval(), data=synthetic_images(8, seed=2), out=str(out),
                   quick=True, n=8, attacks=["fgsm"], panel=[], gate_n=8, randomization_images=2, permutations=50,
                   figure_images=1, progress=False)
    return out


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study directory written by the study's own writer from findings made by hand (nothing measured)."""
    out = tmp_path_factory.mktemp("fuzz-report") / "study"
    out.mkdir()
    study = Study(parse_models("a.py:f,b.py:f"), {"n": 8}, str(out))
    models = {label: ModelSummary(f"{label}.py:f", f"models/{label}/report.html", 10, 2, [28, 28], 0.5, 0.25,
                                  "gradcam", "failed", 1.0, covariates={"epochs": 3.0}) for label in ("a", "b")}
    (out / STUDY_FILE).write_text(yaml.safe_dump(study.record(), sort_keys=False))
    write_study(out, study, StudyFindings("fashion-mnist", 8, models, {}, [], [], [], [], []), [], 1.0)
    return out


def paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value (its keys and indices from the top)."""
    yield at
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in items:
        yield from paths(item, (*at, key))


@st.composite
def damages(draw: st.DrawFn, record: Any, names: list[str]) -> tuple[str, Any]:
    """(file name, its new content): a value put somewhere, a key renamed or removed, or the whole file replaced."""
    name = draw(st.sampled_from(names))
    kind = draw(st.sampled_from(["set", "set", "rename", "remove", "text"]))
    if kind == "text":  # PyYAML scans nesting in quadratic time: YAML files nest less deep than JSON ones here
        depth = st.integers(1, 50_000 if name.endswith(".json") else 1_200)
        return name, draw(st.one_of(st.text(max_size=40), depth.map(lambda d: "[" * d + "]" * d)))
    content = json.loads(json.dumps(record[name]))
    places = [p for p in paths(content) if p]
    if not places:
        return name, content
    *parent_path, last = draw(st.sampled_from(places))
    parent = content
    for key in parent_path:
        parent = parent[key]
    if kind == "set":
        parent[last] = draw(_json_value)
    elif kind == "remove" or isinstance(parent, list):
        del parent[last]
    else:
        parent[draw(st.sampled_from(["../../x", "javascript:x", "", "pgd", "a"]))] = parent.pop(last)
    stamp = content.get("run") if name == "metrics.json" and isinstance(content, dict) else None
    if isinstance(stamp, dict) and draw(st.booleans()):  # as a file made to pass the findings checksum would be
        stamp["findings"] = findings_checksum(content)
    return name, content


def write_damage(out: Path, name: str, content: Any) -> None:
    file = out / name
    if isinstance(content, str):
        file.write_text(content, encoding="utf-8", errors="surrogatepass")
    elif name.endswith(".json"):
        file.write_text(json.dumps(content))
    else:
        file.write_text(yaml.safe_dump(content, allow_unicode=True))


def check_report(template: Path, rerender: Any, name: str, content: Any, link: str) -> None:
    """Copy ``template``, damage it, re-render: a report or one line, the old report kept, nothing from outside."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "dir")
        shutil.copytree(template, out, symlinks=True)
        write_damage(out, name, content)
        plant_outside_figures(out, Path(tmp), link)
        before = (out / "report.html").read_bytes()
        done = valid_or_one_line(rerender, out)
        after = (out / "report.html").read_bytes()
        assert done is not None or after == before, "a refused report replaced the one there"
        assert OUTSIDE_SECRET[-12:] not in after
        assert all(href.startswith(b"#") or not (b":" in href or href.startswith(b"/") or b".." in href)
                   for href in re.findall(rb'href="([^"]*)"', after)), "a link leads outside the directory"
        assert Path(tmp, "secret.png").read_bytes() == OUTSIDE_SECRET


def loaded(directory: Path, names: list[str]) -> dict[str, Any]:
    return {n: json.loads((directory / n).read_text()) if n.endswith(".json") else
            yaml.safe_load((directory / n).read_text()) for n in names}


@fuzz_settings(120)
@given(data=st.data())
def test_report_of_a_damaged_run_is_a_report_or_one_line(finished_run: Path, data: st.DataObject) -> None:
    names = ["metrics.json", "metrics.json", "run.json", "config.yaml"]
    name, content = data.draw(damages(loaded(finished_run, sorted(set(names))), names))
    check_report(finished_run, rerender_report, name, content, data.draw(st.sampled_from(["", "", "figure",
                                                                                          "hardlink", "folder"])))


@fuzz_settings(60)
@given(data=st.data())
def test_report_of_a_damaged_study_is_a_report_or_one_line(finished_study: Path, data: st.DataObject) -> None:
    names = ["metrics.json", "metrics.json", STUDY_FILE]
    name, content = data.draw(damages(loaded(finished_study, sorted(set(names))), names))
    check_report(finished_study, rerender_study, name, content, data.draw(st.sampled_from(["", "folder"])))


def test_the_fixtures_re_render_as_they_are(finished_run: Path, finished_study: Path) -> None:
    """The property above starts from directories that re-render: a refusal there is the damage's doing."""
    assert rerender_report(finished_run).metrics["run"]["experiment"] == "maps"
    assert not math.isnan(len(rerender_study(finished_study)))
