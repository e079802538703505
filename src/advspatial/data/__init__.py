"""Datasets: float images in [0,1] (N,C,H,W), int64 labels, class names, optional masks."""

from . import mnist  # noqa: F401  (registers fashion-mnist and mnist)
from .base import ImageDataset
from .registry import DatasetSpec, dataset_spec, list_datasets, load_dataset, register_dataset

__all__ = ["DatasetSpec", "ImageDataset", "dataset_spec", "list_datasets", "load_dataset", "register_dataset"]
