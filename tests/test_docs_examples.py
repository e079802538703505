"""Documentation that cannot drift: the code the README and docs/ show is run.

- Every Python block (```` ```python ````) of README.md and docs/**/*.md runs. A block that cannot run here says so
  on the line before it, ``<!-- not run: REASON -->``, and the reason must not be empty.
- Every ``advspatial ...`` command line in a shell block (```` ```bash ````) of README.md and docs/**/*.md is parsed
  by the real command: its command names, option names and option values are checked, the command is not run.

A block runs as pasted into a fresh interpreter: it imports and builds what it uses (a model, a handful of images).
Only a block that states what it assumes in a comment of the form ``# model, other_model: ...; images, labels: ...``
gets those names (:func:`helpers.documentation_namespace`: small untrained models and 12 images). Runs the blocks
start (``advspatial.run``, ``analyze``, ``study``) are made CI-sized: ``quick=True`` and at most a dozen images, with
every other setting as written, so a renamed setting or a wrong value still fails here; a model trained on first use
(``resolve_model``) is trained on 512 images for one epoch.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from helpers import SMALL_RUN, documentation_namespace

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
NOT_RUN = re.compile(r"^<!--\s*not run:(.*?)-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    """A fenced code block of a Markdown file."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None  # the reason given on the line before the fence, or None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path`` in order (fences of four backticks or nested fences are not used here)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    start: int | None = None
    language = ""
    for i, line in enumerate(lines):
        fence = FENCE.match(line)
        if fence is None:
            continue
        if start is None:
            start, language = i, fence.group(1)
            continue
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.match(before.strip())
        blocks.append(Block(path, start + 1, language, "\n".join(lines[start + 1 : i]) + "\n",
                            marker.group(1).strip() if marker else None))
        start = None
    assert start is None, f"{path}: a code fence opened at line {start + 1 if start is not None else 0} is not closed"
    return blocks


def blocks_of(language: str) -> list[Block]:
    return [b for path in DOCUMENTS for b in code_blocks(path) if b.language == language]


PYTHON_BLOCKS = blocks_of("python")
SHELL_BLOCKS = blocks_of("bash")


def command_lines(block: Block) -> list[tuple[int, list[str]]]:
    """(line, arguments after ``advspatial``) of every ``advspatial`` command in a shell block: continuation lines
    joined, comments dropped, ``$VARIABLES`` kept as written (paths are not opened when parsing), and the
    ``-m advspatial -- ARGS`` of a torchrun line taken as the command's own."""
    found: list[tuple[int, list[str]]] = []
    lines = block.code.splitlines()
    i = 0
    while i < len(lines):
        first, text = i, lines[i]
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        words = shlex.split(text, comments=True)
        if words[:1] == ["advspatial"]:
            found.append((block.line + 1 + first, words[1:]))
        elif "-m" in words and words[words.index("-m") + 1 : words.index("-m") + 3] == ["advspatial", "--"]:
            found.append((block.line + 1 + first, words[words.index("-m") + 3 :]))
    return found


COMMANDS = [(f"{b.path.relative_to(ROOT)}:{line}", args) for b in SHELL_BLOCKS for line, args in command_lines(b)]


def test_the_readme_shows_python_and_commands() -> None:
    """The collection itself works: the README has Python blocks and command lines, so the tests below test them."""
    assert any(b.path.name == "README.md" for b in PYTHON_BLOCKS)
    assert any(where.startswith("README.md") for where, _ in COMMANDS)


def test_every_block_that_is_not_run_says_why() -> None:
    unexplained = [b.where for path in DOCUMENTS for b in code_blocks(path) if b.not_run == ""]
    assert not unexplained, f"<!-- not run: --> without a reason at {unexplained}"


def small(call: Callable[..., Any]) -> Callable[..., Any]:
    """``call`` (advspatial.run / analyze / study) at the CI size: the block's settings, ``quick`` and few images."""

    def at_ci_size(*args: Any, **settings: Any) -> Any:
        settings["n"] = min(int(settings.get("n", SMALL_RUN["n"])), SMALL_RUN["n"])
        return call(*args, **{**settings, "quick": True, "progress": False})

    return at_ci_size


#: a comment stating the names a block assumes: ``# model, other_model: your nn.Modules; images, labels: a batch``
ASSUMED = re.compile(r"(?:^#|;)\s*(\w+(?:,\s*\w+)*):")


def assumed_names(code: str) -> set[str]:
    """The names a block says it takes as given, in a comment line of the form of :data:`ASSUMED`."""
    return {name.strip() for line in code.splitlines() if line.lstrip().startswith("#")
            for group in ASSUMED.findall(line.strip()) for name in group.split(",")}


def small_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """``resolve_model`` of a registered architecture trains it on 512 images for one epoch (a CI-sized model)."""
    import dataclasses

    from advspatial import model_cache
    from advspatial.training import TrainConfig

    def ci_sized(**fields: object) -> TrainConfig:
        return dataclasses.replace(TrainConfig(**fields), train_limit=512, epochs=1)  # type: ignore[arg-type]

    monkeypatch.setattr(model_cache, "TrainConfig", ci_sized)


@pytest.mark.parametrize("block", [b for b in PYTHON_BLOCKS if b.not_run is None], ids=lambda b: b.where)
def test_every_python_block_of_the_docs_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from advspatial import api

    monkeypatch.chdir(tmp_path)  # runs/... of the blocks land here
    monkeypatch.setattr(api, "run", small(api.run))  # analyze calls run: it is made small by this too
    monkeypatch.setattr(api, "study", small(api.study))
    small_training(monkeypatch)
    given = {k: v for k, v in documentation_namespace().items() if k in assumed_names(block.code)}
    exec(compile(block.code, block.where, "exec"), {"__name__": "__docs__", **given})  # the documentation's own code


def test_a_block_gets_only_the_names_it_states() -> None:
    assert assumed_names("# model, other_model: your nn.Modules; images, labels: the test images\nx = 1\n") == {
        "model", "other_model", "images", "labels"}
    assert assumed_names("x = model(images)  # model: not a leading comment\n") == set()
    assert assumed_names("# the default CNN: trained on first use\n") == set()


def parse_only(original: Callable[..., Any]) -> Callable[..., Any]:
    """``click.Command.invoke`` that runs groups (to reach their sub-commands) but not the commands themselves."""

    def invoke(command: click.Command, ctx: click.Context) -> Any:
        return original(command, ctx) if isinstance(command, click.Group) else None

    return invoke


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_every_advspatial_line_of_the_docs_parses(where: str, args: list[str], monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    from advspatial.cli import cli

    monkeypatch.setattr(click.Command, "invoke", parse_only(click.Command.invoke))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args, prog_name="advspatial", catch_exceptions=True)
    assert result.exit_code == 0 and result.exception is None, (
        f"{where}: advspatial {shlex.join(args)}\n{result.output}\n{result.exception!r}")
