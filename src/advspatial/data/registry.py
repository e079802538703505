"""Dataset registry: ``load_dataset("fashion-mnist", split="test")``.

A loader is registered with :func:`register_dataset`; names with a colon
(``imagefolder:/path``) pass the part after the colon to the loader as ``root``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError, unknown_name
from ..registry import Registry
from .base import ImageDataset

Loader = Callable[..., ImageDataset]
SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: Loader
    description: str
    image_shape: tuple[int, int, int] | None = None  # (C,H,W) when fixed
    num_classes: int | None = None


#: every registered dataset (``advspatial list datasets`` iterates it)
DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(
    name: str,
    description: str,
    image_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader(split, root, download, **kwargs) -> ImageDataset``."""

    def wrap(loader: Loader) -> Loader:
        DATASETS.register(name, DatasetSpec(name, loader, description, image_shape, num_classes))
        return loader

    return wrap


def list_datasets() -> dict[str, DatasetSpec]:
    """All registered datasets by name."""
    return DATASETS.items()


def dataset_spec(name: str) -> DatasetSpec:
    base = name.split(":", 1)[0]
    if base not in DATASETS:
        raise unknown_name("dataset", name, DATASETS.names())  # the full name given, not just its base
    return DATASETS.get(base)


def load_dataset(
    name: str,
    split: str = "test",
    root: str | Path | None = None,
    download: bool = False,
    **kwargs: object,
) -> ImageDataset:
    """Load a registered dataset split as an :class:`ImageDataset` with images in [0,1]."""
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not valid; valid: {', '.join(SPLITS)}")
    spec = dataset_spec(name)
    allowed = set(inspect.signature(spec.loader).parameters) - {"split", "root", "download"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(f"dataset {spec.name!r} has no option(s) {unknown}; valid: {sorted(allowed) or 'none'}")
    if ":" in name:
        root = name.split(":", 1)[1]
        if spec.image_shape is not None and not Path(root).expanduser().is_dir():
            # a fixed-format dataset searched in several places: never fall back silently to another copy

            raise DataError(f"{spec.name}: folder {root!r} does not exist (given as {name}); valid: a folder holding "
                            f"the {spec.name} files, or just {spec.name} for the default locations")
    return spec.loader(split=split, root=root, download=download, **kwargs)
