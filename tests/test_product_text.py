"""The product speaks of itself, never of how it was built.

The code, tests, documentation, examples and benchmarks are read by users, who cannot know what a numbered work
period, an issue number of this project, a review item's label or "the closing notes" refer to. The rule, checked
over every text file under ``src/``, ``tests/``, ``docs/``, ``examples/``, ``benchmarks/`` and in ``README.md``,
``CONTRIBUTING.md`` and ``pyproject.toml``:

- no numbered work period (a session or work period followed by its number, "this session's code", "the
  session");
- no issue number of this project ("issue" followed by a number); another project's issue is cited with that
  project's name and ``#N`` (``pytorch-grad-cam #513``), which the rule allows;
- no review item label (a P0/P1/P2 label, "science review", "the reviewer's figures") and no audit item label
  ("audit W2", "(T4)");
- no "closing notes".

A benchmark figure is labelled by the date and the commit that recorded it (benchmarks/README.md); a test's name
and docstring say the behaviour it checks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ["src", "tests", "docs", "examples", "benchmarks", "README.md", "CONTRIBUTING.md", "pyproject.toml"]
TEXT_SUFFIXES = {".py", ".md", ".toml", ".json", ".sh", ".yaml", ".yml", ".txt", ".cfg", ".tsv", ".csv"}
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}

HISTORY = re.compile(
    r"""
      \bsessions?[\s-]*\d+                                   # a numbered work period
    | \b(?:this|that|each|next|previous|earlier|later)\s+session\b
    | \bthe\s+session\b
    | \bwork[\s-]+periods?\s+\d+
    | \bissues?[\s-]*\#?\d+                                  # this project's issue numbers
    | \breview\s+P\d                                         # review item labels
    | \bP[0-3]-\d+\b
    | \bscience\s+review
    | \b(?:the|this|last|that)\s+review(?:er)?(?:'s|s)?\b
    | \bclosing\s+notes?\b
    | \baudit\s+[A-Z]\d+                                     # an audit item's label ("audit W2", "Audit T4")
    | (?-i:\([TW]\d{1,2}(?:,\s*[TW]?\d{1,2})*\))              # a bare audit label in brackets ("(T4)", "(W6, T7)")
    """,
    re.IGNORECASE | re.VERBOSE,
)


def checked_files() -> list[Path]:
    """Every text file the rule covers (this file excepted: it holds the examples the pattern must catch)."""
    files: list[Path] = []
    for name in CHECKED:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in sorted(path.rglob("*"))
                      if p.is_file() and p.suffix in TEXT_SUFFIXES and not SKIPPED_DIRS & set(p.parts)
                      and not any(part.endswith(".egg-info") for part in p.parts)]
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def history_words(text: str) -> list[tuple[int, str]]:
    """(line number, matched words) of every history word in ``text``."""
    return [(number, match.group(0)) for number, line in enumerate(text.splitlines(), 1)
            for match in HISTORY.finditer(line)]


@pytest.mark.parametrize("text", [
    "measured in session 21", "Session 23's last code", "(session-6 run directory)", "sessions 18 and 19",
    "this session's changes", "the session's starting code", "not re-run within the session", "work period 17",
    "renamed in issue 36", "(issue 19, 10)", "Issue 38, item 4", "the issue-16 controls", "science review P0-1/P0-2",
    "review P2-11", "beside the reviewer's figures", "earlier figures are in the closing notes",
    "the checksum (audit W2)", "Audit T4 (experiments/context.py): a model", "# audit T8: OverflowError",
    "must stop every rank (T4)", "gave tracebacks (W6, T7).",
])
def test_the_pattern_catches_each_kind_of_history_word(text: str) -> None:
    assert history_words(text), text


@pytest.mark.parametrize("text", [
    "pytorch-grad-cam #513 reports it", '@pytest.fixture(scope="session")', "start_new_session=True",
    "One torch thread for the whole test run", "an issue with the data", "A reviewer expects both before trusting",
    "p-value 0.05", "relu#0", "Holm across the primary family (P1 and P2 are endpoints)",
    "sparse (L0) examples", "the windows W1 and W2", "an audit of the inputs", "the constant (C1)",
    "the weights (w1)",
])
def test_the_pattern_leaves_ordinary_words_alone(text: str) -> None:
    assert not history_words(text), text


def test_product_text_names_no_work_history() -> None:
    files = checked_files()
    assert any(p.name == "README.md" for p in files) and any(p.suffix == ".py" for p in files)
    found = [f"{p.relative_to(ROOT)}:{line}: {words!r}"
             for p in files for line, words in history_words(p.read_text(encoding="utf-8", errors="replace"))]
    assert not found, "words of the project's history in the product (see this module's docstring):\n" + "\n".join(
        found)
