"""Fuzzing what a study reads (studies/models.py, studies/running.py): a ``--config`` YAML file of any text,
structure, model entries, covariates and shared settings, and a study directory's ``study.yaml`` of any content,
give a study whose every model has a resolved ``maps`` config and whose values are of their types and ranges, or a
one-line ConfigError - never a traceback, never a value silently dropped (a shared ``model:``, ``experiment:
spatial``) or converted (``batch_size: true``). Budget and profiles: tests/fuzzing.py."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import yaml
from fuzzing import fuzz_settings, valid_or_one_line
from hypothesis import example, given
from hypothesis import strategies as st

from advspatial.experiments.settings import read_yaml_mapping
from advspatial.studies.models import MODEL_KEYS, TAKEN_NAMES, parse_models
from advspatial.studies.running import STUDY_FILE, Study, check_shared, load_study, model_configs

#: model specs an entry may name (arbitrary text could name a module to import: a config file is code)
SPECS = ["smallcnn", "lenet5", "nosuch", "", "x.py:f", "object:nothing", "a:b:c"]
_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 300), st.integers(10**300, 10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["4", "abc", "fgsm", "maps", "spatial", "../x", "cifar10", "none", "1e999", "epochs"]))
_value = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=2)),
                      max_leaves=5)
_covariates = st.one_of(_value, st.dictionaries(
    st.one_of(st.sampled_from(sorted(TAKEN_NAMES)[:6] + ["epochs", "width", "a b", ""]), st.integers(0, 2)),
    _scalar, max_size=3))
_entry = st.one_of(
    st.sampled_from(SPECS), _scalar,
    st.fixed_dictionaries({"model": st.sampled_from(SPECS)}, optional={
        **{key: _value for key in MODEL_KEYS if key not in ("model", "covariates")},
        "covariates": _covariates, "epochs": _scalar}))
_shared = st.dictionaries(st.sampled_from(["n", "seed", "attacks", "eps_linf", "batch_size", "experiment", "model",
                                           "out", "label", "covariates", "progress", "nosuch", "fraction"]),
                          _value, max_size=3)
_study_text = st.one_of(
    st.tuples(_shared, st.one_of(st.lists(_entry, max_size=3), _value)).map(
        lambda t: yaml.safe_dump({**t[0], "models": t[1]}, allow_unicode=True)),
    st.text(max_size=60),
    st.integers(1, 60).map(lambda depth: "models: " + "[" * depth + "]" * depth))


def check_study_config(text: str) -> None:
    """What ``advspatial study --config FILE`` does with the file before it loads any model."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "study.yaml")
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        values = valid_or_one_line(read_yaml_mapping, path)
        if values is None:
            return
        listed = values.pop("models", None)
        models = valid_or_one_line(parse_models, listed) if listed is not None else None
        if models is None or valid_or_one_line(lambda: check_shared(values, str(path)) or True) is None:
            return
        values.pop("experiment", None)
        study = Study(models, values, str(Path(tmp, "out")), quick=True)
        configs = valid_or_one_line(model_configs, study)
    for m in models:  # what a study accepted is of its type: nothing converted, nothing measured overwritten
        assert isinstance(m.label, str) and isinstance(m.weights, str) and type(m.batch_size) is int
        assert m.batch_size >= 0 and 0 <= m.image_size <= 4096
        assert all(isinstance(v, float) and math.isfinite(v) and k not in TAKEN_NAMES for k, v in m.covariates.items())
    if configs is not None:
        assert "model" not in values and set(configs) == {m.label for m in models}


@fuzz_settings(150)
@given(_study_text)
@example("models: 5\n")  # a TypeError
@example("models:\n  - {model: smallcnn, covariates: {epochs: " + "9" * 400 + "}}\n  - lenet5\n")  # OverflowError
@example("models:\n  - {model: smallcnn, batch_size: true}\n  - lenet5\n")  # ran with batch size 1
@example("models:\n  - {model: smallcnn, covariates: {clean_accuracy: 7}}\n  - lenet5\n")  # replaced the measured
@example("experiment: spatial\nmodels: [smallcnn, lenet5]\n")  # ran maps
@example("model: lenet5\nmodels: [smallcnn, lenet5]\n")  # ignored, yet shown in the resolved config
@example("n: 8\nmodels: [smallcnn, {model: lenet5, batch_size: 4, covariates: {epochs: 3}}]\n")  # a valid study
def test_a_study_config_gives_typed_models_or_one_line(text: str) -> None:
    check_study_config(text)


_record = st.one_of(
    st.fixed_dictionaries({"models": st.one_of(st.lists(_entry, max_size=3), _value), "settings": _value,
                           "quick": _value}).map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    _study_text)


@fuzz_settings(60)
@given(_record)
@example("models: [\n")  # a YAML ParserError in advspatial report
@example("models: " + "[" * 3000 + "]" * 3000)  # RecursionError
def test_a_study_yaml_loads_as_a_study_or_is_one_line(text: str) -> None:
    """``study --resume`` and ``advspatial report`` of a study read its study.yaml: a damaged one is one line."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, STUDY_FILE).write_text(text, encoding="utf-8", errors="surrogatepass")
        study = valid_or_one_line(load_study, tmp)
    if study is not None:
        assert len(study.models) >= 2 and isinstance(study.settings, dict) and isinstance(study.quick, bool)
