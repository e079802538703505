"""Independent work sent as one round (stacked_runs.py): stacked calls whose outputs are a loop's, one round; a
stacked run's rows bounded by the memory its gradient keeps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advspatial import stacked_runs
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


def mlp(d: int = 10, h: int = 20) -> nn.Module:
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 3))


def test_the_bytes_a_row_keeps_are_the_saved_activations_of_one_row() -> None:
    """Linear-ReLU-Linear keeps its input (d floats) and the ReLU's output, which the second layer saves too
    (one storage): (d + h) float32 per row; a conv keeps its input and its ReLU's output likewise."""
    assert stacked_runs.kept_bytes_per_row(mlp(10, 20), torch.zeros(5, 10)) == (10 + 20) * 4
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    assert stacked_runs.kept_bytes_per_row(conv, torch.zeros(2, 3, 8, 8)) == (3 + 4) * 64 * 4


def test_the_memory_probe_counts_no_pass_and_leaves_the_model_as_it_was() -> None:
    model = nn.Sequential(nn.Linear(10, 20), nn.BatchNorm1d(20), nn.ReLU(), nn.Linear(20, 3)).train()
    running = model[1].running_mean.clone()
    ledger = PassLedger()
    ledger.watch(model)
    with ledger.stage("probe") as count:
        stacked_runs.memory_rows(model, torch.rand(4, 10))
    assert (count.forward, count.calls, count.rounds, count.syncs) == (0, 0, 0, 0)
    assert model.training and torch.equal(model[1].running_mean, running)
    mixed = mlp().train()
    mixed[1].eval()  # a model whose parts are in different modes keeps each part's
    stacked_runs.kept_bytes_per_row(mixed, torch.rand(4, 10))
    assert [m.training for m in mixed] == [True, False, True]


def test_a_machine_that_does_not_say_its_memory_is_taken_as_the_fallback(monkeypatch) -> None:
    def no_sysconf(name: str) -> int:
        raise ValueError(name)

    monkeypatch.setattr(stacked_runs.os, "sysconf", no_sysconf)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert stacked_runs.device_memory(torch.device("cpu")) == stacked_runs.FALLBACK_MEMORY // 2


@settings(max_examples=40, deadline=None, derandomize=True)
@given(call_rows=st.integers(1, 50), fitting=st.integers(1, 400))
def test_a_run_is_whole_calls_within_memory_and_at_least_one_call(call_rows: int, fitting: int) -> None:
    """With memory for ``fitting`` rows: a run holds the most whole calls that fit, one call when none fits."""
    model, sample = mlp(), torch.zeros(1, 10)
    kept = stacked_runs.kept_bytes_per_row(model, sample)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(stacked_runs, "device_memory", lambda _: int(fitting * kept / stacked_runs.RUN_MEMORY_SHARE) + 1)
        assert stacked_runs.memory_rows(model, sample) == fitting
        rows = stacked_runs.run_rows(call_rows, sample, model)
    assert rows % call_rows == 0 and rows >= call_rows
    assert rows <= fitting or rows == call_rows
    assert rows + call_rows > fitting or rows == stacked_runs.run_rows(call_rows, sample)  # the most that fit
    assert stacked_runs.gradient_call_rows(call_rows, sample, model) == call_rows  # a CPU's calls: its batch


def test_a_devices_gradient_calls_are_bounded_by_memory_not_by_inputs(monkeypatch) -> None:
    """Where a device's stacked calls would take 5,000 rows, a call that takes gradients takes what memory holds
    (here 40 rows), never fewer than the CPU's batch."""
    model, sample = mlp(), torch.zeros(1, 10)
    kept = stacked_runs.kept_bytes_per_row(model, sample)
    monkeypatch.setattr(stacked_runs, "device_rows", lambda cpu_rows, _: 5_000)
    monkeypatch.setattr(stacked_runs, "device_memory", lambda _: int(40 * kept / stacked_runs.RUN_MEMORY_SHARE) + 1)
    assert stacked_runs.gradient_call_rows(16, sample, model) == 40
    assert stacked_runs.gradient_call_rows(64, sample, model) == 64


def test_rows_per_call_are_the_cpus_batch_on_a_cpu_and_a_devices_budget_elsewhere(monkeypatch) -> None:
    images = torch.zeros(5, 3, 32, 32)
    assert stacked_runs.device_rows(32, images) == 32 and stacked_runs.device_rows(7, images[:1]) == 7
    monkeypatch.setattr(stacked_runs, "CPU_STACK_ELEMENTS", 3 * 32 * 32 * 100)  # what a device's budget does
    assert stacked_runs.device_rows(32, images) == 100 and stacked_runs.device_rows(500, images) == 500


@settings(max_examples=60, deadline=None)
@given(cpu_batch=st.integers(1, 500), side=st.integers(1, 300), images=st.integers(1, 10_000),
       processes=st.integers(1, 8), gigabytes=st.integers(1, 200))
def test_a_devices_batch_holds_its_memorys_element_budget_and_each_processs_share_never_less_than_the_cpus(
        cpu_batch: int, side: int, images: int, processes: int, gigabytes: int) -> None:
    memory = gigabytes * 10**9
    batch = stacked_runs.device_batch_size(cpu_batch, (3, side, side), images, processes, memory)
    budget = stacked_runs.BATCH_ELEMENTS * memory // stacked_runs.BATCH_MEMORY
    share = -(-images // processes)
    assert batch >= cpu_batch
    if batch > cpu_batch:  # raised: within the budget and each process's share of the images, filling one of them
        assert batch * 3 * side * side <= budget and batch <= share
        assert (batch + 1) * 3 * side * side > budget or batch == share
    assert stacked_runs.device_batch_size(cpu_batch, (3, side, side), images, processes, 2 * memory) >= batch


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 11), per_call=st.integers(1, 5))
def test_a_chunked_runs_input_gradient_is_the_whole_graphs_to_the_bit(rows: int, per_call: int) -> None:
    model = stacked_runs.RowChunks(_conv_net(), per_call)
    x = torch.rand(rows, 1, 6, 6, generator=torch.Generator().manual_seed(rows))
    weights = torch.arange(rows, dtype=torch.float32)[:, None]  # a per-row objective that tells the rows apart
    grad, logits = model.input_gradient(x, lambda z, sl: (z.square() * weights[sl]).sum())
    whole = x.clone().requires_grad_(True)
    out = model(whole)
    (expected,) = torch.autograd.grad((out.square() * weights).sum(), whole)
    assert torch.equal(grad, expected) and torch.equal(logits, out.detach())


def test_a_chunked_run_takes_each_calls_gradient_before_the_next_forward_in_one_round() -> None:
    """What bounds its memory to one call's activations: forward, backward, forward, backward..., not all forwards
    first; the ledger counts the same calls, images and one round."""
    net = _conv_net()
    events: list[str] = []
    net.register_forward_hook(lambda m, i, out: out.register_hook(lambda g: events.append("B")) and None)
    net.register_forward_pre_hook(lambda m, i: events.append("F") and None)
    ledger = PassLedger()
    ledger.watch(net)
    model = stacked_runs.RowChunks(net, 2)
    model.input_gradient(torch.rand(5, 1, 6, 6), lambda z, sl: z.sum())
    assert events == ["F", "B"] * 3
    count = ledger.outside
    assert (count.calls, count.backward_calls, count.forward, count.backward, count.rounds) == (3, 3, 5, 5, 1)


def test_the_attack_gradient_through_a_chunked_run_is_the_unchunked_runs() -> None:
    from advspatial.attacks.gradients import loss_gradient

    net = _conv_net()
    x = torch.rand(7, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    y, target = torch.tensor([0, 1, 2, 0, 1, 2, 0]), torch.tensor([1, 2, 0, 1, 2, 0, 1])
    for tgt in (None, target):
        for loss in ("ce", "margin"):
            chunked = loss_gradient(stacked_runs.RowChunks(net, 3), x, y, tgt, loss)
            rows = [loss_gradient(net, x[i:i + 3], y[i:i + 3], None if tgt is None else tgt[i:i + 3], loss)
                    for i in range(0, 7, 3)]
            assert torch.equal(chunked[0], torch.cat([g for g, _ in rows]))
            assert torch.equal(chunked[1], torch.cat([z for _, z in rows]))


def test_attack_maps_through_a_chunked_run_take_each_calls_gradient_before_the_next_forward() -> None:
    """The spatial prior's attack maps of a stacked run: the gradient map is the unchunked calls' to the bit, the
    contribution map the whole model's up to float noise, and each keeps one call's activations (forward, backward,
    forward, backward...)."""
    from advspatial.maps import attack_map

    net = _conv_net()
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(7, 1, 6, 6, generator=gen)
    x_adv = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    events: list[str] = []
    net.register_forward_hook(lambda m, i, out: out.register_hook(lambda g: events.append("B")) and None
                              if out.requires_grad else None)
    net.register_forward_pre_hook(lambda m, i: events.append("F") and None)
    chunked = attack_map("gradient", stacked_runs.RowChunks(net, 3), x, x_adv, y)
    assert events[-6:] == ["F", "B"] * 3 and events.count("B") == 3
    per_call = [attack_map("gradient", net, x[i:i + 3], x_adv[i:i + 3], y[i:i + 3]) for i in range(0, 7, 3)]
    assert torch.equal(chunked.map, torch.cat([m.map for m in per_call]))
    events.clear()
    kw = {"steps": 4, "max_steps": 4}
    chunked = attack_map("contribution", stacked_runs.RowChunks(net, 3), x, x_adv, y, **kw)
    backward = [i for i, e in enumerate(events) if e == "B"]
    assert len(backward) == 10 and all(events[i - 1] == "F" for i in backward)  # 28 path points in calls of 3
    whole = attack_map("contribution", net, x, x_adv, y, **kw)
    assert torch.allclose(chunked.map, whole.map, atol=1e-6) and chunked.map.abs().sum() > 0


def test_a_chunked_runs_input_gradient_of_no_rows_is_empty_like_its_forward() -> None:
    model = stacked_runs.RowChunks(_conv_net(), 2)
    grad, logits = model.input_gradient(torch.rand(0, 1, 6, 6), lambda z, sl: z.sum())
    assert grad.shape == (0, 1, 6, 6) and logits.shape == model(torch.rand(0, 1, 6, 6)).shape == (0, 3)
