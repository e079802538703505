"""benchmarks/cost_reference.py, the writer of the forecast's reference work: it rewrites only the data below the
module's marker line (the hand-written head, StageWork included, is kept) and writes that data back as it reads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from advspatial.experiments import cost_references

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cost_reference.py"
spec = importlib.util.spec_from_file_location("cost_reference", SCRIPT)
assert spec is not None and spec.loader is not None
cost_reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cost_reference)

MODULE = Path(cost_references.__file__)


def module_fits() -> dict:
    """The module's own data in the writer's input form."""
    return {name: ({group: {key: getattr(work, key) for key in cost_reference.FIELDS}
                    for group, work in groups.items()},
                   cost_references.NON_MODEL_SECONDS_PER_CALL[name], cost_references.OUTSIDE_STAGES_SECONDS[name])
            for name, groups in cost_references.REFERENCES.items()}


def test_the_module_is_written_back_byte_for_byte_from_its_own_data() -> None:
    head = cost_reference.kept_head(MODULE)
    assert head.endswith(cost_references.GENERATED_BELOW + "\n")
    assert "class StageWork" in head and head.count("class StageWork") == 1
    assert "class StageWork" not in SCRIPT.read_text()  # one definition: the module's
    roles = {name: (cost_references.REFERENCE_ROI[name], cost_references.REFERENCE_PANEL[name])
             for name in cost_references.REFERENCES}
    assert cost_reference.module_text(head, module_fits(), roles, cost_references.RUNS) == MODULE.read_text()


def test_new_data_replaces_only_what_is_below_the_marker(tmp_path: Path) -> None:
    target = tmp_path / "cost_references.py"
    target.write_text(MODULE.read_text())
    fits = {"spatial": ({"attack/pgd": {"forward": (1.0, 2.0), "backward": (0.0, 1.5), "calls": (3.0, 0.1),
                                        "backward_calls": (0.0, 0.05)}}, 0.00123, 4.5)}
    roles = {"spatial": ("gradcam", ("gradcam",))}
    text = cost_reference.module_text(cost_reference.kept_head(target), fits, roles, "today, abc1234")
    namespace: dict = {}
    exec(compile(text, str(target), "exec"), namespace)  # the written module runs and holds the new data only
    assert namespace["RUNS"] == "today, abc1234"
    assert namespace["REFERENCE_ROI"] == {"spatial": "gradcam"}
    assert namespace["REFERENCE_PANEL"] == {"spatial": ("gradcam",)}
    assert namespace["NON_MODEL_SECONDS_PER_CALL"] == {"spatial": 0.00123}
    assert namespace["OUTSIDE_STAGES_SECONDS"] == {"spatial": 4.5}
    work = namespace["REFERENCES"]["spatial"]["attack/pgd"]
    assert list(namespace["REFERENCES"]) == ["spatial"] and work.at(10) == (21.0, 15.0, 4.0, 0.5)
    assert text.startswith(MODULE.read_text().split(cost_references.GENERATED_BELOW)[0])


def test_a_module_without_the_marker_line_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "cost_references.py"
    target.write_text('"""no marker"""\n')
    with pytest.raises(SystemExit, match="no line starting"):
        cost_reference.kept_head(target)
