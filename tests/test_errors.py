"""Tests for advspatial.errors: the shared range and seed checks."""

from __future__ import annotations

import math

import pytest
import torch

from advspatial.errors import ConfigError, check_range, check_seed


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "big", None, torch.tensor(math.nan)])
def test_check_range_rejects_nan_inf_and_non_numbers(value: object) -> None:
    """NaN compared false with every bound, so it passed every range check."""
    with pytest.raises(ConfigError, match="is not a finite number; valid: \\[0, 1\\]"):
        check_range("eps", value, 0, 1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a finite number"):
        check_range("eps_l2", value, 0)  # type: ignore[arg-type]


def test_check_range_keeps_accepting_numbers() -> None:
    for value in (0, 1, 0.5, 10**30, torch.tensor(0.25)):
        check_range("x", value, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="out of range"):
        check_range("x", -1, 0)


def test_check_seed() -> None:
    check_seed("seed", 0)
    check_seed("seed", 2**63 - 2)
    for bad in (-1, 10**23, 1.5, True):
        with pytest.raises(ConfigError, match="seed"):
            check_seed("seed", bad)  # type: ignore[arg-type]


def test_images_outside_the_unit_interval_read_alike_from_an_attack_and_a_map() -> None:
    """One message, with what to do, whichever entry point sees the images first."""
    from torch import nn

    from advspatial.attacks import PGD
    from advspatial.errors import images_outside
    from advspatial.maps._common import check_images

    x, y = torch.full((2, 1, 4, 4), 1.5), torch.tensor([0, 1])
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(ConfigError) as from_attack:
        PGD(model, eps=0.1, steps=1)(x, y)
    with pytest.raises(ConfigError) as from_map:
        check_images(x)
    assert str(from_attack.value) == str(from_map.value) == images_outside()
    assert "Normalized" in images_outside() and images_outside("x_adv").startswith("x_adv must lie in [0, 1]")
