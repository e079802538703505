"""Datasets: float images in [0,1] (N,C,H,W), int64 labels, class names, optional masks, sample ids."""

from . import cifar10, imagefolder, mnist, synthetic, tensors  # noqa: F401  (register the datasets)
from .base import ImageDataset, PixelSource
from .imagefolder import LazyImages
from .classmap import ClassMap, read_class_map
from .registry import DatasetSpec, dataset_spec, list_datasets, load_dataset, register_dataset
from .subset import SUBSET_MODES, select, subset_indices
from .tensors import as_image_dataset, read_images, read_labels, register_dataset_object

__all__ = [
    "SUBSET_MODES", "ClassMap", "DatasetSpec", "ImageDataset", "LazyImages", "PixelSource", "dataset_spec",
    "as_image_dataset", "list_datasets", "load_dataset", "read_class_map", "read_images", "read_labels",
    "register_dataset", "register_dataset_object", "select", "subset_indices",
]
