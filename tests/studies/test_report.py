"""The study's summary and report on synthetic records: pooled lines with their HKSJ numbers, and the one line of a
quick study that pooled nothing."""

from __future__ import annotations

from pathlib import Path

from study_records import model

from advspatial.experiments.maps.config import MapsConfig
from advspatial.studies.findings import study_findings
from advspatial.studies.report import POOLING_RULE, render, smoke_pools_nothing, summary

CONFIG = MapsConfig(attacks=["pgd"], permutations=50)


def test_a_full_study_prints_each_pooled_line_with_its_hksj_p_and_no_smoke_line(tmp_path: Path) -> None:
    findings = study_findings([model(x, 0.1, i) for i, x in enumerate("abc")], {}, CONFIG)
    lines = summary(findings, quick=True).splitlines()  # pooled: even a quick study prints its pooled lines
    assert smoke_pools_nothing(findings, quick=True) == ""
    pooled = [line for line in lines if "pooled Δ" in line]
    assert len(pooled) == 2 and all("over 3 models (HKSJ, p " in line and "I² =" in line for line in pooled)
    _, sections = render(findings, tmp_path)
    assert POOLING_RULE in sections[0].paragraphs


def test_a_quick_study_that_pools_nothing_says_why_in_one_line() -> None:
    records = [model("a", n=20), model("b", n=24, roi_status="undecided")]
    findings = study_findings(records, {}, CONFIG)
    line = smoke_pools_nothing(findings, quick=True)
    assert line == ("nothing pooled: a quick study is a smoke test (2 models measured; at most 24 images kept per "
                    "model and attack; gate undecided: RoI faithfulness), and a pooled verdict needs 3 models whose "
                    "gates passed on at least 30 images each; run it without --quick")
    lines = summary(findings, quick=True).splitlines()
    assert lines[1] == f"  {line}" and not any("not pooled" in x for x in lines)
    assert smoke_pools_nothing(findings, quick=False) == ""  # a full study says it per endpoint instead
    full = summary(findings, quick=False).splitlines()
    assert sum("not pooled: no model passed its gates" in x for x in full) == 2
