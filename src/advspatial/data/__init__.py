"""Datasets: float images in [0,1] (N,C,H,W), int64 labels, class names, optional masks."""

from . import cifar10, imagefolder, mnist, synthetic  # noqa: F401  (register the datasets)
from .base import ImageDataset
from .registry import DatasetSpec, dataset_spec, list_datasets, load_dataset, register_dataset

__all__ = ["DatasetSpec", "ImageDataset", "dataset_spec", "list_datasets", "load_dataset", "register_dataset"]
