"""The ``maps`` experiment's settings (experiments/maps/config.py): its explainer-panel attack is picked from the
attacks, not an option."""

from __future__ import annotations

import pytest

from advspatial.errors import ConfigError
from advspatial.experiments import get_experiment, resolve_config


def test_maps_takes_its_panel_attack_from_the_attacks(tmp_path) -> None:
    """``maps`` hides defence_attack: the first attack run on every image is it; L0 attacks alone are refused
    in one line naming the attacks (the hidden option is not named)."""
    maps = get_experiment("maps")
    config = resolve_config(maps, None, {"out": str(tmp_path / "m"), "attacks": ["onepixel", "fgsm", "pgd"]},
                            quick=True)
    assert config.defence_attack == "fgsm"
    with pytest.raises(ConfigError, match=r"attacks=\['onepixel'\]: maps needs at least one attack run on every image"):
        resolve_config(maps, None, {"out": str(tmp_path / "m"), "attacks": ["onepixel"]}, quick=True)
    with pytest.raises(ConfigError, match="unknown attack"):
        resolve_config(maps, None, {"out": str(tmp_path / "m"), "attacks": ["nope"]}, quick=True)
