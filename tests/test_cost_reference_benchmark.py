"""benchmarks/cost_reference.py, the writer of the forecast's reference work: it rewrites only the data below the
module's marker line (the hand-written head, the import of StageWork included, is kept) and writes that data back as
it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advspatial.experiments import cost_references
from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cost_reference.py"
cost_reference = load_script(SCRIPT, "cost_reference")

MODULE = Path(cost_references.__file__)


def test_the_module_is_written_back_byte_for_byte_from_its_own_data() -> None:
    head = cost_reference.kept_head(MODULE)
    assert head.endswith(cost_references.GENERATED_BELOW + "\n")
    assert "import StageWork" in head and head.count("import StageWork") == 1
    assert "class StageWork" not in SCRIPT.read_text()  # one definition: the module's
    fits, roles, runs, steps = cost_reference.kept_data()
    assert set(fits) == set(cost_references.REFERENCES) == set(runs) and set(steps) <= set(fits)
    assert cost_reference.module_text(head, fits, roles, runs, steps) == MODULE.read_text()


def test_new_data_replaces_only_what_is_below_the_marker(tmp_path: Path) -> None:
    target = tmp_path / "cost_references.py"
    target.write_text(MODULE.read_text())
    fits = {"spatial": ({"attack/pgd": [(10, 21, 15, 4, 0.5), (50, 101, 75, 8, 2.5)]}, 0.00123, [(50.0, 4.5)]),
            "propagation": ({"random": [(20, 160, 0, 8, 0), (100, 800, 0, 40, 0)]}, 0.002,
                            [(20.0, 1.0), (100.0, 2.5)])}
    roles = {"spatial": ("gradcam", ("gradcam",))}
    runs = {"spatial": "today, abc1234: n = 10, 50", "propagation": "today, abc1234: n = 20, 100"}
    steps = {"spatial": {"cw_steps": 40, "steps": 20}}
    text = cost_reference.module_text(cost_reference.kept_head(target), fits, roles, runs, steps)
    namespace = run_module(text, target)
    assert namespace["RUNS"] == runs
    assert namespace["REFERENCE_STEPS"] == steps  # an experiment without a steps_by has none
    assert namespace["REFERENCE_ROI"] == {"spatial": "gradcam"}  # an experiment without a panel has no roles
    assert namespace["REFERENCE_PANEL"] == {"spatial": ("gradcam",)}
    assert namespace["NON_MODEL_SECONDS_PER_CALL"] == {"spatial": 0.00123, "propagation": 0.002}
    assert namespace["OUTSIDE_STAGES_SECONDS"] == {"spatial": ((50, 4.5),), "propagation": ((20, 1.0), (100, 2.5))}
    work = namespace["REFERENCES"]["spatial"]["attack/pgd"]
    assert list(namespace["REFERENCES"]) == ["spatial", "propagation"] and work.at(10) == (21.0, 15.0, 4.0, 0.5)
    assert work.at(30) == (61.0, 45.0, 6.0, 1.5)
    assert text.startswith(MODULE.read_text().split(cost_references.GENERATED_BELOW)[0])


def test_fitting_one_experiment_keeps_every_other_experiments_data(tmp_path: Path, monkeypatch) -> None:
    runs = [fake_run(tmp_path / name, n, calls) for name, n, calls in (("b", 50, 32), ("a", 10, 12), ("c", 90, 32))]
    target = tmp_path / "cost_references.py"
    target.write_text(MODULE.read_text())
    monkeypatch.setattr("sys.argv", ["cost_reference.py", f"toy={','.join(map(str, runs))}",
                                     "--source", "today, abc1234", "--output", str(target)])
    cost_reference.main()
    namespace = run_module(target.read_text(), target)
    for name in cost_references.REFERENCES:  # kept as they were
        assert repr(namespace["REFERENCES"][name]) == repr(cost_references.REFERENCES[name])
        assert namespace["RUNS"][name] == cost_references.RUNS[name]
    assert namespace["RUNS"]["toy"] == "today, abc1234: n = 10, 50, 90"
    assert namespace["REFERENCE_STEPS"] == {**cost_references.REFERENCE_STEPS}  # the toy has no steps_by
    assert "toy" not in namespace["REFERENCE_ROI"]  # no panel in its config
    attack = namespace["REFERENCES"]["toy"]["attack/k1"]
    assert attack.points == ((10, 50, 0, 12, 0), (50, 250, 0, 32, 0), (90, 450, 0, 32, 0))  # ascending n
    assert attack.at(30) == (150.0, 0.0, 22.0, 0.0) and attack.at(200) == (1000.0, 0.0, 32.0, 0.0)
    assert namespace["OUTSIDE_STAGES_SECONDS"]["toy"] == ((10, 1.0), (50, 1.0), (90, 1.0))  # each run: 3 CPU-s less 2


def test_runs_of_one_n_are_refused(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path / name, 20, 4) for name in ("a", "b")]
    with pytest.raises(SystemExit, match="two or more runs of different n"):
        cost_reference.fit(runs)


def fake_run(run: Path, n: int, calls: int) -> Path:
    """A finished run's files as the writer reads them: one stage of 5 forward images per image and ``calls`` calls,
    2 CPU-s, no explainer panel in its config."""
    run.mkdir()
    stage = {"forward": 5 * n, "backward": 0, "calls": calls, "backward_calls": 0, "cpu_seconds": 2.0,
             "model_seconds": 1.5, "wall_seconds": 2.0}
    passes = {**stage, "images": n, "stages": {"attack/k1": stage}}
    (run / "metrics.json").write_text(json.dumps({"model_passes": passes, "cpu_seconds": 3.0}))
    (run / "config.yaml").write_text(f"n: {n}\nk: [1]\n")
    return run


def run_module(text: str, target: Path) -> dict:
    """The namespace of the written module ``text`` (it must run)."""
    namespace: dict = {}
    exec(compile(text, str(target), "exec"), namespace)
    return namespace


def test_a_module_without_the_marker_line_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "cost_references.py"
    target.write_text('"""no marker"""\n')
    with pytest.raises(SystemExit, match="no line starting"):
        cost_reference.kept_head(target)


def test_the_non_model_cpu_per_call_leaves_out_the_stages_whose_work_is_priced_apart(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path / name, n, 10) for name, n in (("a", 10), ("b", 50))]
    for run in runs:  # a pair stage: 2 calls, 4 CPU-s outside the model (its uncounted pairs)
        metrics = json.loads((run / "metrics.json").read_text())
        pairs = {"forward": 2, "backward": 0, "calls": 2, "backward_calls": 0, "cpu_seconds": 4.5,
                 "model_seconds": 0.5, "wall_seconds": 4.5}
        metrics["model_passes"]["stages"]["pse/isolated/pgd"] = pairs
        for key in ("calls", "cpu_seconds", "model_seconds"):
            metrics["model_passes"][key] += pairs[key]
        (run / "metrics.json").write_text(json.dumps(metrics))
    assert cost_reference.PRICED_APART["pse"] == ("pse", "stability")
    _, with_pairs, _ = cost_reference.fit(runs)
    fitted, without, _ = cost_reference.fit(runs, apart=("pse",))
    assert with_pairs == pytest.approx((0.5 + 4.0) / 12)  # the pairs' 4 CPU-s read as framework per call
    assert without == pytest.approx(0.5 / 10)  # attack/k1 alone: 2 CPU-s, 1.5 in the model, 10 calls
    assert fitted["pse/isolated"] == [(10, 2, 0, 2, 0), (50, 2, 0, 2, 0)]  # its counted work stays in the reference


def test_a_stage_whose_images_a_setting_caps_is_kept_per_image_in_a_group_of_its_own(tmp_path: Path) -> None:
    runs = []
    for name, n in (("a", 40), ("b", 400)):  # ensemble_n 100: the ensemble ran on 40 and on 100 images
        run = fake_run(tmp_path / name, n, 10)
        metrics = json.loads((run / "metrics.json").read_text())
        ensemble = {"forward": 30 * min(n, 100), "backward": 3 * min(n, 100), "calls": 20, "backward_calls": 2,
                    "cpu_seconds": 1.0, "model_seconds": 0.5, "wall_seconds": 1.0}
        metrics["model_passes"]["stages"]["attack/pgd/ensemble"] = ensemble
        (run / "metrics.json").write_text(json.dumps(metrics))
        (run / "config.yaml").write_text(f"n: {n}\nensemble_n: 100\nbatch_size: 50\n")
        runs.append(run)
    fitted, _, _ = cost_reference.fit(runs, sized_by={r"/ensemble$": "ensemble_n"})
    # images per image of min(n, 100); calls per batch of 50 of them (one batch of 40, two of 100)
    assert fitted["attack/pgd~ensemble_n"] == [(40, 30, 3, 20, 2), (400, 30, 3, 10, 1)]
    assert fitted["attack/k1"] == [(40, 200, 0, 10, 0), (400, 2000, 0, 10, 0)]  # the others as the runs counted
    assert cost_reference.number(0.05) == "0.05" and cost_reference.number(22.2222222) == "22.2222"


def test_the_iterations_an_attack_stage_follows_are_recorded_as_the_reference_runs_had_them(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path / name, n, 10) for name, n in (("a", 10), ("b", 50))]
    for run in runs:
        (run / "config.yaml").write_text((run / "config.yaml").read_text() + "steps: 50\ncw_steps: 40\n")
    steps_by = {r"^attack/": ("steps",), r"^attack/cw": ("cw_steps", "steps")}
    assert cost_reference.step_settings("toy", runs, steps_by) == {"cw_steps": 40, "steps": 50}
    assert cost_reference.step_settings("toy", runs, {}) == {}
    (runs[1] / "config.yaml").write_text("n: 50\nsteps: 20\ncw_steps: 40\n")
    with pytest.raises(SystemExit, match=r"toy: the reference runs differ in steps \(\[20, 50\]\)"):
        cost_reference.step_settings("toy", runs, steps_by)


def test_a_group_priced_apart_is_named_whole_or_by_the_first_parts_of_its_name() -> None:
    assert cost_reference.PRICED_APART["spatial"] == cost_reference.PRICED_APART["maps"] == ("attack/onepixel",)
    apart = cost_reference.priced_apart
    assert apart("attack/onepixel", ("attack/onepixel",)) and apart("attack/onepixel~onepixel_n", ("attack/onepixel",))
    assert not apart("attack/onepixel-l2", ("attack/onepixel",)) and not apart("attack/pgd", ("attack/onepixel",))
    assert apart("pse/isolated", ("pse", "stability")) and not apart("pse-x/isolated", ("pse",))
