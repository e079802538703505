"""The experiment machinery's up-front checks (experiments/base.py)."""

from __future__ import annotations

import pytest
import torch

from advspatial.data import ImageDataset
from advspatial.errors import ModelError
from advspatial.experiments.base import check_model_fits_data


class Out(torch.nn.Module):
    """A model whose output is whatever ``make(x)`` returns."""

    def __init__(self, make) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.make = make

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.make(x)


def test_model_outputs_are_checked_once_up_front() -> None:
    """Wrong shapes, too few classes and NaN logits are one clear ModelError, not a silent accuracy."""
    data = ImageDataset("toy", torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 9]), tuple(str(k) for k in range(10)))
    cpu = torch.device("cpu")
    check_model_fits_data(Out(lambda x: torch.zeros(len(x), 10)), data, cpu)
    with pytest.raises(ModelError, match=r"logits \(N, classes\)"):
        check_model_fits_data(Out(lambda x: torch.zeros(len(x), 10, 1)), data, cpu)
    with pytest.raises(ModelError, match="5 outputs but the data has label 9"):
        check_model_fits_data(Out(lambda x: torch.zeros(len(x), 5)), data, cpu)
    with pytest.raises(ModelError, match="non-finite"):
        check_model_fits_data(Out(lambda x: torch.full((len(x), 10), float("nan"))), data, cpu)
    with pytest.raises(ModelError, match="cannot take toy images"):
        check_model_fits_data(Out(lambda x: x.view(len(x), 3, -1)), data, cpu)
