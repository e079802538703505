"""Dataset presets: the attack budgets (and batch size, image size) of each setting in the literature.

An L-inf budget of 0.1 is an MNIST-family budget; CIFAR-10 work uses 8/255 and
ImageNet work 4/255 (RobustBench; Madry et al. 2018; Croce & Hein 2020). A
preset fills these *generic* budgets into whichever settings an experiment has
(its ``PRESET_FIELDS``: generic name -> its field). Precedence, lowest first:
the experiment's defaults < the preset < ``--quick`` < the YAML file < options
given on the command line; the resolved preset name and every resolved value
are written to the run's ``config.yaml``.

``fashion-mnist`` changes nothing: the experiments' defaults *are* the
Fashion-MNIST budgets. ``auto`` (the default) picks the preset from the
dataset name (``mnist``, ``fashion-mnist``, ``cifar10``) or from a zoo model's
training set (``cifar10-resnet20`` -> cifar10, ``imagenet-efficientnet-lite0``
-> imagenet), and otherwise keeps the defaults (``none``) - choose a preset
for your own data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..attacks.budgets import DATASET_BUDGETS, budget_meanings
from ..errors import unknown_name
from ..models.zoo import zoo_entries

#: generic budgets per preset (``fashion-mnist`` = the experiments' own defaults): the attack budgets are
#: ``attacks.budgets.DATASET_BUDGETS``'s, the rest the experiments' other dataset-dependent settings
PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "fashion-mnist": {},
    "mnist": {**DATASET_BUDGETS["mnist"].given(), "eps_max": 0.5},
    "cifar10": {**DATASET_BUDGETS["cifar10"].given(), "eps_max": 32 / 255, "batch_size": 100, "image_size": 32,
                "noise_sds": [0.03]},
    "imagenet": {**DATASET_BUDGETS["imagenet"].given(), "eps_max": 16 / 255, "batch_size": 16, "image_size": 224,
                 "pse_block": 8},
}

#: what each generic budget means (the documentation's presets table is built from these)
GENERIC_BUDGETS: dict[str, str] = {
    **budget_meanings(),
    "eps_max": "perceptual: top of the PGD budget bracket of the SSIM calibration",
    "batch_size": "images per batch (a CPU's; on a GPU, unless given, raised to what its memory takes)",
    "pse_block": "pse: side of the square pixel groups (exact PSE costs one forward pass per group; on a CPU "
                 "an incremental one)",
    "image_size": "side of folder images after resizing (0 = the dataset's own size)",
    "noise_sds": "spatial: sd of the Gaussian-noise baseline (--eval full: half, once and twice it); the pretrained "
                 "CIFAR-10 ResNet-20 scores 0.65 at 0.03 (0.80 without noise) and is at chance at 0.2",
}

PRESET_CHOICES = ("auto", *PRESETS)

_DATASET_PRESETS = {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "cifar10": "cifar10"}


def resolve_preset_name(name: str, dataset: str, model: str) -> str:
    """The preset ``name`` stands for: itself, or for ``auto`` the one the dataset or zoo model implies."""
    if name not in PRESET_CHOICES:
        raise unknown_name("preset", name, PRESET_CHOICES)
    if name != "auto":
        return name
    base = dataset.split(":", 1)[0].strip()  # ``cifar10:PATH`` is CIFAR-10 read from PATH: the same preset
    if base in _DATASET_PRESETS:
        return _DATASET_PRESETS[base]

    entry = zoo_entries().get(model)
    if entry is not None and entry.dataset in ("cifar10", "imagenet"):
        return entry.dataset
    return "none"


def preset_for_shape(image_shape: tuple[int, ...]) -> str:
    """The preset images of this (C,H,W) shape call for when nothing names one (in-memory images):
    3x32x32 -> cifar10; 3 channels and at least 128 pixels a side -> imagenet; else none (the defaults)."""
    channels, height, width = (tuple(image_shape) + (0, 0, 0))[:3]
    if channels == 3 and (height, width) == (32, 32):
        return "cifar10"
    if channels == 3 and min(height, width) >= 128:
        return "imagenet"
    return "none"


def preset_values(preset_fields: Mapping[str, str], preset: str) -> dict[str, Any]:
    """The preset's budgets under an experiment's own field names (``preset_fields``: generic -> field)."""
    budgets = PRESETS[preset]
    return {preset_fields[k]: v for k, v in budgets.items() if k in preset_fields}


def preset_table() -> str:
    """A Markdown table of every preset's budgets (docs/getting-started.md shows it, through docs/hooks.py)."""
    shown = [p for p in PRESETS if p != "none"]
    lines = ["| budget | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
    for key, meaning in GENERIC_BUDGETS.items():
        cells = [_fmt(PRESETS[p].get(key)) for p in shown]
        lines.append(f"| {key}: {meaning} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "(default)"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float) and abs(value * 255 - round(value * 255)) < 1e-9 and value < 1:
        return f"{round(value * 255)}/255"
    return str(value)
