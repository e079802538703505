"""``advspatial plan``: a bad option is blamed on the option, not on the run, and a smoke test's projections are
marked as a smoke test's."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SMALL_RUN, documentation_namespace, run_cli


@pytest.mark.parametrize("power", ["nan", "NaN", "inf", "0", "1", "-0.5", "abc"])
def test_a_bad_power_names_the_option(power: str, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "plan", str(tmp_path), "--power", power)
    assert code == 2, err
    assert "--power" in err and "metrics.json" not in err, err


def test_a_smoke_test_s_projections_are_marked(tmp_path: Path, capsys) -> None:
    import advspatial

    names = documentation_namespace()
    run = advspatial.run("maps", model=names["model"], data=(names["images"], names["labels"]), attacks=["fgsm"],
                         n=SMALL_RUN["n"], quick=True, progress=False, out=str(tmp_path / "run"))
    code, printed, err = run_cli(capsys, "plan", str(run.rundir))
    assert code == 0, err
    lines = printed.strip().splitlines()
    rows = [line for line in lines if line.startswith("  ")]
    assert rows and all(line.endswith("(smoke)") for line in rows), printed
    assert lines[-1].startswith("smoke test: these settings decide nothing")
