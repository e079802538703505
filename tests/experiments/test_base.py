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
    with pytest.raises(ModelError, match="5 outputs but the data has label 9"):
        check_model_fits_data(Out(lambda x: torch.zeros(len(x), 5)), data, cpu)
    with pytest.raises(ModelError, match="non-finite"):
        check_model_fits_data(Out(lambda x: torch.full((len(x), 10), float("nan"))), data, cpu)
    with pytest.raises(ModelError, match="cannot take toy images"):
        check_model_fits_data(Out(lambda x: x.view(len(x), 3, -1)), data, cpu)


def test_a_run_directory_is_tied_to_the_settings_and_model_of_its_results(tmp_path) -> None:
    """Results are never reused or relabelled under other settings (issue 19, 1), a moved or copied run resumes
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
        rundir.bind_model("a" * 64)
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
            rundir.bind_model("b" * 64)
        rundir.bind_model("a" * 64)
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
    """A 10-output model on a 2-class folder failed late with 'labels must lie in [0, 1]' (issue 19, messages)."""
    data = ImageDataset("imagefolder", torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), ("a", "b"))
    with pytest.raises(ModelError, match="10 outputs but the data has 2 classes"):
        check_model_fits_data(Out(lambda x: torch.zeros(len(x), 10)), data, torch.device("cpu"))
