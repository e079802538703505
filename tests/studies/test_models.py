"""The models of a study as the CLI, a YAML list and Python give them."""

from __future__ import annotations

import pytest

from advspatial.errors import ConfigError
from advspatial.studies.models import StudyModel, default_label, parse_models
from advspatial.studies.running import Study


def test_specs_from_text_get_their_labels() -> None:
    models = parse_models("cifar10-resnet20, nets/wide.py:make ,object:TinyCNN-1a")
    assert [m.label for m in models] == ["cifar10-resnet20", "wide", "TinyCNN-1a"]
    assert models[1].model == "nets/wide.py:make"


def test_a_yaml_entry_carries_its_own_loading_settings_and_covariates() -> None:
    (a, b) = parse_models([{"model": "w.pt", "arch": "lenet5", "label": "lenet-a", "batch_size": 4,
                            "image_size": 32, "covariates": {"epochs": 200}}, "smallcnn"])
    assert a == StudyModel("w.pt", "lenet-a", "", "lenet5", "", 32, 4, {"epochs": 200.0})
    assert b.label == "smallcnn"


@pytest.mark.parametrize(("value", "message"), [
    ("smallcnn", "at least 2 models, got 1"),
    ([{"model": "a"}, {"model": "b", "covariates": {"x": "many"}}], "models[1].covariates.x='many' is not valid"),
    ([{"model": "a"}, {"label": "b"}], "models[1] needs model: SPEC"),
    ([{"model": "a", "label": "../up"}, "b"], "not usable as a directory name"),
    (["a", 3], "models[1] is 3"),
])
def test_bad_model_lists_are_one_line(value, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_models(value)


def test_progress_bars_are_not_part_of_a_study() -> None:
    models = parse_models("a,b")
    assert Study(models, {"n": 5, "progress": False}).record() == Study(models, {"n": 5}).record()


def test_default_label_of_a_path() -> None:
    assert default_label("/tmp/x/model.pt") == "model"
