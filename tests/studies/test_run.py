"""A study end to end on synthetic images with two briefly trained TinyCNNs: its files, its per-model effects equal
to each model's own run, a resume that recomputes nothing, and bad input (one line, nothing lost)."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TinyCNN
from helpers import OUTSIDE_SECRET, plant_outside_figures, synthetic_images
from torch import nn

import advspatial
from advspatial.errors import ConfigError, ModelError
from advspatial.experiments.results import findings_checksum
from advspatial.studies.models import parse_models

CLASSES = 4
SETTINGS: dict[str, Any] = {"n": 40, "attacks": ["pgd"], "eps_linf": 0.3, "panel": ["gradcam"], "gate_n": 8,
                            "randomization_images": 2, "progress": False}


def trained(seed: int, classes: int = CLASSES) -> nn.Module:
    train = synthetic_images(400, seed=1)
    torch.manual_seed(seed)
    model = TinyCNN(num_classes=classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        index = torch.randint(0, 400, (32,))
        loss = nn.functional.cross_entropy(model(train[0][index]), train[1][index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


class NanAfterOne(nn.Module):
    """Fine on the preflight's single image, NaN logits on any larger batch: a model that breaks mid-run."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return out if len(x) == 1 else out * torch.nan


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {"tiny-a": trained(0), "tiny-b": trained(1)}


@pytest.fixture(scope="module")
def finished_with_log(models: dict[str, nn.Module], tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    """The finished quick study and what it wrote on stderr."""
    out = tmp_path_factory.mktemp("study") / "run"
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        result = advspatial.study(models, data=synthetic_images(40, seed=2), out=out, quick=True, **SETTINGS)
    return result, log.getvalue()


@pytest.fixture(scope="module")
def finished(finished_with_log: tuple[Any, str]) -> Any:
    return finished_with_log[0]


def test_a_study_writes_its_files_and_each_model_its_own_run(finished: Any) -> None:
    out = finished.out
    for name in ("study.yaml", "images.csv", "metrics.json", "per_model.csv", "per_image_per_model.csv",
                 "report.html"):
        assert (out / name).is_file(), name
    for label in ("tiny-a", "tiny-b"):
        assert (out / "models" / label / "report.html").is_file()
        assert (out / "models" / label / "subset.csv").read_text() == (out / "models" / "tiny-a" / "subset.csv"
                                                                       ).read_text()  # the same images
    rows = list(csv.DictReader((out / "per_model.csv").open()))
    assert {(r["model"], r["attack"], r["endpoint"]) for r in rows} == {
        (m, "pgd", e) for m in ("tiny-a", "tiny-b") for e in ("beyond", "excess")}
    report = (out / "report.html").read_text()
    assert 'href="models/tiny-a/report.html"' in report and "smoke test" in report
    assert finished.summary.startswith("smoke test")


def test_a_quick_study_that_pools_nothing_says_so_in_one_line(finished: Any) -> None:
    lines = finished.summary.splitlines()
    smoke = [line for line in lines if "nothing pooled" in line]
    assert smoke == ["  nothing pooled: a quick study is a smoke test (2 models measured; gate undecided: RoI "
                     "faithfulness), and a pooled verdict needs 3 models whose gates passed on at least 30 images "
                     "each; run it without --quick"]
    assert not any("not pooled" in line for line in lines)  # not once per attack and endpoint
    assert {r.roi_status for r in finished.findings.models.values()} == {"undecided"}  # what the line says
    report = (finished.out / "report.html").read_text()
    assert "Nothing pooled: a quick study is a smoke test" in report


def test_a_study_says_which_model_runs_and_each_stage_it_saved(finished_with_log: tuple[Any, str]) -> None:
    from advspatial.studies.measure import saved_stage_groups

    result, log = finished_with_log
    lines = log.splitlines()
    for k, label in enumerate(("tiny-a", "tiny-b"), 1):
        start = lines.index(next(line for line in lines if line.startswith(f"study: model {k}/2 {label} (object:")))
        done = lines.index(next(line for line in lines if line.startswith(f"study: {label} done: ")))
        announced = [line.rsplit(": saved ", 1)[1] for line in lines[start + 1:done]
                     if line.startswith(f"study: {label}, ")]
        assert announced and sorted(announced) == sorted(saved_stage_groups(result.out / "models" / label / "stages"))
        assert re.fullmatch(rf"study: {label} done: RoI gate undecided; images kept per attack: pgd \d+; its run "
                            r"took \d+ s", lines[done])


def test_each_models_effect_is_its_own_runs(finished: Any) -> None:
    """The study's per-model effects are exactly the numbers each model's own run reports."""
    metrics = json.loads((finished.out / "metrics.json").read_text())
    for endpoint in metrics["endpoints"]:
        for effect in endpoint["models"]:
            own = json.loads((finished.out / "models" / effect["model"] / "metrics.json").read_text())
            if endpoint["endpoint"] == "excess":
                expected = own["inference"]["pgd"]["contribution"]["energy_in_roi"]["same-class"]["excess"]
            else:
                (claim,) = [c for c in own["claims"] if c["primary"] and c["subject"].startswith("pgd")]
                expected = claim["effect"]
            assert effect["effect"] == expected


def test_each_models_run_keeps_its_time_and_passes_as_any_run(finished: Any) -> None:
    """A model's own metrics.json and report carry its run's facts (wall and CPU seconds, the ledger with the time
    outside its stages by phase), as `advspatial run maps` keeps them."""
    for model in sorted((finished.out / "models").iterdir()):
        own = json.loads((model / "metrics.json").read_text())
        assert own["wall_seconds"] > 0 and own["cpu_seconds"] > 0
        assert {"statistics", "report"} <= set(own["model_passes"]["outside_stages"]["phase_seconds"])
        assert f"the run sent {own['model_passes']['forward']:,} images forward" in (model / "report.html").read_text()


def test_per_image_values_average_to_the_effect(finished: Any) -> None:
    rows = list(csv.DictReader((finished.out / "per_image_per_model.csv").open()))
    metrics = json.loads((finished.out / "metrics.json").read_text())
    excess = next(e for e in metrics["endpoints"] if e["endpoint"] == "excess")
    for effect in excess["models"]:
        values = [float(r["excess"]) for r in rows if r["model"] == effect["model"]]
        assert len(values) == effect["n"]
        assert sum(values) / len(values) == pytest.approx(effect["effect"]["mean"], abs=1e-12)


def test_resume_reads_every_finished_model_back(finished: Any, models: dict[str, nn.Module]) -> None:
    records = sorted((finished.out / "models").glob("*/stages/study-record.pt"))
    stamps = [p.stat().st_mtime_ns for p in records]
    again = advspatial.study(models, data=synthetic_images(40, seed=2), out=finished.out, quick=True, resume=True,
                             **SETTINGS)
    assert [p.stat().st_mtime_ns for p in records] == stamps
    assert json.dumps(again.findings.to_metrics(), sort_keys=True) == json.dumps(finished.findings.to_metrics(),
                                                                                   sort_keys=True)


def test_a_study_from_python_keeps_freed_memory_as_a_run_does(finished: Any, models: dict[str, nn.Module],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from advspatial.studies import run as study_run

    calls: list[int] = []
    monkeypatch.setattr(study_run, "keep_freed_memory", lambda: calls.append(1) or True)
    advspatial.study(models, data=synthetic_images(40, seed=2), out=finished.out, quick=True, resume=True, **SETTINGS)
    assert calls == [1]


def test_a_study_needs_two_models(models: dict[str, nn.Module], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 2 models"):
        advspatial.study({"tiny-a": models["tiny-a"]}, data=synthetic_images(40, 2), out=tmp_path, **SETTINGS)


def test_models_with_other_label_sets_are_refused_before_any_work(models: dict[str, nn.Module],
                                                                  tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"models tiny-a \(4 outputs\) and wide \(6 outputs\)"):
        advspatial.study({"tiny-a": models["tiny-a"], "wide": trained(0, classes=6)},
                         data=synthetic_images(40, 2), out=tmp_path / "s", quick=True, **SETTINGS)
    assert not (tmp_path / "s" / "models").exists()


def test_a_model_that_breaks_mid_run_is_listed_and_the_others_kept(models: dict[str, nn.Module],
                                                                    tmp_path: Path) -> None:
    result = advspatial.study({"tiny-a": models["tiny-a"], "broken": NanAfterOne(models["tiny-b"])},
                              data=synthetic_images(40, 2), out=tmp_path / "s", quick=True, **SETTINGS)
    assert list(result.findings.models) == ["tiny-a"]
    assert "non-finite" in result.findings.failed["broken"], result.findings.failed
    assert (tmp_path / "s" / "models" / "tiny-a" / "metrics.json").is_file()
    assert "broken: run failed" in result.summary


def test_the_report_re_renders_from_the_study_files_alone(finished: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from helpers import run_cli

    before = (finished.out / "report.html").read_bytes()
    code, out, err = run_cli(capsys, "report", str(finished.out))
    assert code == 0, err
    assert (finished.out / "report.html").read_bytes() == before
    assert out.startswith("smoke test")


def test_a_model_that_cannot_take_the_images_is_one_line_before_any_work(models: dict[str, nn.Module],
                                                                         tmp_path: Path) -> None:
    torch.manual_seed(0)
    other_size = TinyCNN(num_classes=CLASSES, size=32).eval()  # expects 32x32 inputs, the images are 28x28
    with pytest.raises(ModelError, match="model big: the model cannot take"):
        advspatial.study({"tiny-a": models["tiny-a"], "big": other_size}, data=synthetic_images(40, 2),
                         out=tmp_path / "s", quick=True, **SETTINGS)
    assert not (tmp_path / "s" / "models").exists()


def damaged_copy(finished: Any, tmp_path: Path, damage: str) -> Path:
    """A copy of the finished study with one ``damage`` done to its files."""
    import shutil

    out = tmp_path / "study"
    shutil.copytree(finished.out, out, symlinks=True)
    metrics = json.loads((out / "metrics.json").read_text())
    if damage == "deep metrics.json":
        (out / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "broken study.yaml":
        (out / "study.yaml").write_text("models: [\n")
    elif damage == "study.yaml models: 5":
        (out / "study.yaml").write_text("models: 5\nsettings: {}\nquick: true\n")
    elif damage in ("javascript:alert(1)", "../../outside/report.html", "/etc/passwd"):
        metrics["models"]["tiny-a"]["report"] = damage
    elif damage == "another study's metrics.json":
        metrics["run"]["id"] = "0" * 16
    elif damage == "an accuracy of 7":
        metrics["models"]["tiny-a"]["clean_accuracy"] = 7
    elif damage in ("a figure linked from outside", "figures/ linked from outside"):
        plant_outside_figures(out, tmp_path, "figure" if damage.startswith("a figure") else "folder")
    if damage in ("javascript:alert(1)", "../../outside/report.html", "/etc/passwd", "an accuracy of 7"):
        metrics["run"]["findings"] = findings_checksum(metrics)  # as a file made to pass that check would have it
    if damage in ("javascript:alert(1)", "../../outside/report.html", "/etc/passwd", "another study's metrics.json",
                  "an accuracy of 7"):
        (out / "metrics.json").write_text(json.dumps(metrics))
    return out


@pytest.mark.parametrize("damage", [
    "deep metrics.json", "broken study.yaml", "study.yaml models: 5", "javascript:alert(1)",
    "../../outside/report.html", "/etc/passwd", "another study's metrics.json", "an accuracy of 7",
    "a figure linked from outside", "figures/ linked from outside"])
def test_report_of_a_damaged_or_foreign_study_is_one_line_and_keeps_its_report(
        finished: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    """Each gave a traceback (RecursionError, TypeError, yaml's ParserError), an ``<a href="javascript:...">``, a
    report of another study's findings or of an accuracy of 7, or embedded a file from outside the study."""
    from helpers import run_cli

    out = damaged_copy(finished, tmp_path, damage)
    before = (out / "report.html").read_bytes()
    code, _, err = run_cli(capsys, "report", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("advspatial: error: "), err
    assert (out / "report.html").read_bytes() == before
    assert base64.b64encode(OUTSIDE_SECRET).decode()[:24] not in before.decode()


@pytest.mark.parametrize("planted", ["models", "figures", "models/tiny-a", "models/tiny-a/stages"])
def test_resume_never_writes_through_a_link_planted_in_the_study_directory(
        finished: Any, models: dict[str, nn.Module], tmp_path: Path, planted: str) -> None:
    """A symbolic link planted for models/, figures/ or a model's run directory made ``study --resume`` write the
    study's files outside its directory (the guard covered run directories only)."""
    import shutil

    out = tmp_path / "study"
    out.mkdir()
    shutil.copy(finished.out / "study.yaml", out / "study.yaml")
    victim = tmp_path / "victim"
    victim.mkdir()
    (out / planted).parent.mkdir(parents=True, exist_ok=True)
    (out / planted).symlink_to(victim)
    with pytest.raises(ConfigError, match="is a symbolic link|holds files that are not an advspatial run"):
        advspatial.study(models, data=synthetic_images(40, seed=2), out=out, quick=True, resume=True, **SETTINGS)
    assert not any(victim.iterdir())


def test_stated_covariates_cannot_take_a_column_of_per_model_csv(finished: Any) -> None:
    """A stated covariate named like a column (``clean_accuracy: 7``) replaced the measured value in per_model.csv
    and in the meta-regression; every column a study writes is a name a stated covariate may not take."""
    from advspatial.studies.models import TAKEN_NAMES

    rows = list(csv.DictReader((finished.out / "per_model.csv").open()))
    assert set(rows[0]) <= TAKEN_NAMES
    with pytest.raises(ConfigError, match="'depth' is measured by the study"):
        parse_models([{"model": "a", "covariates": {"depth": 3}}, "b"])


@pytest.mark.parametrize(("models_given", "settings", "message"), [
    (5, {}, "models is a int"), (["a", "b"], {"model": "lenet5"}, "model is not a shared setting of a study")])
def test_study_refuses_what_it_would_ignore(tmp_path: Path, models_given: Any, settings: dict, message: str) -> None:
    """``advspatial.study(..., model=...)`` ran every model but that one and showed it in the resolved config;
    ``advspatial.study(5)`` was a TypeError."""
    with pytest.raises(ConfigError, match=message):
        advspatial.study(models_given, out=tmp_path / "s", **settings)
