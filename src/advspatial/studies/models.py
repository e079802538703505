"""The models of a study: each a model spec (as ``--model``) with its label, its own loading settings and its
covariates, read from ``--models A,B``, a YAML list or Python objects."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any

from ..errors import ConfigError, bounded_repr, is_finite_number
from ..models.spec import prefixed_name

#: the keys a model entry of a study's YAML list may have
MODEL_KEYS = ("model", "label", "weights", "arch", "preset", "image_size", "batch_size", "covariates")


@dataclass
class StudyModel:
    """One model of a study.

    Attributes:
        model: its spec, as ``--model`` takes it (a registered or zoo name, ``FILE.py:factory``, a state-dict file...;
            an in-memory model is registered first and named ``object:NAME``).
        label: its name in tables, figures and ``models/LABEL/`` (default: from the spec).
        weights, arch, preset, image_size: its own loading settings ('' / 0: the study's).
        batch_size: its own batch size (0: the study's), e.g. smaller for a model whose activations are larger;
            results do not depend on it.
        covariates: stated covariates of the meta-regression beside the measured ones (e.g. ``{"epochs": 200}``).
    """

    model: str
    label: str = ""
    weights: str = ""
    arch: str = ""
    preset: str = ""
    image_size: int = 0
    batch_size: int = 0
    covariates: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_label(spec: str) -> str:
    """A label from a model spec: the zoo/registered name, or a file's stem (``nets/wide.py:make`` -> ``wide``)."""
    name = prefixed_name(spec)  # hf:runs/vit -> vit
    name = spec.split(":", 1)[0] if name is None else name
    return PurePath(name).stem or spec


def parse_models(value: str | Sequence[Any]) -> list[StudyModel]:
    """The study's models from ``--models A,B`` text or a YAML list (strings or mappings of :data:`MODEL_KEYS`):
    at least two, with distinct labels that are safe as directory names; one line if not."""
    if not isinstance(value, str | list | tuple):
        raise ConfigError(f"models is {bounded_repr(value, 40)} ({type(value).__name__}); valid: a list of model "
                          f"specs or mappings with keys {', '.join(MODEL_KEYS)} (or --models A,B)")
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
    models = [model_entry(item, i) for i, item in enumerate(items)]
    if len(models) < 2:
        raise ConfigError(f"a study compares at least 2 models, got {len(models)}; valid: --models A,B[,C...]")
    for m in models:
        m.label = m.label or default_label(m.model)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", m.label):
            raise ConfigError(f"model label {m.label!r} is not usable as a directory name; valid: letters, digits, "
                              "'.', '_', '-' (give a label in a YAML list of models)")
    seen: dict[str, str] = {}
    for m in models:
        if m.label in seen:
            raise ConfigError(f"models {seen[m.label]!r} and {m.model!r} share the label {m.label!r}; give each a "
                              "label (a YAML list of models with label:)")
        seen[m.label] = m.model
    return models


def model_entry(item: Any, index: int) -> StudyModel:
    """One entry of a list of models: a spec string or a mapping of :data:`MODEL_KEYS`, each value of its type and
    range (the loading settings as the ``maps`` experiment declares them; 0 and '' mean the study's own)."""
    from ..experiments.settings import ExperimentConfig, check_settings

    if isinstance(item, StudyModel):
        return item
    if isinstance(item, str) and item.strip():
        return StudyModel(item.strip())
    if not isinstance(item, Mapping):
        raise ConfigError(f"models[{index}] is {bounded_repr(item)}; valid: a model spec or a mapping with keys "
                          f"{', '.join(MODEL_KEYS)}")
    unknown = sorted(set(map(str, item)) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(f"models[{index}] has unknown key(s) {unknown}; valid: {', '.join(MODEL_KEYS)}")
    if not isinstance(item.get("model"), str) or not item["model"].strip():
        raise ConfigError(f"models[{index}] needs model: SPEC (as --model takes it)")
    if not isinstance(item.get("label", ""), str):
        raise ConfigError(f"models[{index}].label={bounded_repr(item['label'])} is not valid; valid: text")
    loading = {k: item[k] for k in ("weights", "arch", "preset", "image_size", "batch_size")
               if k in item and not (k == "batch_size" and type(item[k]) is int and item[k] == 0)}  # 0: the study's
    check_settings(ExperimentConfig, loading, f"models[{index}]")
    return StudyModel(item["model"].strip(), item.get("label", ""), loading.get("weights", ""),
                      loading.get("arch", ""), loading.get("preset", ""), int(loading.get("image_size", 0)),
                      int(loading.get("batch_size", 0)), stated_covariates(item, index))


#: names a stated covariate may not take: the covariates a study measures itself and the other columns of
#: ``per_model.csv`` (a stated value under one of them would stand in for the measured one)
TAKEN_NAMES = frozenset({"model", "spec", "parameters", "log10_parameters", "depth", "clean_accuracy",
                         "robust_accuracy", "roi_method", "roi_status", "attack", "endpoint", "n", "effect", "low",
                         "high", "se", "observed", "null", "reference", "included", "reason", "run_verdict",
                         "wall_seconds"})


def stated_covariates(item: Mapping[str, Any], index: int) -> dict[str, float]:
    """A model entry's ``covariates``: names (letters, digits, '_', '.', '-'; none a measured covariate or a column
    of per_model.csv) mapped to finite numbers; one line naming the entry otherwise."""
    covariates = item.get("covariates") or {}
    where = f"models[{index}].covariates"
    if not isinstance(covariates, Mapping):
        raise ConfigError(f"{where} is {bounded_repr(covariates)}; valid: a mapping of name: number")
    for name, value in covariates.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", name):
            raise ConfigError(f"{where}: name {name!r} is not valid; valid: letters, digits, '_', '.', '-'")
        if name in TAKEN_NAMES:
            raise ConfigError(f"{where}: {name!r} is measured by the study or a column of per_model.csv; valid: "
                              f"another name (taken: {', '.join(sorted(TAKEN_NAMES))})")
        if not is_finite_number(value) or isinstance(value, bool):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise ConfigError(f"{where}.{name}={shown} is not valid; valid: a finite number")
        if abs(value) > 1e300:  # finite, but its square would not be: the meta-regression squares it
            raise ConfigError(f"{where}.{name} is too large; valid: a number within +-1e300")
    return {name: float(value) for name, value in covariates.items()}
