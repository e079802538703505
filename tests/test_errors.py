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
