"""Datasets: float images in [0,1] (N,C,H,W), int64 labels, class names, optional masks, sample ids."""

from . import cifar10, imagefolder, mnist, synthetic, tensors  # noqa: F401  (register the datasets)
from .base import ImageDataset
from .classmap import ClassMap, read_class_map
from .registry import DatasetSpec, dataset_spec, list_datasets, load_dataset, register_dataset
from .subset import select
from .tensors import as_image_dataset, read_images, read_labels, register_dataset_object

__all__ = [
    "ClassMap", "DatasetSpec", "ImageDataset", "dataset_spec", "as_image_dataset", "list_datasets", "load_dataset",
    "read_class_map", "read_images", "read_labels", "register_dataset", "register_dataset_object", "select",
]
