"""The one check of a model's outputs (models/outputs.py), installed for every command by check_model_fits_data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial.data import ImageDataset
from advspatial.errors import ModelError
from advspatial.experiments.context import check_model_fits_data


class Faulty(nn.Module):
    """A small linear model that goes wrong after its first call: NaN rows, twice the batch, integer logits, or
    logits computed without a gradient."""

    def __init__(self, fault: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16, 3)
        self.fault, self.calls = fault, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logits = self.fc(x.flatten(1))
        if self.calls == 1:
            return logits
        if self.fault == "nan":
            return torch.where(torch.arange(len(x))[:, None] > 0, torch.nan, logits)
        if self.fault == "double":
            return torch.cat([logits, logits])
        if self.fault == "long":
            return logits.long()
        if self.fault == "nograd":
            return logits.detach()
        return logits


def tiny_data(n: int = 6) -> ImageDataset:
    torch.manual_seed(1)
    return ImageDataset("tiny", torch.rand(n, 1, 4, 4), torch.arange(n) % 3, ("a", "b", "c"))


@pytest.mark.parametrize(("fault", "message"), [
    ("nan", r"model 'f\.py:nan' returned non-finite logits \(NaN or inf\) for 5 of 6 images"),
    ("double", r"shape \(12, 3\) for a batch of 6; valid: logits \(N, classes\) with N = 6"),
    ("long", r"torch.int64 logits; valid: floating-point"),
])
def test_evaluation_refuses_outputs_that_go_wrong_after_the_first_image(fault: str, message: str) -> None:
    """NaN rows after the first image were scored as predictions of class 0 by evaluate; twice the batch
    and integer logits gave tracebacks."""
    from advspatial.training import evaluate_accuracy

    model, data = Faulty(fault), tiny_data()
    check_model_fits_data(model, data, torch.device("cpu"), f"f.py:{fault}")
    with pytest.raises(ModelError, match=message):
        evaluate_accuracy(model, data, batch_size=6)


@pytest.mark.parametrize("fault", ["nan", "nograd"])
def test_attacks_refuse_nan_or_gradient_free_logits(fault: str) -> None:
    """attack scored NaN logits after the first image; a forward under no_grad or detached gave 'element 0 of
    tensors does not require grad'."""
    from advspatial.attacks import make_attack

    model, data = Faulty(fault), tiny_data()
    check_model_fits_data(model, data, torch.device("cpu"), "f.py:m")
    attack = make_attack("pgd", model, eps=0.1, steps=2)
    with pytest.raises(ModelError, match="non-finite" if fault == "nan" else "without a gradient"):
        attack.run(data.images(), data.labels)


def test_a_sound_model_is_unchanged_by_the_guard() -> None:
    """The guard changes nothing a sound model computes, is installed once, and keeps weights and names."""
    from advspatial.models.outputs import OutputGuard

    model, data = Faulty("none"), tiny_data()
    before = model(data.images()).detach()
    for _ in range(2):
        check_model_fits_data(model, data, torch.device("cpu"), "f.py:m")
    assert [type(h) for h in model._forward_hooks.values()] == [OutputGuard]
    assert torch.equal(model(data.images()), before)
    assert list(model.state_dict()) == ["fc.weight", "fc.bias"]


def test_the_incremental_one_pixel_attack_keeps_its_speed_path_and_checks_its_logits() -> None:
    """The guard is a forward hook; the incremental one-pixel evaluator refuses models with hooks, so it must
    recognize the guard (else every guarded model falls back to full passes), and its own logits are checked."""
    from advspatial.attacks import make_attack
    from advspatial.models import build_model
    from advspatial.models.patch.forward import PatchForward, try_patch_forward

    torch.manual_seed(0)
    model = build_model("lenet5").eval()
    data = ImageDataset("tiny", torch.rand(2, 1, 28, 28), torch.tensor([0, 1]), tuple("0123456789"))
    check_model_fits_data(model, data, torch.device("cpu"), "lenet5")
    assert isinstance(try_patch_forward(model, data.images()), PatchForward)
    attack = make_attack("onepixel", model, popsize=10, maxiter=1)
    attack._clean_logits = lambda x: torch.full((len(x), 10), torch.nan)  # type: ignore[method-assign]
    with pytest.raises(ModelError, match="model 'lenet5' returned non-finite logits"):
        attack.run(data.images(), data.labels)


def test_on_a_device_the_finiteness_check_waits_for_the_stage_end_and_fails_it(monkeypatch) -> None:
    """Off the CPU (forced here) the guard reads nothing per call: it counts the non-finite images on the device
    and the stage's end reads the count once; a stage with one fails there, before its value is kept, in one line."""
    from advspatial import host_syncs
    from advspatial.passes import PassLedger

    monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", True)
    data = tiny_data()
    sound, faulty = Faulty("none"), Faulty("nan")
    for model in (sound, faulty):
        check_model_fits_data(model, data, torch.device("cpu"), f"f.py:{model.fault}")
    ledger = PassLedger()
    ledger.watch(sound)
    ledger.watch(faulty)
    with ledger.stage("sound"), torch.no_grad():
        for _ in range(3):
            sound(data.images())
    assert ledger.by_stage["sound"].syncs == 1  # the stage end's one read, not one per call
    with pytest.raises(ModelError, match=r"model 'f\.py:nan' returned non-finite logits \(NaN or inf\) for 10 of "
                                         r"the 12 images of this stage's calls"):
        with ledger.stage("faulty"), torch.no_grad():
            faulty(data.images())
            faulty(data.images())
    assert "faulty" not in ledger.by_stage  # a failed stage is not recorded
    with ledger.stage("after"), torch.no_grad():  # the count starts again after the error
        sound(data.images())
    assert ledger.by_stage["after"].syncs == 1
