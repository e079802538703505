"""A resumed run is refused in one line, naming what changed, when the model's build read other content: a data
file its factory opens, an installed package it calls (another version or edited), a helper it loads by a string
import; and ``run.json`` records the versions of the packages the run depends on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_cli

from advspatial.models import provenance, sources

NET = '''
import importlib
import json
from pathlib import Path

import torch

HELPER = importlib.import_module("helper_by_name")  # a string import: no static reading of this file finds it


class Net(torch.nn.Module):
    def __init__(self, slope):
        super().__init__()
        torch.manual_seed(0)
        self.slope = slope
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 13 * 13, 3)

    def forward(self, x):
        import tinyact
        h = tinyact.act(self.conv(x), self.slope) * HELPER.SCALE
        return self.fc(torch.max_pool2d(h, 2).flatten(1))


def net():
    import tinyact  # an installed package the model calls
    slope = json.loads((Path(__file__).parent / "arch.json").read_text())["slope"]  # a data file
    return Net(slope)
'''

ACT = '''__version__ = "{version}"
import torch


def act(x, slope):
    return torch.nn.functional.{function}(x)
'''


def install_tinyact(site: Path, version: str, function: str = "relu") -> None:
    """A package ``tinyact`` with its distribution's metadata in ``site`` (as pip would leave it)."""
    for old in site.glob("tinyact-*.dist-info"):
        for file in old.iterdir():
            file.unlink()
        old.rmdir()
    (site / "tinyact").mkdir(exist_ok=True)
    (site / "tinyact" / "__init__.py").write_text(ACT.format(version=version, function=function))
    info = site / f"tinyact-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tinyact\nVersion: {version}\n")
    (info / "top_level.txt").write_text("tinyact\n")


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A factory reading ``arch.json``, importing an "installed" package and a helper named by a string."""
    site = tmp_path / "site"
    site.mkdir()
    install_tinyact(site, "1.0")
    (site / "helper_by_name.py").write_text("SCALE = 1.0\n")
    monkeypatch.syspath_prepend(str(site))
    roots = sources.installed_roots()
    monkeypatch.setattr(sources, "installed_roots", lambda: (*roots, site.resolve()))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "net.py").write_text(NET)
    (folder / "arch.json").write_text(json.dumps({"slope": 0.0}))
    return tmp_path


def fresh_process() -> None:
    """Forget the modules the build imported, as a new ``advspatial run --resume`` process would not have them."""
    for name in ("tinyact", "helper_by_name"):
        sys.modules.pop(name, None)


def start_run(root: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A finished baseline run of the factory, made to look interrupted (metrics.json removed)."""
    images = root / "images.pt"
    torch.manual_seed(0)
    torch.save({"images": torch.rand(6, 1, 28, 28), "labels": torch.arange(6) % 3}, images)
    out = root / "run"
    code, _, err = run_cli(capsys, "run", "baseline", "--dataset", f"arrays:{images}", "--model",
                           f"{root / 'model' / 'net.py'}:net", "--n", "6", "--batch-size", "3", "--no-progress",
                           "--out", str(out))
    assert code == 0, err
    (out / "metrics.json").unlink()
    fresh_process()
    return out


def resume_refused(capsys: pytest.CaptureFixture[str], out: Path, *fragments: str) -> None:
    code, _, err = run_cli(capsys, "run", "--resume", str(out))
    fresh_process()
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_a_resume_after_editing_a_data_file_the_factory_reads_is_refused(model_dir: Path, capsys) -> None:
    out = start_run(model_dir, capsys)
    (model_dir / "model" / "arch.json").write_text(json.dumps({"slope": 0.2}))
    resume_refused(capsys, out, "arch.json changed")


def test_a_resume_after_upgrading_or_editing_an_installed_package_is_refused(model_dir: Path, capsys) -> None:
    out = start_run(model_dir, capsys)
    record = json.loads((out / "run.json").read_text())["model_provenance"]
    assert record["packages"]["tinyact"] == "1.0"
    assert {"torch", "numpy", "advspatial"} <= set(record["packages"])
    install_tinyact(model_dir / "site", "2.0", "leaky_relu")
    resume_refused(capsys, out, "package tinyact 1.0 -> 2.0", "module tinyact changed")
    install_tinyact(model_dir / "site", "1.0", "leaky_relu")  # edited in place, its version unchanged
    resume_refused(capsys, out, "module tinyact changed")


def test_a_resume_after_editing_a_helper_loaded_by_a_string_import_is_refused(model_dir: Path, capsys) -> None:
    out = start_run(model_dir, capsys)
    (model_dir / "site" / "helper_by_name.py").write_text("SCALE = 2.0\n")
    resume_refused(capsys, out, "module helper_by_name changed")


def test_an_unchanged_model_resumes(model_dir: Path, capsys) -> None:
    out = start_run(model_dir, capsys)
    code, _, err = run_cli(capsys, "run", "--resume", str(out))
    fresh_process()
    assert code == 0, err
    assert (out / "metrics.json").is_file()


def test_changes_name_only_entries_both_builds_observed() -> None:
    saved = {"packages": {"a": "1", "b": "1"}, "inputs": {"file /x": "s1", "module m": "s2"}}
    current = {"packages": {"a": "2", "c": "1"}, "inputs": {"file /x": "s1", "module n": "s3"}}
    assert provenance.provenance_changes(saved, current) == ["package a 1 -> 2"]
    assert provenance.provenance_changes(current, current) == []


def test_the_build_record_holds_files_read_and_modules_imported(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data.txt"
    data.write_text("x")
    (tmp_path / "mod_by_string.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    written = tmp_path / "written.txt"
    with provenance.observe_build() as build:
        data.read_text()
        written.write_text("y")
        __import__("importlib").import_module("mod_by_string")
    sys.modules.pop("mod_by_string", None)
    assert str(data) in build.files and str(written) not in build.files
    assert "mod_by_string" in build.modules
