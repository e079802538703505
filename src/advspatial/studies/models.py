"""The models of a study: each a model spec (as ``--model``) with its label, its own loading settings and its
covariates, read from ``--models A,B``, a YAML list or Python objects."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any

from ..errors import ConfigError

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
    name = spec.split(":", 1)[1] if spec.startswith(("object:", "torchvision:", "timm:")) else spec.split(":", 1)[0]
    return PurePath(name).stem or spec


def parse_models(value: str | Sequence[Any]) -> list[StudyModel]:
    """The study's models from ``--models A,B`` text or a YAML list (strings or mappings of :data:`MODEL_KEYS`):
    at least two, with distinct labels that are safe as directory names; one line if not."""
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
    """One entry of a list of models: a spec string or a mapping of :data:`MODEL_KEYS`."""
    if isinstance(item, StudyModel):
        return item
    if isinstance(item, str) and item.strip():
        return StudyModel(item.strip())
    if not isinstance(item, Mapping):
        raise ConfigError(f"models[{index}] is {item!r}; valid: a model spec or a mapping with keys "
                          f"{', '.join(MODEL_KEYS)}")
    unknown = sorted(set(map(str, item)) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(f"models[{index}] has unknown key(s) {unknown}; valid: {', '.join(MODEL_KEYS)}")
    if not isinstance(item.get("model"), str) or not item["model"].strip():
        raise ConfigError(f"models[{index}] needs model: SPEC (as --model takes it)")
    covariates = item.get("covariates") or {}
    if not isinstance(covariates, Mapping):
        raise ConfigError(f"models[{index}].covariates must map a name to a number, got {covariates!r}")
    try:
        numbers = {str(k): float(v) for k, v in covariates.items()}
        size = int(item.get("image_size") or 0)
        batch = int(item.get("batch_size") or 0)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"models[{index}]: covariates must be numbers, image_size and batch_size integers "
                          f"({exc})") from exc
    return StudyModel(item["model"].strip(), str(item.get("label") or ""), str(item.get("weights") or ""),
                      str(item.get("arch") or ""), str(item.get("preset") or ""), size, batch, numbers)
