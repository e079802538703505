"""StackedAPGD: each loss's own APGD run, the losses' copies in one run (half the calls), and its errors."""

from __future__ import annotations

import pytest
import torch
from helpers import CallCounter, first_images

from advspatial.attacks.apgd import APGD
from advspatial.defence.stacked_apgd import StackedAPGD
from advspatial.errors import ConfigError, ShapeError


@pytest.mark.parametrize("kwargs", [dict(early_stop=True, n_restarts=2), dict(early_stop=False, eot_iter=2)])
def test_stacked_losses_are_each_loss_own_run_in_half_the_calls(trained_tiny_cnn, fmnist_test_subset, kwargs):
    x, y = first_images(fmnist_test_subset, 12)
    ids = torch.arange(300, 312)
    mask = torch.zeros(12, 1, 28, 28)
    mask[..., 4:24, 4:24] = 1
    common = dict(eps=0.02, steps=8, **kwargs)
    model = CallCounter(trained_tiny_cnn)
    ce, dlr = StackedAPGD(model, ("ce", "dlr"), **common).candidates(x, y, mask=mask, sample_ids=ids)
    stacked_calls, model.calls = model.calls, 0
    alone = [APGD(model, loss=loss, **common)(x, y, mask=mask, sample_ids=ids) for loss in ("ce", "dlr")]
    torch.testing.assert_close(ce, alone[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(dlr, alone[1], atol=1e-6, rtol=0)
    assert not torch.equal(ce, dlr)  # two different ascents, each kept apart
    assert stacked_calls < 0.6 * model.calls


def test_stacked_losses_refuse_an_unknown_loss_and_a_batch_of_no_whole_copies(tiny_cnn):
    with pytest.raises(ConfigError, match="must name APGD losses"):
        StackedAPGD(tiny_cnn(), ("ce", "hinge"))
    model = tiny_cnn(size=12)
    x = torch.rand(3, 1, 12, 12)
    with pytest.raises(ShapeError, match="2 copies of its images; got 3 rows"):
        StackedAPGD(model, ("ce", "dlr"), steps=2)(x, model(x).argmax(1))


class _TwoGradients(torch.nn.Module):
    """A deterministic "defence" whose forward_backwards records which rows came through BPDA, and the calls."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.identity_rows, self.call_sizes = model, [], []

    def forward_backwards(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        self.identity_rows.append(identity.clone())
        self.call_sizes.append(x.shape[0])
        return self.model(x)


def test_stacked_gradients_route_each_copys_rows_through_its_gradient_in_calls_of_at_most_call_rows(tiny_cnn):
    from advspatial.passes import PassLedger

    model = tiny_cnn(size=12)
    x = torch.rand(5, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    y = model(x).argmax(1)
    bank = _TwoGradients(model)
    ledger = PassLedger()
    ledger.watch(model)
    attack = StackedAPGD(bank, ("ce", "dlr"), eps=1e-3, steps=2, early_stop=False, backwards=("identity", "local"),
                         call_rows=5)
    examples = attack.candidates(x, y)
    assert len(examples) == 4 and all(e.shape == x.shape for e in examples)
    # copies (identity, ce), (identity, dlr), (local, ce), (local, dlr): the first ten rows through BPDA
    first_call = torch.cat(bank.identity_rows[:4])
    assert first_call.tolist() == [True] * 10 + [False] * 10
    assert max(bank.call_sizes) == 5 and ledger.outside.calls > ledger.outside.rounds  # chunks of one round each
    with pytest.raises(ConfigError, match="forward_backwards"):
        StackedAPGD(model, ("ce",), backwards=("identity", "local"))
