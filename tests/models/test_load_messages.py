"""Messages that point at the right thing when a model folder or a saved file cannot be used: a Hugging Face
folder whose config and weights disagree names both numbers, a processor size that is not a size is refused (never
a silent 224), and a refused pickle never quotes torch's advice to load it with ``weights_only=False``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from vit_helpers import hf_vit_folder

from advspatial.errors import DataError, ModelError
from advspatial.models.huggingface import load_hf, read_preprocessing
from advspatial.rundir import RunDir


class RunsCode:
    """A pickle that would run a shell command when unpickled without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return os.system, (f"touch {self.marker}",)


def assert_no_unsafe_advice(message: str) -> None:
    assert "weights_only" not in message.replace("`", "") and "\n" not in message, message
    assert "Python objects besides tensors" in message, message


@pytest.fixture
def hf_folder(tmp_path: Path) -> Path:
    return hf_vit_folder(tmp_path / "vit")


def edit_json(file: Path, **changes: object) -> None:
    file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


def test_a_config_with_other_labels_than_the_weights_names_both_numbers(hf_folder: Path, capsys) -> None:
    edit_json(hf_folder / "config.json", num_labels=5, id2label={str(i): str(i) for i in range(5)},
              label2id={str(i): i for i in range(5)})
    with pytest.raises(ModelError, match="num_labels 5 but the weights have 10"):
        load_hf(hf_folder)
    assert "LOAD REPORT" not in capsys.readouterr().err  # transformers' multi-line report is not printed


def test_a_config_with_other_channels_than_the_weights_names_both_numbers(hf_folder: Path) -> None:
    edit_json(hf_folder / "config.json", num_channels=1)
    with pytest.raises(ModelError, match="num_channels 1 but the weights have 3"):
        load_hf(hf_folder)


@pytest.mark.parametrize("size", ["abc", {"height": "abc"}, -3, True, [16]])
def test_a_processor_size_that_is_not_a_size_is_refused(hf_folder: Path, size: object) -> None:
    edit_json(hf_folder / "preprocessor_config.json", size=size)
    with pytest.raises(ModelError, match="preprocessor_config.json has size: .*valid: a positive integer"):
        read_preprocessing(hf_folder)


def test_a_malicious_pickle_in_a_folder_is_refused_without_unsafe_advice(hf_folder: Path, tmp_path: Path) -> None:
    (hf_folder / "model.safetensors").unlink()
    marker = tmp_path / "ran"
    torch.save({"w": RunsCode(marker)}, hf_folder / "pytorch_model.bin")
    with pytest.raises(ModelError) as info:
        load_hf(hf_folder)
    assert not marker.exists()
    assert_no_unsafe_advice(str(info.value))


def test_a_malicious_stage_file_is_refused_without_unsafe_advice(tmp_path: Path) -> None:
    rundir = RunDir(tmp_path / "run")
    marker = tmp_path / "ran"
    rundir.stages.mkdir(exist_ok=True)
    torch.save({"value": RunsCode(marker)}, rundir.stage_path("clean"))
    with pytest.raises(DataError) as info:
        rundir.load_stage("clean")
    assert not marker.exists()
    assert_no_unsafe_advice(str(info.value))
    assert "stage file" in str(info.value)


def test_a_well_formed_folder_still_loads(hf_folder: Path) -> None:
    model = load_hf(hf_folder)
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 10)
