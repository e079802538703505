"""Settings: reading, layering and validating an experiment's config (experiments/settings.py)."""

from __future__ import annotations

import pytest

from advspatial.errors import ConfigError
from advspatial.experiments.registry import get_experiment
from advspatial.experiments.settings import resolve_config


def test_a_list_setting_naming_a_value_twice_is_refused(tmp_path) -> None:
    """``--attacks fgsm,fgsm`` (or ``attacks: [fgsm, fgsm]`` in YAML) counted every image twice in per_image.csv and
    in the statistics (audit W3)."""
    spatial = get_experiment("spatial")
    with pytest.raises(ConfigError, match=r"attacks names 'fgsm' twice.*at most once"):
        resolve_config(spatial, None, {"attacks": ["fgsm", "fgsm"]}, quick=True)
    config = tmp_path / "c.yaml"
    config.write_text("attacks: [pgd, fgsm, pgd]\n")
    with pytest.raises(ConfigError, match="attacks names 'pgd' twice"):
        resolve_config(spatial, str(config), {}, quick=True)
    with pytest.raises(ConfigError, match="panel_fractions names 0.1 twice"):
        resolve_config(spatial, None, {"panel_fractions": [0.1, 0.2, 0.1]}, quick=True)
    assert resolve_config(spatial, None, {"attacks": ["fgsm", "pgd"]}, quick=True).attacks == ["fgsm", "pgd"]
