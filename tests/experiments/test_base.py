"""The experiment machinery's up-front checks (experiments/context.py, running.py)."""

from __future__ import annotations

import pytest
import torch

from advspatial.data import ImageDataset
from advspatial.errors import ModelError
from advspatial.experiments.context import check_model_fits_data


class Out(torch.nn.Module):
    """A model whose output is whatever ``make(x)`` returns."""

    def __init__(self, make) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.make = make

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.make(x)


def test_model_outputs_are_checked_once_up_front() -> None:
    """Wrong shapes, too few classes and NaN logits are one clear ModelError, not a silent accuracy."""
    data = ImageDataset("toy", torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 9]), tuple(str(k) for k in range(10)))
    cpu = torch.device("cpu")
    check_model_fits_data(Out(lambda x: torch.zeros(len(x), 10)), data, cpu)
    with pytest.raises(ModelError, match=r"logits \(N, classes\)"):
        check_model_fits_data(Out(lambda x: torch.zeros(len(x), 10, 1)), data, cpu)
    with pytest.raises(ModelError, match="5 outputs but the data has label 9") as refused:
        check_model_fits_data(Out(lambda x: torch.zeros(len(x), 5)), data, cpu)
    assert "class-map" not in str(refused.value) and "output indices, 0 to 4" in str(refused.value)  # not a folder
    folder = ImageDataset("imagefolder", data.pixels, data.labels, data.class_names)
    with pytest.raises(ModelError, match="give --class-map"):
        check_model_fits_data(Out(lambda x: torch.zeros(len(x), 5)), folder, cpu)
    with pytest.raises(ModelError, match="non-finite"):
        check_model_fits_data(Out(lambda x: torch.full((len(x), 10), float("nan"))), data, cpu)
    with pytest.raises(ModelError, match="cannot take toy images"):
        check_model_fits_data(Out(lambda x: x.view(len(x), 3, -1)), data, cpu)


def test_a_run_directory_is_tied_to_the_settings_and_model_of_its_results(tmp_path) -> None:
    """Results are never reused or relabelled under other settings, a moved or copied run resumes
    (7), and a run that failed before producing any result is re-run in place (8)."""
    import shutil

    from advspatial.errors import ConfigError
    from advspatial.experiments.running import open_run
    from advspatial.experiments.settings import ExperimentConfig

    out = tmp_path / "run"
    config = ExperimentConfig(n=10, out=str(out))
    with open_run(out, "spatial", config, resume=False):
        pass  # failed before any stage: nothing to keep
    other = ExperimentConfig(n=20, out=str(out))
    with open_run(out, "spatial", other, resume=False) as rundir:  # re-run in place, with other settings
        rundir.save_stage("predictions", {"x": torch.ones(2)})
        rundir.bind("model_sha256", "a" * 64, "model weights")
    with pytest.raises(ConfigError, match="already holds a run"):
        with open_run(out, "spatial", other, resume=False):
            pass
    with pytest.raises(ConfigError, match=r"other settings.*n: 20 -> 10"):
        with open_run(out, "spatial", config, resume=True):  # e.g. config.yaml edited after the run started
            pass
    with pytest.raises(ConfigError, match="holds a run of spatial, not maps"):
        with open_run(out, "maps", other, resume=False, reuse_same=True):
            pass
    with open_run(out, "spatial", other, resume=True) as rundir:
        with pytest.raises(ConfigError, match="other model weights"):
            rundir.bind("model_sha256", "b" * 64, "model weights")
        rundir.bind("model_sha256", "a" * 64, "model weights")
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(out, copy)
    moved = ExperimentConfig(n=20, out=str(copy))  # out and progress are not part of the fingerprint
    moved.progress = False
    with open_run(copy, "spatial", moved, resume=True) as rundir:
        assert rundir.has_stage("predictions")
    assert "out: " + str(copy) in (copy / "config.yaml").read_text()


def test_open_run_refuses_a_directory_held_by_another_run(tmp_path) -> None:
    from advspatial.errors import ConfigError
    from advspatial.experiments.running import open_run
    from advspatial.experiments.settings import ExperimentConfig

    out = tmp_path / "run"
    config = ExperimentConfig(out=str(out))
    with open_run(out, "spatial", config, resume=False):
        with pytest.raises(ConfigError, match="in use by another advspatial process"):
            with open_run(out, "spatial", config, resume=True):
                pass


def test_a_model_with_more_outputs_than_classes_is_refused_up_front() -> None:
    """A 10-output model on a 2-class folder failed late with 'labels must lie in [0, 1]'."""
    data = ImageDataset("imagefolder", torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), ("a", "b"))
    with pytest.raises(ModelError, match="10 outputs but the data has 2 classes"):
        check_model_fits_data(Out(lambda x: torch.zeros(len(x), 10)), data, torch.device("cpu"))


def test_an_out_dir_holding_a_users_files_is_refused(tmp_path) -> None:
    """--out on a folder of the user's own files replaced its config.yaml, per_image.csv and report.html."""
    from advspatial.errors import ConfigError
    from advspatial.experiments.running import open_run
    from advspatial.experiments.settings import ExperimentConfig

    mine = tmp_path / "proj"
    mine.mkdir()
    files = {"config.yaml": "n: 12\n# my comments\n", "per_image.csv": "mine\n", "report.html": "<h1>mine</h1>\n"}
    for name, text in files.items():
        (mine / name).write_text(text)
    with pytest.raises(ConfigError, match=r"holds files that are not an advspatial run \(config.yaml, per_image.csv, "
                                          r"report.html\).*new or empty --out"):
        with open_run(mine, "spatial", ExperimentConfig(n=12, out=str(mine)), resume=False):
            pass
    assert {p.name: p.read_text() for p in mine.iterdir() if not p.name.startswith(".")} == files
    empty = tmp_path / "empty"
    (empty / "stages").mkdir(parents=True)  # a run that failed at once left its empty folders
    (empty / ".DS_Store").write_text("")
    with open_run(empty, "spatial", ExperimentConfig(n=12, out=str(empty)), resume=False):
        pass
    with open_run(empty, "spatial", ExperimentConfig(n=12, out=str(empty)), resume=False):  # now an advspatial run
        pass


def test_the_config_file_given_is_never_the_one_the_run_writes(tmp_path, capsys) -> None:
    """``--config proj/config.yaml --out proj`` overwrote the --config file itself."""
    from helpers import run_cli

    run = tmp_path / "r"
    run.mkdir()
    (run / "run.json").write_text("{}")
    (run / "config.yaml").write_text("n: 5\n# my comments\n")
    code, _, err = run_cli(capsys, "run", "baseline", "--config", str(run / "config.yaml"), "--out", str(run))
    assert code == 2 and "is the config.yaml the run writes" in err and len(err.strip().splitlines()) == 1
    assert (run / "config.yaml").read_text() == "n: 5\n# my comments\n"
