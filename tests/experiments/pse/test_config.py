"""Settings of the ``pse`` experiment: validation, the gate and engine settings, the stability group specs."""

from __future__ import annotations

import pytest

from advspatial.errors import ConfigError
from advspatial.experiments.measurement.config import GatedConfig
from advspatial.experiments.pse import PSEConfig
from advspatial.experiments.pse.stability import group_spec


def test_group_spec() -> None:
    assert group_spec("4x4") == 4 and group_spec("superpixels") == 0
    for bad in ("4x2", "x", "0x0", "slic"):
        with pytest.raises(ConfigError):
            group_spec(bad)


@pytest.mark.parametrize("change", [
    {"modes": ["sideways"]}, {"target_mode": "farthest"}, {"attacks": ["deepfool"]}, {"attacks": []},
    {"pse_method": "exactly"}, {"kappa": 0.5}, {"cam": "nope"}, {"noise_floor": -0.1},
    {"stability_groups": ["3x4"]}, {"stability_groups": ["slic"]}, {"stability_kappas": [0.5]}, {"unit_train_n": 0},
    {"baseline": "other"}, {"rank_by": "random"}, {"dissection_attack": "nope"}, {"top_fraction": 0.0},
    {"sesoi": -0.01}, {"significance": 0.0}, {"significance": 1.0}, {"gate_fills": ["zero"]}, {"gate_n": 0},
])
def test_config_validation(change: dict) -> None:
    with pytest.raises(ConfigError):
        PSEConfig(**change).validate()


def test_untargeted_only_accepts_attacks_without_a_targeted_mode() -> None:
    PSEConfig(attacks=["deepfool"], modes=["untargeted"]).validate()


def test_config_has_the_gate_and_the_engine_settings() -> None:
    config = PSEConfig()
    assert isinstance(config, GatedConfig)
    assert config.cam == "auto" and config.sesoi == 0.01 and config.significance == 0.05
    config.validate()
    quick = PSEConfig(**PSEConfig.QUICK)
    assert quick.gate_n <= quick.n and quick.gate_steps < config.gate_steps
    assert quick.randomization_images < config.randomization_images
    # Holm over the primary claims must be able to reach alpha with the default permutations
    primary = 2 * len(config.attacks) * len(config.modes)
    assert primary / (config.permutations + 1) < config.significance
