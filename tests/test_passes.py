"""The model-pass ledger: known counts on a tiny model, stage attribution, counts that travel with stage files."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advspatial.passes import PassCount, PassLedger, stage_family
from advspatial.rundir import RunDir


def tiny() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()


def images(n: int, grad: bool = False) -> torch.Tensor:
    return torch.rand(n, 3, 2, 2, requires_grad=grad)


def test_a_forward_pass_counts_its_images_and_a_gradient_counts_them_back() -> None:
    ledger, model = PassLedger(), tiny()
    ledger.watch(model)
    with torch.no_grad():
        model(images(5))
    x = images(4, grad=True)
    out = model(x)
    torch.autograd.grad(out.sum(), x, retain_graph=True)
    torch.autograd.grad(out[:, 0].sum(), x)  # a second gradient through the same pass: a second backward
    assert ledger.outside == PassCount(forward=9, backward=8, calls=2)


def test_a_wrapper_counts_only_the_calls_that_reach_the_watched_model() -> None:
    model = tiny()

    class TwiceWrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) + self.inner(x.flip(0))

    ledger = PassLedger()
    ledger.watch(model)
    ledger.watch(model)  # watched once, however often asked
    with torch.no_grad():
        TwiceWrapped()(images(3))
    assert ledger.outside == PassCount(forward=6, backward=0, calls=2)
    ledger.unwatch()
    with torch.no_grad():
        model(images(3))
    assert ledger.outside.calls == 2


def test_stages_count_their_own_passes_and_nested_ones_once() -> None:
    ledger, model = PassLedger(), tiny()
    ledger.watch(model)
    with torch.no_grad():
        with ledger.stage("outer/batch-00000"):
            model(images(2))
            with ledger.stage("inner/batch-00000"):
                model(images(7))
        model(images(1))
    assert ledger.by_stage == {"outer/batch-00000": PassCount(2, 0, 1), "inner/batch-00000": PassCount(7, 0, 1)}
    assert ledger.outside == PassCount(1, 0, 1)
    assert ledger.total() == PassCount(10, 0, 3)


def test_a_failed_stage_is_not_recorded() -> None:
    ledger = PassLedger()
    try:
        with ledger.stage("broken"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert ledger.by_stage == {}


@given(st.lists(st.tuples(st.integers(1, 6), st.booleans()), min_size=1, max_size=8))
@settings(max_examples=25, deadline=None)
def test_totals_are_the_sums_of_the_batches(batches: list[tuple[int, bool]]) -> None:
    ledger, model = PassLedger(), tiny()
    ledger.watch(model)
    for b, (size, grad) in enumerate(batches):
        with ledger.stage(f"step/batch-{b:05d}"):
            x = images(size, grad)
            out = model(x)
            if grad:
                torch.autograd.grad(out.sum(), x)
    total = ledger.total()
    assert total.forward == sum(size for size, _ in batches)
    assert total.backward == sum(size for size, grad in batches if grad)
    assert total.calls == len(batches)
    assert ledger.by_family() == {"step": total}


def test_stage_family_drops_the_batch_or_chunk_index_only() -> None:
    assert stage_family("attack/pgd/batch-00003") == "attack/pgd"
    assert stage_family("locality/k3/chunk-00012") == "locality/k3"
    assert stage_family("prior") == "prior"
    assert stage_family("gate/batch-size") == "gate/batch-size"


def counted_run(path, model: nn.Module) -> RunDir:
    """Three cached stages on ``path``: 4 images forward and back, 2 forward, 6 forward."""
    rundir = RunDir(path)
    rundir.passes.watch(model)

    def attack() -> torch.Tensor:
        x = images(4, grad=True)
        return torch.autograd.grad(model(x).sum(), x)[0]

    def clean(n: int) -> torch.Tensor:
        with torch.no_grad():
            return model(images(n))

    rundir.cached("attack/batch-00000", attack)
    rundir.cached("clean/batch-00000", lambda: clean(2))
    rundir.cached("clean/batch-00001", lambda: clean(6))
    return rundir


def test_counts_are_written_with_a_stage_and_read_back_on_resume(tmp_path) -> None:
    model = tiny()
    first = counted_run(tmp_path, model)
    first.passes.unwatch()
    resumed = counted_run(tmp_path, model)  # every stage is on disk now: read back, nothing computed
    assert resumed.passes.outside == PassCount()  # no pass was made
    assert resumed.passes.by_stage == first.passes.by_stage
    first.passes.images = resumed.passes.images = 8
    assert resumed.passes.summary() == first.passes.summary()
    summary = first.passes.summary()
    assert (summary["forward"], summary["backward"], summary["calls"]) == (12, 4, 3)
    assert summary["forward_per_image"] == 1.5 and summary["complete"]
    assert summary["stages"] == {"attack": {"forward": 4, "backward": 4, "calls": 1},
                                 "clean": {"forward": 8, "backward": 0, "calls": 2}}


def test_a_stage_file_without_counts_makes_the_totals_a_lower_bound(tmp_path) -> None:
    rundir = RunDir(tmp_path)
    rundir.save_stage("old/batch-00000", torch.zeros(1))  # written as before passes were counted
    rundir.cached("old/batch-00000", lambda: torch.ones(1))
    rundir.passes.images = 1
    assert not rundir.passes.summary()["complete"]


def test_a_torchscript_model_takes_no_hooks_and_its_run_counts_nothing() -> None:
    ledger = PassLedger()
    ledger.watch(torch.jit.script(tiny()))
    assert ledger.unwatchable and ledger.summary() is None


def test_a_deep_copy_counts_only_inside_counting_copies() -> None:
    import copy

    ledger, model = PassLedger(), tiny()
    ledger.watch(model)
    uncounted = copy.deepcopy(model)
    with ledger.counting_copies():
        counted = copy.deepcopy(model)
        with torch.no_grad(), ledger.stage("gate/m/mprt"):
            counted(images(4))
            uncounted(images(5))
    with torch.no_grad():
        uncounted(images(6))
        model(images(1))
    assert ledger.by_stage == {"gate/m/mprt": PassCount(4, 0, 1)}
    assert ledger.outside == PassCount(1, 0, 1)
    assert not ledger._copies_count
