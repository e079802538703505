"""Independent work sent as one round (stacked_runs.py): stacked calls whose outputs are a loop's, one round."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advspatial.passes import PassLedger
from advspatial.stacked_runs import forward_stacked, stacked_outputs


def tiny() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()


def images(n: int) -> torch.Tensor:
    return torch.rand(n, 3, 2, 2)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=7), st.one_of(st.none(), st.integers(1, 60)))
def test_stacked_batches_are_one_round_with_the_outputs_of_one_call_each(sizes: list[int],
                                                                         elements: int | None) -> None:
    """On a CPU (``elements`` None) every batch is its own call, so the outputs are those of a loop to the bit;
    with a budget, batches share calls of at most that many input elements (one batch over it alone), the
    outputs equal to float rounding; in order, one round either way, and never more made than one call holds."""
    torch.manual_seed(0)
    model, ledger = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), PassLedger()
    batches = [torch.rand(k, 4) for k in sizes]
    with torch.no_grad():
        loop = [model(b) for b in batches]
    ledger.watch(model)
    held: list[int] = []  # input elements made and not yet sent, each time a batch is asked for

    def lazily() -> Iterator[torch.Tensor]:
        for i, b in enumerate(batches):
            held.append(4 * (sum(sizes[:i]) - ledger.outside.forward))
            yield b

    with torch.no_grad():
        out = forward_stacked(model, lazily(), elements)
    calls = ledger.outside.calls
    assert [o.shape for o in out] == [o.shape for o in loop]
    if elements is None:
        assert calls == len(batches) and all(torch.equal(a, b) for a, b in zip(out, loop, strict=True))
    else:
        expected, load = 0, 0
        for k in sizes:
            if load and load + 4 * k > elements:
                expected, load = expected + 1, 0
            load += 4 * k
        assert calls == expected + 1
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(out, loop, strict=True))
        assert max(held) <= max(elements, 4 * max(sizes))
    assert ledger.outside.rounds == 1


def test_a_stacked_round_read_inside_closing_ends_when_its_reader_fails() -> None:
    ledger, model = PassLedger(), tiny()
    ledger.watch(model)
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="reader failed"):
            with closing(stacked_outputs(model, (images(2) for _ in range(3)))) as outputs:
                for _ in outputs:
                    raise RuntimeError("reader failed")
        model(images(2))  # a round of its own, not the failed one's
    assert (ledger.outside.calls, ledger.outside.rounds) == (2, 2)
