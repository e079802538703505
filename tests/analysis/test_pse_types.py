"""The PSEResult helpers of the group types: selecting images and concatenating batches give the whole set back."""

from __future__ import annotations

import pytest
import torch

from advspatial.analysis.pse import promotion_suppression
from advspatial.analysis.pse_types import cat_pse, pse_to_dict, select_pse
from advspatial.errors import ConfigError


def test_select_and_cat_pse_round_trip(tiny_cnn) -> None:
    model = tiny_cnn()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 28, 28, generator=g)
    x_adv = (x + 0.1 * torch.randn(5, 1, 28, 28, generator=g)).clamp(0, 1)
    whole = promotion_suppression(model, x, x_adv, torch.randint(0, 10, (5,), generator=g), block=7)
    parts = [select_pse(whole, torch.tensor([0, 1])), select_pse(whole, torch.tensor([2, 3, 4]))]
    again = cat_pse(parts)
    for key, value in pse_to_dict(whole).items():
        other = getattr(again, key)
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), key
        else:
            assert value == other, key
    picked = select_pse(whole, torch.tensor([3]))
    assert torch.equal(picked.s[0], whole.s[3]) and picked.kappa == whole.kappa
    with pytest.raises(ConfigError):
        cat_pse([])
