"""The maps experiment's figures (experiments/maps/figures.py): which classes a frequency figure shows."""

from __future__ import annotations

import torch

from advspatial.experiments.measurement.figures import ALL_CLASS_PANELS, shown_classes


def test_a_few_classes_are_all_shown_an_empty_one_too() -> None:
    assert shown_classes(torch.tensor([3, 0, 5])) == [0, 1, 2]


def test_a_thousand_classes_show_those_with_images_only() -> None:
    counts = torch.zeros(1000, dtype=torch.long)
    counts[[0, 217, 999]] = torch.tensor([4, 1, 2])
    assert len(counts) > ALL_CLASS_PANELS and shown_classes(counts) == [0, 217, 999]
