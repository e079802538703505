"""What more data would decide (report/planning.py) and the answer a report opens with (report/answer.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from advspatial.faithfulness.record import Comparison, GateResult
from advspatial.report.answer import answer_lines, claim_sentence
from advspatial.report.planning import findings_parts, plan_rows, plan_section
from advspatial.statistics.claims import Claim
from advspatial.statistics.estimates import Estimate
from advspatial.statistics.outcomes import Decision


def decision(rule: str, outcome: str, mean: float, sd: float = 1.0, n: int = 100, margin: float = 0.1) -> Decision:
    half = 1.96 * sd / math.sqrt(n)
    return Decision(rule, outcome, mean, mean - half, mean + half, mean - half * 0.84, mean + half * 0.84, sd, n,
                    margin)


def gate() -> GateResult:
    location = Comparison("location", "location (its shape at a random place)", {}, False, True,
                          decisions={"deletion:blur": decision("faithfulness", "undecided", 0.1)})
    scatter = Comparison("scatter", "scatter (as many random pixels)", {}, False, True,
                         decisions={"deletion:blur": decision("faithfulness", "undecided", 0.0, margin=0.0)})
    edges = Comparison("edges", "image edges", {}, False, True, role="specificity",
                       decisions={"deletion:blur": decision("specificity", "undecided", 0.05)})
    control_scatter = Comparison("scatter", "scatter", {}, False, True,
                                 decisions={"deletion:blur": decision("faithfulness", "undecided", 0.0)})
    return GateResult(False, "undecided: ...", status="undecided", method="gradcam",
                      comparisons={"location": location, "scatter": scatter, "edges": edges},
                      control={"scatter": control_scatter})


def claim(verdict: str, primary: bool, mean: float = 0.004) -> Claim:
    return Claim("the attack acts where the model looks", "pgd", "energy_in_roi", "same-class", 0.31, 0.30,
                 Estimate(mean, mean - 0.006, mean + 0.006, 120), 1.01, 0.2, primary=primary, verdict=verdict,
                 sesoi=0.002)


def test_undecided_cells_and_claims_are_listed_faithfulness_first_and_cannot_judge_cells_are_not() -> None:
    g = gate()
    assert [c.reading for c in g.cells()] == ["undecided", "cannot judge"]
    rows = plan_rows({"gradcam": g}, [claim("supported", True), claim("not supported", False),
                                      claim("not supported", True)])
    assert [r.kind for r in rows] == ["faithfulness", "primary claim", "specificity", "claim"]
    assert rows[0].subject == "gate gradcam: location x deletion:blur" and rows[0].leans == "beats"
    # a specificity cell is a finding beside the gate, not a gate row: `advspatial plan`, which has no kind column,
    # says so in its label
    assert rows[2].subject.startswith("specificity gradcam: ")
    assert rows[0].images == math.ceil(((1.959964 + 0.841621) / 0.1) ** 2)
    assert all(r.images > 0 for r in rows)


def test_a_claim_whose_effect_is_decided_on_its_own_images_is_not_listed() -> None:
    # CI far below 0 on 120 images: the projection would ask for fewer images than the claim has, so its
    # "not supported" comes from its test (e.g. an intersection-union's largest p), not from too few images
    decided = claim("not supported", True, mean=-0.05)
    assert plan_rows({}, [decided]) == []
    assert len(plan_rows({}, [claim("not supported", True)])) == 1


def test_a_comparison_no_image_entered_reads_as_no_estimate_not_nan() -> None:
    """A same-class comparison on images without a same-class partner has n = 0: no effect to print or project."""
    nan = math.nan
    empty = Claim("the attack acts where the model looks", "pgd", "energy_in_roi", "same-class", nan, nan,
                  Estimate(nan, nan, nan, 0), nan, nan, primary=False, verdict="insufficient data", sesoi=0.002)
    (row,) = plan_rows({}, [empty])
    assert row.effect == "no estimate" and row.n == 0
    assert row.need() == "images that enter it (none did)" and "nan" not in " ".join(map(str, row.cells()))
    (measured,) = plan_rows({}, [claim("not supported", True)])
    assert measured.need() == f"{int(measured.images):,}" and measured.effect == "+0.004 [-0.002, +0.01]"


def test_more_power_needs_more_images() -> None:
    low = plan_rows({"g": gate()}, [], power=0.5)
    high = plan_rows({"g": gate()}, [], power=0.95)
    assert all(h.images > lo.images for h, lo in zip(high, low, strict=True))


@dataclass
class Findings:
    faithfulness: dict[str, GateResult]
    claims: list[Claim]
    panel: list[Claim] = field(default_factory=list)


def test_findings_parts_finds_every_gate_and_claim_once() -> None:
    g = gate()
    c = claim("not supported", True)
    gates, claims = findings_parts(Findings({"gradcam": g, "gradcam @ top 10%": g}, [c], [c]))
    assert list(gates) == ["gradcam"] and claims == [c]


def test_the_section_says_when_everything_is_decided() -> None:
    empty = plan_section(Findings({}, [claim("supported", True)]))
    assert empty.tables == [] and "is decided" in empty.paragraphs[0]
    full = plan_section(Findings({"gradcam": gate()}, [claim("not supported", True)]))
    assert len(full.tables) == 1 and len(full.tables[0].rows) == 3
    assert full.paragraphs[0].startswith("3 comparisons of this run are undecided: their CI holds both readings.")
    one = plan_section(Findings({}, [claim("not supported", True)]))
    assert one.paragraphs[0].startswith("1 comparison of this run is undecided: its CI holds both readings.")
    # a run without a gate or a claim (the baseline) has nothing to decide, not "everything decided"
    nothing = plan_section(Findings({}, []))
    assert nothing.tables == [] and nothing.paragraphs == [
        "This run makes no gate comparison and no claim: there is nothing for more images to decide."]


@dataclass
class WithRoi:
    roi: object
    faithfulness: dict[str, GateResult]
    claims: list[Claim]


@dataclass
class Roi:
    method: str
    status: str
    interpretation: str
    caveat: str = ""


def test_the_answer_names_the_rois_status_each_claim_and_what_is_undecided() -> None:
    g = gate()
    roi = Roi("gradcam", "undecided", "interpretable; RoI faithfulness undecided (about 900 correct images would "
                                      "decide)", "RoI faithfulness undecided (about 900 correct images would decide)")
    lines = answer_lines(WithRoi(roi, {"gradcam": g}, [claim("not supported", True)]))
    assert lines[0].startswith("The RoI (gradcam) is undecided by its gate (about 900 correct images would decide). "
                               "The verdicts below stand")
    assert any(line.startswith("pgd: the attack acts where the model looks — NOT SUPPORTED") for line in lines)
    assert "undecided: about 552 images would decide it (beats)" in claim_sentence(claim("not supported", True))
    assert lines[-1].startswith("Undecided: 1 gate cell, 1 primary claim, 1 specificity cell;")
    assert lines[-1].endswith("the last section gives the images each would need.")
    assert answer_lines(Findings({}, [])) == []


def test_the_claims_summary_names_one_claim_once_and_several_claims_each_by_its_own() -> None:
    from dataclasses import replace

    from advspatial.report.answer import claims_summary

    same = [replace(claim("supported", True), subject=s) for s in ("fgsm", "pgd", "cw-l2")]
    assert claims_summary(same).startswith("Primary claims (the attack acts where the model looks): 3 supported "
                                           "(fgsm; pgd; cw-l2)")
    other = replace(claim("negligible", True), claim="the SSIM-ball attack fools images at a higher SSIM than L-inf "
                    "PGD", subject="ssim-ball vs pgd", null="pgd")
    mixed = claims_summary([*same[:2], other])
    assert mixed.startswith("Primary claims: 2 supported (fgsm: the attack acts where the model looks, against the "
                            "same-class null; pgd: the attack acts where the model looks, against the same-class "
                            "null); 1 negligible (ssim-ball vs pgd: the SSIM-ball attack fools images at a higher SSIM "
                            "than L-inf PGD, against the pgd null)")
    assert "(the attack acts where the model looks):" not in mixed  # no claim named for members it is not theirs


def test_the_claims_summary_says_which_gate_made_a_claim_not_interpretable() -> None:
    from dataclasses import replace

    from advspatial.report.answer import claims_summary

    roi = [replace(claim("not interpretable", True), subject=s, gates={"RoI faithfulness": False})
           for s in ("ssim-ball", "pgd")]
    shared = claims_summary(roi)
    assert shared.startswith("Primary claims (the attack acts where the model looks): 2 not interpretable, the RoI "
                             "faithfulness gate failed (ssim-ball; pgd)")
    curve = replace(claim("not interpretable", True), claim="the SSIM-ball attack fools images at a higher SSIM than "
                    "L-inf PGD", subject="ssim-ball vs pgd", null="pgd", gates={"curve range": False})
    each = claims_summary([*roi, curve])
    assert each.startswith("Primary claims: 3 not interpretable (ssim-ball: the attack acts where the model looks, "
                           "against the same-class null, the RoI faithfulness gate failed; pgd: ")
    assert ("ssim-ball vs pgd: the SSIM-ball attack fools images at a higher SSIM than L-inf PGD, against the pgd "
            "null, the curve range gate failed)") in each
