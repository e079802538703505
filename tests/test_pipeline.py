"""Tests for advspatial.cli.pipeline: streamed attacks with resumable stages."""

from __future__ import annotations

import pytest
import torch

from advspatial.attacks import make_attack
from advspatial.data import ImageDataset
from advspatial.errors import DataError
from advspatial.cli.pipeline import attack_dataset
from advspatial.rundir import RunDir


def test_a_stage_with_foreign_content_is_one_clear_error(tmp_path, tiny_cnn) -> None:
    """A stage file holding something else (a valid dict of other keys) was a TypeError traceback."""
    data = ImageDataset("toy", torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]), tuple(str(k) for k in range(10)))
    atk = make_attack("fgsm", tiny_cnn(), eps=0.1)
    run = RunDir(tmp_path / "run")
    first = attack_dataset(atk, data, 2, progress=False, rundir=run, stage="attack/fgsm")
    again = attack_dataset(atk, data, 2, progress=False, rundir=run, stage="attack/fgsm")
    assert torch.equal(first.x_adv, again.x_adv)
    run.save_stage("attack/fgsm/batch-00001", {"x": torch.ones(2)})
    with pytest.raises(DataError, match=r"batch-00001\.pt does not hold an attack result"):
        attack_dataset(atk, data, 2, progress=False, rundir=run, stage="attack/fgsm")
