"""``source`` is a free-text label: written as given where the examples are described, a sanitized name elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import self_labelled_tiny_cnn

import advspatial
from advspatial.experiments.analyze import AnalyzeConfig


@pytest.mark.parametrize(("label", "name"), [("PGD 8/255", "PGD-8-255"), ("torchattacks PGD eps=8/255, 10 steps",
                                                                        "torchattacks-PGD-eps=8-255-10-steps"),
                                             ("$x^$", "x"), ("C:\\art\\pgd", "C-art-pgd"), ("fgsm", "fgsm")])
def test_the_attack_name_keeps_letters_digits_and_a_few_marks(label: str, name: str) -> None:
    assert AnalyzeConfig(source=label).attack_name == name


def test_a_free_text_source_is_analysed_and_shown_as_given(tmp_path: Path) -> None:
    model, x, y = self_labelled_tiny_cnn(8)
    adv = (x + 0.1 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))).clamp(0, 1)
    out = tmp_path / "run"
    result = advspatial.analyze(model, x, adv, y, source="PGD 8/255", quick=True, progress=False, out=str(out))
    assert result.metrics["examples"]["source"] == "PGD 8/255"
    assert {row["attack"] for row in result.rows} == {"PGD-8-255"}
    assert result.summary.splitlines()[1].startswith("PGD 8/255: 8 example pairs"), result.summary
    assert "<td>PGD 8/255</td>" in (out / "report.html").read_text(encoding="utf-8")
    written = [p.relative_to(out) for p in out.rglob("*")]
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))
    assert not [p for p in written if "255" in p.name and "PGD-8-255" not in p.name], written
