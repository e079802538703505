"""The gates' comparisons side by side (experiments/measurement/gate_columns.py): chunks cut at the looks and the
batches, and several gates' chunks of the same images computed as one stack, each gate's columns and verdict the
ones it gets alone, in fewer rounds, read back on a resume and computed only where missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TinyCNN
from helpers import synthetic_images, train_briefly

from advspatial.data.tensors import as_image_dataset
from advspatial.experiments.context import ExperimentContext
from advspatial.experiments.maps.config import MapsConfig
from advspatial.experiments.measurement.gate import GateRequest, gate_stage, gate_stages
from advspatial.experiments.measurement.gate_columns import look_chunks
from advspatial.passes import PassCount
from advspatial.rundir import RunDir
from advspatial.runtime import batch_slices

N = 120


@pytest.fixture(scope="module")
def trained() -> tuple[TinyCNN, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A TinyCNN trained on the bright-square images, N test images and a map of each: the square's own pixels
    blurred into the rest (a map the gate can judge either way)."""
    torch.manual_seed(3)
    x, y = synthetic_images(240, seed=4)
    model = train_briefly(TinyCNN(num_classes=4), x, y, epochs=3, batch=32, lr=3e-3)
    test_x, test_y = synthetic_images(N, seed=5)
    maps = test_x[:, 0] + 0.5 * torch.rand(N, 28, 28, generator=torch.Generator().manual_seed(6))
    return model, test_x, test_y, maps


def make_context(trained: tuple, out: Path, batch_size: int = 48, **settings: Any) -> ExperimentContext:
    model, x, y, _ = trained
    config = MapsConfig(**{"n": N, "batch_size": batch_size, "gate_n": N, "gate_steps": 2,
                           "randomization_images": 2, "randomization_samples": 2, "randomization_steps": 2,
                           "gate_sequential": False, "progress": False, **settings})
    ledger_dir = RunDir(out)
    ledger_dir.passes.watch(model)
    return ExperimentContext(config, ledger_dir, model, as_image_dataset((x, y)), torch.device("cpu"),
                             list(batch_slices(N, batch_size)))


def requests(ctx: ExperimentContext, maps: torch.Tensor, fractions: tuple[float, ...], **kw: Any
             ) -> list[GateRequest]:
    return [GateRequest("gradcam", f, 0.1, maps=lambda b: maps[ctx.slices[b]], **kw) for f in fractions]


def comparison_counts(ctx: ExperimentContext, control: bool = False) -> PassCount:
    """The passes of the gates' comparison stages (``gate/gradcam/f0.2-n120-compared``), or with ``control`` of
    the positive control's (``gate/control/f0.2/images-0-48``), in the run."""
    total = PassCount()
    for name, count in ctx.rundir.passes.by_family().items():
        if "/f0." in name and ("control" in name) == control:
            total.add(count)
    return total


def effects(record: dict) -> dict[str, float]:
    """Every effect mean of the map's comparisons and of the positive control's."""
    return {f"{part}/{name}/{measure}": e["mean"] for part in ("comparisons", "control")
            for name, c in record[part].items() for measure, e in c["effects"].items()}


def test_chunks_cut_at_the_looks_and_the_batches() -> None:
    chunks = look_chunks((50, 100, 160), [slice(0, 64), slice(64, 128), slice(128, 160)])
    assert [[(c.index, c.batch, c.offset, c.images.start, c.images.stop) for c in look] for look in chunks] == [
        [(0, 0, 0, 0, 50)],
        [(1, 0, 50, 50, 64), (2, 1, 0, 64, 100)],
        [(3, 1, 36, 100, 128), (4, 2, 0, 128, 160)],
    ]


def test_gates_side_by_side_give_each_gate_its_own_result_in_fewer_rounds(trained, tmp_path) -> None:
    maps = trained[3]
    fractions = (0.1, 0.2, 0.3)
    alone, alone_counts, alone_controls = [], PassCount(), PassCount()
    for f in fractions:
        ctx = make_context(trained, tmp_path / f"alone{f}")
        alone.append(gate_stage(ctx, "gradcam", f, 0.1, maps=lambda b, ctx=ctx: maps[ctx.slices[b]]).as_dict())
        alone_counts.add(comparison_counts(ctx))
        alone_controls.add(comparison_counts(ctx, control=True))
    ctx = make_context(trained, tmp_path / "joint")
    joint = [g.as_dict() for g in gate_stages(ctx, requests(ctx, maps, fractions))]
    joint_counts = comparison_counts(ctx)
    assert all(g["control"] for g in joint)
    for one, together in zip(alone, joint, strict=True):
        for key in ("passed", "status", "n", "images_examined", "fraction"):
            assert one[key] == together[key], key
        # the same rows, attacked in chunks of another composition: equal to a forward pass's float rounding
        assert effects(together) == pytest.approx(effects(one), abs=1e-5, nan_ok=True)
    assert joint_counts.rounds * 2 < alone_counts.rounds  # one stack of the three, not three runs
    assert joint_counts.forward < alone_counts.forward  # the clean passes are shared too
    controls = comparison_counts(ctx, control=True)  # the control's regions at every fraction: one round per chunk
    assert controls.rounds < alone_controls.rounds and controls.forward < alone_controls.forward
    # each gate's stage took a share of the joint work: every one counts passes, and no pass is lost
    families = {k: v for k, v in ctx.rundir.passes.by_family().items() if "/f0." in k and "control" not in k}
    assert len(families) == 3 and all(c.rounds > 0 and c.forward > 0 for c in families.values())


def test_a_resumed_run_reads_the_joint_chunks_back_and_counts_the_same(trained, tmp_path) -> None:
    maps = trained[3]
    first_ctx = make_context(trained, tmp_path / "run")
    first = [g.as_dict() for g in gate_stages(first_ctx, requests(first_ctx, maps, (0.1, 0.2)))]
    resumed_ctx = make_context(trained, tmp_path / "run")
    resumed = [g.as_dict() for g in gate_stages(resumed_ctx, requests(resumed_ctx, maps, (0.1, 0.2)))]
    assert json.dumps(resumed, sort_keys=True) == json.dumps(first, sort_keys=True)  # NaN-safe
    assert comparison_counts(resumed_ctx) == comparison_counts(first_ctx)


def test_a_stage_lost_while_the_joint_chunk_was_saved_is_computed_with_its_company(trained, tmp_path) -> None:
    """A run stopped while saving a unit's stages (one gate's chunk and one fraction's positive control saved,
    the others not): the resume computes the lost stages again beside the saved ones (not saved again), so that
    each takes the share of the passes a run in one go gives it, stage by stage."""
    maps = trained[3]
    first_ctx = make_context(trained, tmp_path / "run")
    first = [g.as_dict() for g in gate_stages(first_ctx, requests(first_ctx, maps, (0.1, 0.2)))]
    shares = {k: v for k, v in first_ctx.rundir.passes.by_stage.items() if "/f0." in k}
    stages = first_ctx.rundir.stages
    saved = sorted(str(p.relative_to(stages).with_suffix("")) for p in stages.rglob("*.pt"))
    compared = [s for s in saved if "control" not in s and s.endswith("compared/batch-00001")]
    controls = [s for s in saved if "/control/" in s and s.endswith("images-48-96")]
    assert len(compared) == 2 and len(controls) == 2    # the second batch: two gates, two fractions' controls
    for pair in (compared, controls):
        assert all(first_ctx.rundir.computed_with(name) == tuple(pair) for name in pair)
    lost = [stages / f"{name}.pt" for name in (compared[0], controls[0])]
    company = [stages / f"{name}.pt" for name in (compared[1], controls[1])]
    kept = [p.stat().st_mtime_ns for p in company]
    for path in lost:
        path.unlink()
    resumed_ctx = make_context(trained, tmp_path / "run")
    resumed = [g.as_dict() for g in gate_stages(resumed_ctx, requests(resumed_ctx, maps, (0.1, 0.2)))]
    assert json.dumps(resumed, sort_keys=True) == json.dumps(first, sort_keys=True)  # NaN-safe
    assert all(p.exists() for p in lost)
    assert [p.stat().st_mtime_ns for p in company] == kept  # only the lost stages are saved again
    for key, count in shares.items():
        again = resumed_ctx.rundir.passes.by_stage[key]
        assert (again.forward, again.backward, again.calls, again.rounds) == (
            count.forward, count.backward, count.calls, count.rounds), key


def test_only_the_gates_whose_chunks_are_missing_are_computed(trained, tmp_path, monkeypatch) -> None:
    """A gate computed alone earlier in the run is read back; the stack holds only the new gate's regions."""
    from advspatial.experiments.measurement import gate_columns

    maps = trained[3]
    ctx = make_context(trained, tmp_path / "run")
    earlier = gate_stage(ctx, "gradcam", 0.2, 0.1, maps=lambda b: maps[ctx.slices[b]]).as_dict()
    stacked: list[int] = []
    original = gate_columns._joint_columns

    def recorded(ctx_, members, images):  # type: ignore[no-untyped-def]
        stacked.append(len(members))
        return original(ctx_, members, images)

    monkeypatch.setattr(gate_columns, "_joint_columns", recorded)
    both = [g.as_dict() for g in gate_stages(ctx, requests(ctx, maps, (0.2, 0.1)))]
    assert stacked and set(stacked) == {1}  # each chunk: the 0.1 gate's alone
    assert json.dumps(both[0], sort_keys=True) == json.dumps(earlier, sort_keys=True)


def test_gates_of_different_sizes_look_side_by_side(trained, tmp_path) -> None:
    """Sequential looks of a gate on every image beside one on the first 50: each examines its own images and the
    chunks they share are computed once."""
    maps = trained[3]
    ctx = make_context(trained, tmp_path / "looks", gate_sequential=True)
    wide, narrow = gate_stages(ctx, [*requests(ctx, maps, (0.2,)), *requests(ctx, maps, (0.1,), n=50)])
    assert narrow.images_planned == 50 and narrow.images_examined == 50
    assert wide.images_planned == N and wide.images_examined in (50, 100, N)
    lone = gate_stage(make_context(trained, tmp_path / "lone", gate_sequential=True), "gradcam", 0.1, 0.1,
                      maps=lambda b: maps[ctx.slices[b]], n=50)
    assert effects(narrow.as_dict()) == pytest.approx(effects(lone.as_dict()), abs=1e-5, nan_ok=True)
