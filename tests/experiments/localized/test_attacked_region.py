"""Where the localized attacks act (:mod:`advspatial.experiments.localized.attacked_region`): which masks rest on
the importance map, the configured map, and the foreground energy of a map."""

from __future__ import annotations

import math

import pytest
import torch

from advspatial.experiments.localized.attacked_region import (
    foreground_energy, importance_region, mask_uses_importance, region_mask,
)
from advspatial.data import ImageDataset
from advspatial.experiments.localized.config import LocalizedConfig


# -- masks and regions ---------------------------------------------------------------------

def test_which_masks_rest_on_the_importance_map(grey_dataset) -> None:
    grey = grey_dataset(4)
    colour = ImageDataset("colour", torch.rand(4, 3, 16, 16), torch.arange(4), tuple("abcd"))
    assert not mask_uses_importance("background", grey), "grey data: the dataset's own x > tau masks"
    assert mask_uses_importance("background", colour) and mask_uses_importance("foreground", colour)
    assert mask_uses_importance("roi", grey) and mask_uses_importance("roi-complement", grey)


def test_importance_masks_use_the_configured_map(tiny_cnn) -> None:
    colour = ImageDataset("colour", torch.rand(6, 3, 28, 28), torch.arange(6) % 10, tuple(str(k) for k in range(10)))
    model = tiny_cnn(in_channels=3)
    config = LocalizedConfig(fraction=0.25)
    region = region_mask(config.mask, colour, slice(0, 6), model, "saliency", config.fraction, config.seed)
    roi = importance_region("saliency", model, colour.images(), colour.labels, 0.25, 0, torch.arange(6))
    assert torch.equal(region[:, 0].bool(), ~roi), "background of colour data = complement of the RoI"
    assert (roi.flatten(1).float().mean(1) - 0.25).abs().max() < 0.01
    fg = region_mask("foreground", colour, slice(2, 4), model, "saliency", 0.25, 0)
    assert torch.equal(fg[:, 0].bool(), roi[2:4]), "batch-independent: ties broken per sample id"



def test_foreground_energy_known_answers() -> None:
    cam = torch.tensor([[[1.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    keep = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]])
    energy = foreground_energy(cam, keep)
    assert energy[0].item() == pytest.approx(0.25) and math.isnan(energy[1].item())
