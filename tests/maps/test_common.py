"""Shared map helpers: the CAM layer's resolution."""

from __future__ import annotations

import torch

from advspatial.maps._common import feature_map_size
from advspatial.models import build_model


def test_feature_map_size_is_the_cam_layers_output_size(tiny_cnn) -> None:
    assert feature_map_size(tiny_cnn(), torch.rand(2, 1, 28, 28)) == (14, 14)  # features.3: after one pooling
    assert feature_map_size(build_model("smallcnn"), torch.rand(1, 1, 28, 28)) == (7, 7)
    assert feature_map_size(tiny_cnn(), torch.rand(1, 1, 28, 28), layer="features.5") == (7, 7)
