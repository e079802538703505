"""Fuzzing small inputs that once cost a machine or a traceback: YAML with aliases (a run's ``--config``, a
study's ``models:``, ``--param``: refused in one short line, fast, whatever the aliases build), ``advspatial plan
--power`` (any text: a plan or one line naming the option), and the scripts and examples on directories that are
not what they expect (scripts/split_imagefolder.py, examples/read_a_run.py: one line, exit 2). Budget and
profiles: tests/fuzzing.py."""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
import tempfile
import time
from pathlib import Path

from fuzzing import assert_cli_one_line, fuzz_settings
from hypothesis import example, given
from hypothesis import strategies as st

from advspatial.cli import main

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> tuple[int, str]:
    """(exit status, stderr) of the advspatial command run in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return code, err.getvalue()


@st.composite
def aliased_yaml(draw: st.DrawFn) -> str:
    """A flow value that uses aliases: anchors of lists or mappings, each level repeating the previous ones."""
    depth, width = draw(st.integers(1, 7)), draw(st.integers(1, 9))
    mapping = draw(st.booleans())
    levels = ["&a0 " + ("{k: v}" if mapping else "[x]")]
    for i in range(1, depth):
        refs = [f"*a{draw(st.integers(0, i - 1))}" for _ in range(width)]
        levels.append(f"&a{i} " + ("{" + ", ".join(f"k{j}: {r}" for j, r in enumerate(refs)) + "}" if mapping
                                   else "[" + ", ".join(refs) + "]"))
    return "[" + ", ".join(levels) + "]"


SURFACES = {  # where a YAML value is read: (the file's or option's text, the command)
    "run --config": lambda text, tmp: ["run", "maps", "--config", write(tmp, f"attacks: {text}\n"), "--out",
                                       f"{tmp}/run"],
    "a study's models:": lambda text, tmp: ["study", "--config", write(tmp, f"models: {text}\n"), "--out",
                                            f"{tmp}/study"],
    "a study's settings": lambda text, tmp: ["study", "--config", write(tmp, f"models: [a, b]\nfills: {text}\n"),
                                             "--out", f"{tmp}/study"],
    "--param": lambda text, tmp: ["attack", "--model", "smallcnn", "--param", f"eps={text}"],
}


def write(tmp: str, text: str) -> str:
    path = Path(tmp, "config.yaml")
    path.write_text(text)
    return str(path)


@fuzz_settings(25)
@given(aliased_yaml(), st.sampled_from(sorted(SURFACES)))
@example("[&a0 [x, x, x, x, x, x, x, x, x], &a1 [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0], "
         "&a2 [*a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1], &a3 [*a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2], "
         "&a4 [*a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3], &a5 [*a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4]]",
         "a study's models:")  # printed 254 MB as its "one line" at two levels more
def test_yaml_with_aliases_is_refused_fast_in_one_short_line(text: str, surface: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.process_time()
        code, err = cli(*SURFACES[surface](text, tmp))
        spent = time.process_time() - start
    if "*a" not in text:  # a single anchor without an alias is plain YAML
        return
    assert_cli_one_line(code, err)
    assert "alias" in err and len(err.encode()) < 1024, err[:300]
    assert spent < 2.0, f"{spent:.1f} s of CPU for {len(text)} bytes"


@fuzz_settings(25)
@given(st.one_of(st.text(max_size=12), st.floats().map(repr), st.sampled_from(["nan", "-nan", "inf", "1e-400",
                                                                                 "0.5", "1", "0", "1e308"])))
@example("nan")  # blamed metrics.json for a bad option
def test_plan_power_is_a_plan_or_one_line_naming_the_option(power: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        code, err = cli("plan", tmp, "--power", power)
    if "Error: Invalid value for '--power'" in err:  # click's own refusal of what is not a number in (0, 1)
        assert code == 2 and "Traceback" not in err, err
        return
    assert_cli_one_line(code, err)  # no run there: every valid power still ends in one line
    try:
        value = float(power)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        assert "power" in err and "metrics.json" not in err, err


def run_script(path: Path, *args: str) -> tuple[int, str]:
    """(exit status, stderr) of ``python PATH ARGS`` in this process."""
    err = io.StringIO()
    saved = sys.argv
    sys.argv = [str(path), *args]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(path), run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        sys.argv = saved
    return code, err.getvalue()


_json = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                     lambda inner: st.one_of(st.lists(inner, max_size=3),
                                             st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=8)
_content = st.one_of(_json.map(json.dumps), st.text(max_size=40), st.just("[" * 50_000))
_run_files = st.dictionaries(st.sampled_from(["run.json", "metrics.json", "per_image.csv", "config.yaml",
                                              "study.yaml"]), _content, max_size=5)


@fuzz_settings(25)
@given(_run_files, st.sampled_from(["dir", "missing", "file"]))
@example({"run.json": '{"experiment": "maps"}', "metrics.json": "[" * 50_000}, "dir")  # a RecursionError
@example({"study.yaml": "models: [a, b]"}, "dir")  # a study read as a run
def test_read_a_run_on_anything_but_a_finished_run_is_one_line(files: dict[str, str], kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp, "run")
        if kind == "dir":
            target.mkdir()
            for name, text in files.items():
                (target / name).write_text(text)
        elif kind == "file":
            target.write_text("not a folder")
        code, err = run_script(ROOT / "examples" / "read_a_run.py", str(target), "--out", f"{tmp}/plot.png")
        assert not Path(tmp, "plot.png").exists()
    assert code == 2, err
    assert err.startswith("read_a_run.py: error: ") and len(err.strip().splitlines()) == 1, err


_place = st.sampled_from(["missing", "file", "empty folder", "class folders", "flat files"])


@fuzz_settings(20)
@given(_place, _place, st.integers(-2, 6))
def test_split_imagefolder_splits_or_ends_in_one_line(source_kind: str, target_kind: str, every: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp, "source"), Path(tmp, "target")
        for place, kind in ((source, source_kind), (target, target_kind)):
            if kind == "file":
                place.write_text("x")
            elif kind != "missing":
                place.mkdir()
            if kind == "class folders":
                (place / "cat").mkdir()
                (place / "cat" / "a.png").write_bytes(b"")
            elif kind == "flat files":
                (place / "a.png").write_bytes(b"")
        code, err = run_script(ROOT / "scripts" / "split_imagefolder.py", str(source), str(target), "--every",
                               str(every))
        ok = source_kind == "class folders" and target_kind in ("missing", "empty folder") and every >= 2
        assert code == (0 if ok else 2), err
        if not ok:
            assert err.startswith("split_imagefolder.py: error: ") and len(err.strip().splitlines()) == 1, err
        else:
            assert (target / "test" / "cat" / "a.png").is_symlink()
