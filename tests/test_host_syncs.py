"""Checks held to a stage's end: one read per stage on a device instead of one per call, the same errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial import host_syncs
from advspatial.attacks.fgsm import FGSM
from advspatial.errors import ConfigError, ModelError
from advspatial.host_syncs import check_read, counting, hold, holds, stage_checks
from advspatial.models.outputs import guard_outputs
from advspatial.passes import PassLedger


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 4)).eval()


class _NaNModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.flatten(1)[:, :4] * 1.0
        return torch.where(torch.arange(len(x))[:, None] == 1, torch.nan, out)


def test_a_check_is_held_only_inside_a_stage_and_on_a_device(monkeypatch) -> None:
    t = torch.zeros(2)
    assert not holds(t)  # outside every stage: no end would read it
    with stage_checks():
        assert not holds(t)  # on a CPU a read costs no device a wait
        monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", True)
        assert holds(t)
    assert not holds(t)


def test_held_counts_add_up_per_check_and_the_first_held_check_raises() -> None:
    def error(name: str):
        return lambda bad, checked: ValueError(f"{name}: {bad} of {checked}")

    with pytest.raises(ValueError, match="^first: 3 of 7$"):
        with stage_checks():
            hold("first", torch.tensor(1), 4, error("first"))
            hold("second", torch.tensor(5), 5, error("second"))
            hold("first", torch.tensor(2), 3, error("first"))
    with stage_checks():  # the failed stage's counts were read: nothing is left held
        hold("second", torch.tensor(0), 5, error("second"))


def test_a_check_read_at_once_counts_outside_a_stage_only() -> None:
    reads: list[int] = []
    with counting(lambda: reads.append(1)):
        with check_read():
            _ = torch.ones(1).item()
        with stage_checks(), check_read():
            _ = torch.ones(1).item()
    assert len(reads) == 1


def test_an_attacks_checks_on_a_device_take_one_read_per_stage_not_two_per_call(monkeypatch) -> None:
    """The images' range and the logits' finiteness of three attack calls: held, read once at the stage's end
    (forced here with DEVICE_PATH_ON_CPU); on a CPU read at once and not counted; the adversarial images the same."""
    from helpers import on_both_paths

    model, x = _model(), torch.rand(5, 1, 6, 6)
    y, ids = torch.zeros(5, dtype=torch.long), torch.arange(5)
    seen = on_both_paths(monkeypatch, model, lambda: [FGSM(model).run(x, y, sample_ids=ids).x_adv for _ in range(3)])
    for held, (_, count) in seen.items():
        assert count.calls == 9 and count.syncs == (1 if held else 0)
    assert all(torch.equal(a, b) for a, b in zip(seen[False][0], seen[True][0], strict=True))


def test_held_checks_fail_their_stage_with_the_errors_read_at_once(monkeypatch) -> None:
    monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", True)
    y = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"images must lie in \[0, 1\]"):
        with PassLedger().stage("images"):
            FGSM(_model()).run(torch.rand(3, 1, 6, 6) + 1, y)
    with pytest.raises(ConfigError, match=r"mask values must lie in \[0, 1\]"):
        with PassLedger().stage("mask"):
            FGSM(_model()).run(torch.rand(3, 1, 6, 6), y, mask=torch.full((6, 6), -0.5))
    with pytest.raises(ModelError, match=r"returned non-finite logits \(NaN or inf\) for 2 of the 6 images this "
                                         r"stage's attacks evaluated"):  # row 1's clean and adversarial logits
        with PassLedger().stage("logits"):
            FGSM(_NaNModel(), eps=0.0).run(torch.rand(3, 1, 6, 6), y)
    monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", False)
    with pytest.raises(ModelError, match="returned non-finite logits"):  # at once where nothing is held
        FGSM(_NaNModel(), eps=0.0).run(torch.rand(3, 1, 6, 6), y)


def test_a_guarded_models_checks_and_an_attacks_are_read_together_once_per_stage(monkeypatch) -> None:
    """The output guard holds its finiteness check as the attack holds its own: a stage of attacks on a guarded
    model on a device (forced) reads all of them at its end in one read."""
    monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", True)
    model = guard_outputs(_model(), "tiny")
    ledger = PassLedger()
    ledger.watch(model)
    x, y = torch.rand(4, 1, 6, 6), torch.zeros(4, dtype=torch.long)
    with ledger.stage("attack"):
        for _ in range(2):
            FGSM(model).run(x, y)
    assert ledger.by_stage["attack"].syncs == 1


def test_the_value_checks_of_maps_and_regions_are_held_with_the_same_errors(monkeypatch) -> None:
    """Images in [0, 1], class indices among the outputs, finite maps: read at once on a CPU (the error at the
    call), held to the stage's end on a device (forced), where the same one-line error fails the stage."""
    from advspatial.maps._common import check_classes, check_images
    from advspatial.regions.checks import check_maps

    logits = torch.zeros(2, 3)
    bad_calls = {"images must lie in \\[0, 1\\]": lambda: check_images(torch.full((2, 1, 4, 4), 1.5)),
                 r"class indices must lie in \[0, 2\] for this model, got \[0, 3\]":
                     lambda: check_classes(torch.tensor([0, 3]), logits),
                 "maps contain NaN or infinite values": lambda: check_maps(torch.full((2, 4, 4), torch.nan))}
    for message, call in bad_calls.items():
        with pytest.raises(ConfigError, match=message):
            call()
    monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", True)
    for message, call in bad_calls.items():
        ledger = PassLedger()
        with pytest.raises(ConfigError, match=message):
            with ledger.stage("held"):
                call()
                reached = True  # the call itself raised nothing
        assert reached
    ledger = PassLedger()
    with ledger.stage("sound"):
        for _ in range(4):
            check_images(torch.rand(2, 1, 4, 4))
            check_classes(torch.tensor([0, 2]), logits)
            check_maps(torch.rand(2, 4, 4))
    assert ledger.by_stage["sound"].syncs == 1


def test_a_stage_that_fails_otherwise_leaves_no_held_count_to_the_next() -> None:
    with pytest.raises(KeyError):
        with stage_checks():
            hold("bad", torch.tensor(1), 1, lambda bad, n: ValueError("held"))
            raise KeyError("another failure first")
    with stage_checks():  # the failed stage's count is not read here
        pass
