"""The propagation experiment's settings (:mod:`advspatial.experiments.propagation.config`)."""

from __future__ import annotations


import pytest

from advspatial.errors import ConfigError
from advspatial.experiments.propagation.config import PropagationConfig


def test_config_validation():
    with pytest.raises(ConfigError, match="twice"):
        PropagationConfig(pixels_list=[1, 1]).validate()
    with pytest.raises(ConfigError):
        PropagationConfig(pixels_list=[0]).validate()
    with pytest.raises(ConfigError):
        PropagationConfig(radii=[0]).validate()
    with pytest.raises(ConfigError):
        PropagationConfig(popsize=2).validate()
    with pytest.raises(ConfigError):
        PropagationConfig(threshold=-0.1).validate()
    with pytest.raises(ConfigError, match="reach_fraction"):
        PropagationConfig(reach_fraction=1.5).validate()
    with pytest.raises(ConfigError, match="random_draws"):
        PropagationConfig(random_draws=0).validate()
