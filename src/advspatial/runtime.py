"""Seeds, devices, cache directories and streaming batch iteration.

Everything random in advspatial takes a seed or a :class:`torch.Generator`;
:func:`make_generator` builds one on the right device. Batching is deterministic:
:func:`batch_slices` always cuts the same ranges for the same ``n`` and batch size.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from .errors import ConfigError

DEFAULT_CACHE = Path.home() / ".cache" / "advspatial"


def cache_dir(*parts: str) -> Path:
    """The advspatial cache directory (``$ADVSPATIAL_CACHE`` or ``~/.cache/advspatial``), created on use."""
    root = Path(os.environ.get("ADVSPATIAL_CACHE", str(DEFAULT_CACHE))).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen


def pick_device(preference: str = "auto") -> torch.device:
    """Resolve ``auto`` to CUDA when present, else CPU; validate an explicit choice."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as exc:
        raise ConfigError(f"device={preference!r} is not a valid device; valid: auto, cpu, cuda, cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={preference!r} requested but CUDA is not available; valid here: auto, cpu")
    return device


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices ``[i, i+batch_size)`` covering ``range(n)``; deterministic."""
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is out of range; valid: >= 1")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def scaled_batch(count_at_28: int, height: int, width: int) -> int:
    """A per-pass image count given for 28x28 images, scaled to ``height x width`` (same pixels per pass).

    Batch limits tuned on MNIST-sized images (e.g. 2048 images per forward pass)
    exhaust memory at 224x224; scaled by the pixel count they keep the memory of a
    pass where it was: 2048 at 28x28 is 32 at 224x224. At least 1.
    """
    return max(1, int(count_at_28) * 28 * 28 // (int(height) * int(width)))


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a parameter-free model)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


class RunDir:
    """A run directory that survives interruption.

    Layout: ``config.yaml`` (the resolved config), ``stages/`` (one file per
    finished unit of work, written atomically), ``metrics.json``,
    ``per_image.csv``, ``figures/``, ``report.html``. A stage already on disk is
    loaded instead of recomputed, so re-running with the same config (``--resume``)
    completes an interrupted run with identical results.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.stages = self.path / "stages"
        self.figures = self.path / "figures"
        for directory in (self.path, self.stages, self.figures):
            directory.mkdir(parents=True, exist_ok=True)

    def stage_path(self, name: str) -> Path:
        path = self.stages / f"{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def has_stage(self, name: str) -> bool:
        return self.stage_path(name).is_file()

    def load_stage(self, name: str) -> object:
        return torch.load(self.stage_path(name), map_location="cpu", weights_only=True)

    def save_stage(self, name: str, value: object) -> None:
        atomic_torch_save(value, self.stage_path(name))

    def cached(self, name: str, compute: "Callable[[], T]") -> "T":
        """``compute()`` once; later calls (and resumed runs) load the saved value.

        Values must be tensors, numbers, strings, or lists/dicts/tuples of them.
        """
        if self.has_stage(name):
            return self.load_stage(name)  # type: ignore[return-value]
        value = compute()
        self.save_stage(name, value)
        return value


T = TypeVar("T")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (no half-written files)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def atomic_torch_save(value: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(value, tmp)
    tmp.replace(path)
