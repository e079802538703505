"""Datasets: float images in [0,1] (N,C,H,W), int64 labels, class names, optional masks, sample ids."""

from . import cifar10, imagefolder, mnist, synthetic  # noqa: F401  (register the datasets)
from .base import ImageDataset, PixelSource
from .imagefolder import ClassMap, LazyImages, read_class_map
from .registry import DatasetSpec, dataset_spec, list_datasets, load_dataset, register_dataset
from .subset import SUBSET_MODES, select, subset_indices

__all__ = [
    "SUBSET_MODES", "ClassMap", "DatasetSpec", "ImageDataset", "LazyImages", "PixelSource", "dataset_spec",
    "list_datasets", "load_dataset", "read_class_map", "register_dataset", "select", "subset_indices",
]
