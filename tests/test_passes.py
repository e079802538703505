"""The model-pass ledger: known counts on a tiny model, stage attribution, counts that travel with stage files."""

from __future__ import annotations

import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advspatial.host_syncs import host_list
from advspatial.models.outputs import guard_outputs
from advspatial.passes import (
    PassCount, PassLedger, call_rates, one_round, stage_family,
)
from advspatial.rundir import RunDir
from advspatial.runtime import per_sample_noise
from helpers import without_timings


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
    assert ledger.outside == PassCount(forward=9, backward=8, calls=2, backward_calls=2, rounds=2)


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
    assert ledger.outside == PassCount(forward=6, backward=0, calls=2, rounds=2)
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
    assert ledger.by_stage == {"outer/batch-00000": PassCount(2, 0, 1, rounds=1),
                               "inner/batch-00000": PassCount(7, 0, 1, rounds=1)}
    assert ledger.outside == PassCount(1, 0, 1, rounds=1)
    assert ledger.total() == PassCount(10, 0, 3, rounds=3)


def test_a_failed_stage_is_not_recorded() -> None:
    ledger = PassLedger()
    try:
        with ledger.stage("broken"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert ledger.by_stage == {}


@given(st.builds(PassCount, *(st.integers(0, 500) for _ in range(6)), *(st.floats(0, 10) for _ in range(3))),
       st.lists(st.integers(1, 50), min_size=1, max_size=6))
@settings(max_examples=60, deadline=None)
def test_shares_sum_to_the_count_and_follow_the_weights(count: PassCount, weights: list[int]) -> None:
    shares = count.shares(weights)
    total = PassCount()
    for share in shares:
        total.add(share)
    assert total == count  # every integer count exactly (the seconds are left out of ==)
    for seconds in ("cpu_seconds", "model_seconds", "wall_seconds"):
        assert getattr(total, seconds) == pytest.approx(getattr(count, seconds))
    for share, w in zip(shares, weights, strict=True):
        assert abs(share.rounds - count.rounds * w / sum(weights)) < 1  # largest remainders: within one


def test_work_measured_apart_is_in_no_stage_until_the_stages_charge_their_shares() -> None:
    ledger, model = PassLedger(), tiny()
    ledger.watch(model)
    with torch.no_grad():
        with ledger.apart() as joint:
            model(images(6))
            model(images(6))
        assert ledger.by_stage == {} and joint == PassCount(12, 0, 2, rounds=2)
        for k, share in enumerate(joint.shares([1, 1])):
            with ledger.stage(f"gate/f{k}/batch-00000"):
                ledger.charge(share)
    assert ledger.by_stage == {"gate/f0/batch-00000": PassCount(6, 0, 1, rounds=1),
                               "gate/f1/batch-00000": PassCount(6, 0, 1, rounds=1)}
    assert ledger.total() == joint


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
    assert without_timings(resumed.passes.summary()) == without_timings(first.passes.summary())
    assert "stage files" in resumed.passes.clock.phases  # reading them back is the resumed run's own time
    summary = first.passes.summary()
    assert (summary["forward"], summary["backward"], summary["calls"]) == (12, 4, 3)
    assert summary["forward_per_image"] == 1.5 and summary["complete"]
    counts = {name: {key: stage[key] for key in ("forward", "backward", "calls", "backward_calls", "rounds")}
              for name, stage in summary["stages"].items()}
    assert counts == {"attack": {"forward": 4, "backward": 4, "calls": 1, "backward_calls": 1, "rounds": 1},
                      "clean": {"forward": 8, "backward": 0, "calls": 2, "backward_calls": 0, "rounds": 2}}


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
    assert ledger.by_stage == {"gate/m/mprt": PassCount(4, 0, 1, rounds=1)}
    assert ledger.outside == PassCount(1, 0, 1, rounds=1)
    assert not ledger._copies_count


def test_calls_chunked_inside_one_round_are_one_round_and_others_one_each() -> None:
    ledger, model = PassLedger(), tiny()
    ledger.watch(model)
    with torch.no_grad():
        with one_round():
            for _ in range(4):
                model(images(2))
            with one_round():  # nested: still the same round
                model(images(2))
        model(images(3))
        model(images(3))
    assert (ledger.outside.calls, ledger.outside.rounds) == (7, 3)
    assert call_rates(ledger.outside)["images_per_round"] == round(16 / 3, 1)


def test_host_reads_outside_the_model_are_counted_per_stage_and_the_models_own_are_not() -> None:
    class ReadsInside(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(12, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _ = float(x.sum())  # the model's own read: not the framework's
            return self.linear(x.flatten(1))

    ledger, model = PassLedger(), ReadsInside()
    ledger.watch(model)
    with ledger.stage("reads"), torch.no_grad():
        out = model(images(4))
        _ = out.argmax(1).tolist()
        _ = bool(out.isnan().any())
        _ = out[out[:, 0] > 0]  # boolean compaction: its size is read back
        _ = out[:, 0]  # plain indexing: no read
    with torch.no_grad():
        _ = model(images(2)).sum().item()  # outside every stage: not counted
    assert ledger.by_stage["reads"].syncs == 3
    assert ledger.outside.syncs == 0


@pytest.mark.parametrize("guard_first", [True, False])
def test_the_output_guards_per_call_read_on_a_cpu_is_not_counted_as_a_devices_wait(guard_first: bool,
                                                                                  monkeypatch) -> None:
    """On a CPU the guard checks every output at once; on a device it holds the check until the stage's end, one
    read per stage (forced here with DEVICE_PATH_ON_CPU). The count stands for a device's waits: none per call, one per
    stage, whatever the order of the guard's and the ledger's hooks."""
    from advspatial import host_syncs

    for deferred in (False, True):
        monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", deferred)
        ledger, model = PassLedger(), tiny()
        if guard_first:
            guard_outputs(model, "tiny")
        ledger.watch(model)
        if not guard_first:
            guard_outputs(model, "tiny")
        with ledger.stage("guarded"), torch.no_grad():
            model(images(2))
            model(images(3))
        assert ledger.by_stage["guarded"].syncs == (1 if deferred else 0)


def test_sample_ids_kept_on_the_host_are_read_without_counting_and_other_reads_still_count() -> None:
    ledger, ids = PassLedger(), torch.arange(5)
    with ledger.stage("ids"):
        assert host_list(ids) == [0, 1, 2, 3, 4]
        _ = per_sample_noise((5, 3), 0, ids)  # reads its ids with host_list
        _ = ids.tolist()  # an ordinary read: counted
        _ = host_list(ids)
        _ = bool(ids.any())
    assert ledger.by_stage["ids"].syncs == 2


def test_reading_back_is_restored_after_the_stage() -> None:
    before = torch.Tensor.item, torch.Tensor.__getitem__, torch.equal, torch.autograd.grad
    ledger = PassLedger()
    with ledger.stage("s"):
        assert torch.Tensor.item is not before[0]
    assert (torch.Tensor.item, torch.Tensor.__getitem__, torch.equal, torch.autograd.grad) == before
    assert "__getitem__" not in torch.Tensor.__dict__


def test_a_stage_times_its_work_and_the_models_share_of_it() -> None:
    ledger, model = PassLedger(), nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 256), nn.ReLU(),
                                                nn.Linear(256, 3))
    ledger.watch(model)
    with ledger.stage("timed"):
        x = torch.rand(64, 3, 64, 64, requires_grad=True)
        for _ in range(3):
            torch.autograd.grad(model(x).sum(), x)
        busy = torch.rand(300, 300)
        for _ in range(50):
            busy = (busy @ busy).tanh()  # work outside the model
    count = ledger.by_stage["timed"]
    assert (count.calls, count.backward_calls) == (3, 3)
    assert 0 < count.model_seconds < count.cpu_seconds
    assert count.non_model_seconds_per_call() == pytest.approx((count.cpu_seconds - count.model_seconds) / 6)


def test_a_stage_waiting_on_something_else_counts_the_wait_in_wall_time_not_cpu_time() -> None:
    ledger = PassLedger()
    with ledger.stage("outer"):
        time.sleep(0.05)  # a host waiting on a device: elapsed time, no CPU time
        with ledger.stage("inner"):
            time.sleep(0.1)
    outer, inner = ledger.by_stage["outer"], ledger.by_stage["inner"]
    assert 0.1 <= inner.wall_seconds and inner.cpu_seconds < 0.05
    assert 0.05 <= outer.wall_seconds < 0.1  # the inner stage's wait is its own, not its parent's too


def test_work_measured_apart_charges_its_wall_time_to_the_stages_in_their_shares() -> None:
    ledger = PassLedger()
    with ledger.apart() as joint:
        time.sleep(0.08)
    for k, share in enumerate(joint.shares([3, 1])):
        with ledger.stage(f"gate/f{k}"):
            ledger.charge(share)
    first, second = ledger.by_stage["gate/f0"].wall_seconds, ledger.by_stage["gate/f1"].wall_seconds
    assert first >= 0.06 and second >= 0.02
    assert first == pytest.approx(3 * second, rel=0.05)  # both stages are otherwise empty: their shares dominate


def test_a_nested_stage_time_is_its_own_not_its_parents() -> None:
    ledger = PassLedger()
    with ledger.stage("outer"):
        with ledger.stage("inner"):
            busy = torch.rand(300, 300)
            for _ in range(60):
                busy = (busy @ busy).tanh()
    outer, inner = ledger.by_stage["outer"], ledger.by_stage["inner"]
    assert inner.cpu_seconds > 0
    assert outer.cpu_seconds < inner.cpu_seconds


def test_a_phase_times_the_work_outside_the_stages_computed_in_it() -> None:
    ledger = PassLedger()
    with ledger.phase("statistics"):
        time.sleep(0.05)
        with ledger.stage("attack/pgd"):
            time.sleep(0.1)  # the stage's own time, not the phase's
    assert 0.05 <= ledger.clock.phases["statistics"].wall < 0.1
    assert ledger.by_stage["attack/pgd"].wall_seconds >= 0.1


def test_a_nested_phase_is_taken_off_its_parent_and_a_phase_entered_again_adds_up() -> None:
    ledger = PassLedger()
    with ledger.phase("other"):
        time.sleep(0.03)
        for _ in range(2):
            with ledger.phase("rows"):
                time.sleep(0.04)
    assert ledger.clock.phases["rows"].wall >= 0.08
    assert 0.03 <= ledger.clock.phases["other"].wall < 0.07  # its own wait only: the rows are theirs


def test_a_phase_inside_a_stage_records_nothing() -> None:
    ledger = PassLedger()
    with ledger.stage("gate/gradcam"):
        with ledger.phase("statistics"):
            time.sleep(0.02)
    assert ledger.clock.phases == {}
    assert ledger.by_stage["gate/gradcam"].wall_seconds >= 0.02


def test_the_summary_states_each_phases_seconds_outside_the_stages() -> None:
    ledger = PassLedger()
    with ledger.phase("figures"):
        time.sleep(0.02)
    phases = ledger.summary()["outside_stages"]["phase_seconds"]  # type: ignore[index]
    assert set(phases) == {"figures"}
    assert phases["figures"]["wall_seconds"] >= 0.02 and phases["figures"]["cpu_seconds"] >= 0
