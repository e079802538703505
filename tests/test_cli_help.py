"""The commands' help reads as text: ``--quick`` lists what it sets as options, and a default stated in words is not
followed by the raw number it stands for."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from advspatial.cli import cli
from advspatial.experiments import experiments


def _help(*command: str) -> str:
    result = CliRunner().invoke(cli, [*command, "--help"], prog_name="advspatial", terminal_width=10_000)
    assert result.exit_code == 0, result.output
    return result.output


def _option_help(text: str, option: str) -> str:
    """The help of ``option`` (one line: the terminal is wide)."""
    return next(line for line in text.splitlines() if re.match(rf"\s*{re.escape(option)}\b", line))


@pytest.mark.parametrize("name", sorted(n for n in experiments() if n != "analyze"))
def test_quick_lists_what_it_sets_as_options_not_a_python_dict(name: str) -> None:
    quick = experiments()[name].config_cls.QUICK
    line = _option_help(_help("run", name), "--quick")
    assert "{" not in line and "'" not in line, line
    for setting, value in quick.items():
        shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        assert f"--{setting.replace('_', '-')} {shown}" in line, (setting, line)


def test_analyze_n_states_its_default_in_words_only() -> None:
    line = _option_help(_help("analyze"), "--n")
    assert "(default: all)" in line and "1000000" not in line and "[default:" not in line, line


def test_a_default_given_as_a_value_is_still_shown() -> None:
    assert "[default: 500]" in _option_help(_help("run", "spatial"), "--n")


def test_the_command_line_starts_without_the_libraries_only_some_commands_use() -> None:
    """Every command pays for what the command line imports before it parses a word: scipy.stats, Captum (which
    imports pyplot) and matplotlib cost about a second and a half on a 2-core machine, and are imported by the
    functions that use them. Checked in a fresh interpreter, where nothing else has imported them."""
    import subprocess
    import sys

    probe = ("import sys; import advspatial.cli.main, advspatial.experiments, advspatial.api; "
             "print(' '.join(m for m in ('scipy.stats', 'scipy.ndimage', 'captum', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"imported at start: {done.stdout.strip()}"
