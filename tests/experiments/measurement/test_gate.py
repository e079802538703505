"""The faithfulness gate as a stage (experiments/gate.py): its looks, what an early decision leaves out, and results
that depend on neither the batch size nor a resumed run."""

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
from advspatial.experiments.measurement.gate import gate_stage
from advspatial.experiments.maps.config import MapsConfig
from advspatial.rundir import RunDir
from advspatial.runtime import batch_slices

N = 160


@pytest.fixture(scope="module")
def quadrants() -> tuple[TinyCNN, torch.Tensor, torch.Tensor]:
    """A TinyCNN that reads the bright square's quadrant, and N test images."""
    torch.manual_seed(0)
    x, y = synthetic_images(400, seed=1)
    model = train_briefly(TinyCNN(num_classes=4), x, y, epochs=4, batch=32, lr=3e-3)
    test_x, test_y = synthetic_images(N, seed=2)
    return model, test_x, test_y


def opposite_quadrant(x: torch.Tensor) -> torch.Tensor:
    """A wrong map: the quadrant diagonally opposite the bright square (which needs no model to find)."""
    maps = torch.zeros(x.shape[0], 28, 28)
    for i in range(x.shape[0]):
        brightness = x[i, 0].reshape(2, 14, 2, 14).mean((1, 3)).flatten()  # quadrants in reading order
        row, col = divmod(3 - int(brightness.argmax()), 2)
        maps[i, 14 * row: 14 * row + 14, 14 * col: 14 * col + 14] = 1.0
    return maps


def context(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, out: Path, batch_size: int,
            sequential: bool, **settings: Any) -> ExperimentContext:
    config = MapsConfig(**{"n": N, "batch_size": batch_size, "gate_n": N, "gate_steps": 2, "randomization_images": 2,
                           "randomization_samples": 2, "randomization_steps": 2, "gate_sequential": sequential,
                           "progress": False, **settings})
    data = as_image_dataset((x, y))
    return ExperimentContext(config, RunDir(out), model, data, torch.device("cpu"),
                             list(batch_slices(N, batch_size)))


def wrong_map_gate(ctx: ExperimentContext, x: torch.Tensor):  # type: ignore[no-untyped-def]
    maps = opposite_quadrant(x)
    return gate_stage(ctx, "gradcam", 0.2, 0.1, maps=lambda b: maps[ctx.slices[b]])


def test_a_clearly_failing_map_stops_at_the_first_look_and_skips_the_randomization_checks(quadrants, tmp_path):
    model, x, y = quadrants
    ctx = context(model, x, y, tmp_path / "seq", 64, sequential=True)
    gate = wrong_map_gate(ctx, x)
    assert not gate.passed
    assert (gate.images_planned, gate.images_examined) == (N, 50) and gate.stopped.startswith("comparisons failed: ")
    assert gate.skipped == ["randomization", "mprt"] and gate.randomization is None and gate.mprt is None
    assert gate.comparisons["randomization"].skipped and "randomization" not in gate.not_beaten()
    assert "not run: randomization, mprt" in gate.decided() and "after 50 of 160 images" in gate.decided()
    # the failure is named by its not-better faithfulness cells; the specificity rows never fail a gate
    assert gate.status == "failed" and gate.not_beaten() and set(gate.not_beaten()) <= {"location", "scatter"}
    assert gate.reason.startswith("not better than ") and all(
        c.reading == "not better" for c in gate.cells() if f"{gate.comparisons[c.comparison].short} x {c.measure}"
        in gate.reason)
    stage = tmp_path / "seq" / "stages" / "gate" / "gradcam"
    assert sorted(p.name for p in (stage / f"f0.2-n{N}-looks50").iterdir()) == ["batch-00000.pt"]
    assert not (stage / "randomization.pt").exists() and not (stage / "mprt.pt").exists()

    # every check on every image: the same verdict, from all N images and both randomization checks
    full = wrong_map_gate(context(model, x, y, tmp_path / "full", 64, sequential=False), x)
    assert not full.passed and full.stopped == "" and full.skipped == []
    assert full.images_examined == N and full.randomization is not None and full.mprt is not None
    decisive = gate.stopped.removeprefix("comparisons failed: ").split(":")[0]  # the comparison that stopped it...
    assert full.comparisons[decisive].outcome == "not better"  # ...is not better on every image either


def test_until_decided_the_gates_images_are_every_image_of_the_run(quadrants, tmp_path) -> None:
    """gate_n 50 with gate_until_decided plans every image of the run; the looks still stop once decided, and the
    restricted attack's budget is calibrated and recorded."""
    model, x, y = quadrants
    gate = wrong_map_gate(context(model, x, y, tmp_path / "until", 64, sequential=True, gate_n=50,
                                  gate_until_decided=True), x)
    assert gate.images_planned == N and gate.images_examined < N and gate.status == "failed"
    budget = gate.restricted_attack
    assert budget["planned_eps"] == 0.1 and 0 < budget["eps"] <= 0.1 and budget["images"] > 0
    assert set(gate.control) == {"location", "scatter"}


def effects_of(record: dict) -> dict[str, float]:
    """Every comparison's effect means, by comparison and measure."""
    return {f"{name}/{measure}": e["mean"] for name, c in record["comparisons"].items()
            for measure, e in c["effects"].items()}


def test_the_sequential_gate_does_not_depend_on_the_batch_size_or_a_resume(quadrants, tmp_path) -> None:
    model, x, y = quadrants
    records = []
    for batch_size in (64, 48):
        ctx = context(model, x, y, tmp_path / f"b{batch_size}", batch_size, sequential=True)
        records.append(wrong_map_gate(ctx, x).as_dict())
    # the looks are counted in images, not batches: the same images decide at the same look (the effects equal up
    # to the float rounding of a forward pass at another batch size, as every column's)
    first, second = records
    for key in ("passed", "n", "images_examined", "stopped", "skipped"):
        assert first[key] == second[key], key
    assert effects_of(first) == pytest.approx(effects_of(second), abs=1e-5)
    resumed = context(model, x, y, tmp_path / "b64", 64, sequential=True)  # every chunk read back from its file
    assert json.dumps(wrong_map_gate(resumed, x).as_dict(), sort_keys=True) == json.dumps(first, sort_keys=True)


def test_no_attack_call_holds_more_than_a_batch(quadrants, tmp_path, monkeypatch) -> None:
    """The restricted attack stacks every region's copy of a batch (~9 batches) into one run: on a CPU its model
    calls take a batch at a time (:class:`~advspatial.stacked_runs.RowChunks`)."""
    from advspatial.faithfulness import deletion
    from advspatial.stacked_runs import RowChunks

    model, x, y = quadrants
    seen: list[int] = []

    class Recorded(RowChunks):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            out = super().forward(images)
            seen.extend(min(self.rows, len(images) - i) for i in range(0, len(images), self.rows))
            return out

    monkeypatch.setattr(deletion, "RowChunks", Recorded)
    wrong_map_gate(context(model, x, y, tmp_path / "b32", 32, sequential=False), x)
    assert seen and max(seen) == 32 and sum(seen) > 5 * N * 5   # every region of every image, over the steps


def test_the_rois_explainer_gets_its_draws_and_the_panel_its_own(monkeypatch) -> None:
    """run_gates: the RoI's explainer (at every fraction) is checked over ``randomization_draws`` re-initializations,
    the panel's other explainers over ``panel_randomization_draws``."""
    from types import SimpleNamespace

    from advspatial.experiments.measurement import gate as gate_module

    seen: dict[tuple[str, float], int | None] = {}

    def fake_gates(ctx, requests):  # type: ignore[no-untyped-def]
        seen.update({(r.method, r.fraction): r.draws for r in requests})
        return [None] * len(requests)

    monkeypatch.setattr(gate_module, "gate_stages", fake_gates)
    config = MapsConfig(randomization_draws=7, panel_randomization_draws=3, panel_fractions=[0.1, 0.2])
    ctx = SimpleNamespace(config=config, panel=["hirescam", "gradcam"], importance="hirescam",
                          panel_maps=lambda m, b: None, importance_of=lambda b: None)
    gate_module.run_gates(ctx)  # type: ignore[arg-type]
    assert seen[("hirescam", config.fraction)] == 7 and seen[("gradcam", config.fraction)] == 3
    assert seen[("hirescam", 0.1)] in (None, 7)  # the RoI's explainer at another fraction: its default, the RoI's
