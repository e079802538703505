"""benchmarks/call_path.py, the call path between the package's modules: its counts on call sequences worked out
by hand, and its tracer on a small package of three modules."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "call_path.py"
call_path = load_script(SCRIPT, "call_path")


def counted(events: list[str]) -> dict:
    """The report of a call sequence: 'X' calls a function of module X, '<' returns from the innermost one."""
    path = call_path.CallPath()
    stack: list[str] = []
    for event in events:
        if event == "<":
            path.ret(stack.pop())
        else:
            stack.append(event)
            path.call(event)
    return path.report()


def test_a_module_called_twice_from_another_is_returned_to_twice() -> None:
    # A calls B, B returns, A calls C, C returns: the current module goes A -> B -> A -> C -> A
    report = counted(["A", "B", "<", "C", "<", "<"])
    assert report["calls"] == 3 and report["modules_entered"] == 3
    assert report["cross_module_calls"] == 2 and report["module_pairs_crossed"] == 2
    assert report["returns_to_a_module_left"] == 2
    assert report["top_return_pairs"] == {"A <-> B": 1, "A <-> C": 1}
    assert report["frames_open_at_end"] == 0 and report["unmatched_returns"] == 0


def test_a_call_back_into_a_module_left_counts_like_a_return_to_it() -> None:
    # A calls B, B calls A (and A itself twice), back to B, then to A: A -> B -> A -> B -> A
    report = counted(["A", "B", "A", "A", "<", "<", "<", "<"])
    assert report["calls"] == 4 and report["modules_entered"] == 2
    assert report["cross_module_calls"] == 2  # A -> B and B -> A; A calling itself is no crossing
    assert report["module_pairs_crossed"] == 2 and report["top_crossings"] == {"A -> B": 1, "B -> A": 1}
    assert report["returns_to_a_module_left"] == 3
    assert report["top_return_pairs"] == {"A <-> B": 3}


def test_a_deep_call_is_one_crossing_each_way_and_only_the_way_back_returns() -> None:
    # A -> B -> C and back: C and B are entered once each, then B and A are returned to
    report = counted(["A", "B", "C", "<", "<", "<"])
    assert report["cross_module_calls"] == 2
    assert report["top_return_pairs"] == {"B <-> C": 1, "A <-> B": 1}


def test_a_module_body_run_on_import_and_what_it_calls_are_not_counted() -> None:
    report = counted(["A", call_path.IMPORT, "B", "A", "<", "<", "<", "C", "<", "<"])
    assert report["calls"] == 2 and report["cross_module_calls"] == 1
    assert report["top_return_pairs"] == {"A <-> C": 1}


def test_a_file_maps_to_its_module_and_a_package_init_to_the_package(tmp_path: Path) -> None:
    names = call_path.ModuleNames(tmp_path / "advspatial")
    root = str(tmp_path / "advspatial")
    assert names.module_of_file(f"{root}/defence/adaptive.py") == "defence.adaptive"
    assert names.module_of_file(f"{root}/defence/__init__.py") == "defence"
    assert names.module_of_file(f"{root}/__init__.py") == "advspatial"
    assert names.module_of_file(f"{root}-other/x.py") is None
    assert names.module_of_file("<string>") is None


def test_the_tracer_counts_a_real_call_path_and_ignores_code_outside(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(textwrap.dedent("""
        from . import b

        def run():
            total = sum(b.twice(i) for i in range(3))  # a generator of a, resumed by sum(), a C function
            return b.later() + total

        def back():
            return 1
    """))
    (package / "b.py").write_text(textwrap.dedent("""
        def twice(x):
            return 2 * x

        def later():
            from . import c  # imported during the run: its body is not counted
            from . import a
            return a.back() + c.one()
    """))
    (package / "c.py").write_text("ONE = 1\n\ndef one():\n    return ONE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    a = importlib.import_module("pkg.a")
    path, seconds, result = call_path.traced(a.run, call_path.ModuleNames(package, "pkg"))
    assert result == 8 and seconds >= 0
    report = path.report()
    # a.run; the generator (4 resumes); b.twice x3; b.later; a.back; c.one
    assert report["calls_per_module"] == {"a": 6, "b": 4, "c": 1}
    # a -> b (twice x3, later), b -> a (back), b -> c (one)
    assert report["cross_module_calls"] == 6 and report["module_pairs_crossed"] == 3
    # a <-> b: back to a after each twice (3), into b again for the 2nd and 3rd twice and for later (3), into a
    # for back (1), back to b from back (1), back to a at the end (1); b <-> c: back to b from c.one
    assert report["returns_to_a_module_left"] == 10
    assert report["top_return_pairs"] == {"a <-> b": 9, "b <-> c": 1}
    assert report["frames_open_at_end"] == 0 and report["unmatched_returns"] == 0


def test_back_and_forth_counts_distinct_function_edges_between_modules_called_both_ways() -> None:
    path = call_path.CallPath()
    # A.run calls B.step twice and B.other once; B.step calls A.helper; A.run calls C.leaf (C never calls back)
    path.call("A", "run")
    path.call("B", "step")
    path.call("A", "helper")
    path.ret("A")
    path.ret("B")
    path.call("B", "step")
    path.ret("B")
    path.call("B", "other")
    path.ret("B")
    path.call("C", "leaf")
    path.ret("C")
    report = path.report()
    # edges: A.run->B.step, B.step->A.helper, A.run->B.other, A.run->C.leaf (the repeated call counts once)
    assert report["cross_module_function_edges"] == 4
    assert report["back_and_forth_pairs"] == 1 and report["back_and_forth_edges"] == 3
    assert report["top_back_and_forth"] == {"A <-> B": 3}
