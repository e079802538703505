"""What a gate's status means for RoI-dependent results (experiments/roi.py): one phrase per status, and the caveat
an undecided gate puts on claims without changing their verdicts."""

from __future__ import annotations

import torch

from advspatial.experiments.measurement.roi import Roi, roi_caveat, roi_interpretation, roi_label, with_roi_caveat
from advspatial.faithfulness.gate import summarize_gate
from advspatial.statistics.claims import Claim, judge
from advspatial.statistics.estimates import Estimate

PASSING = [{"spearman": 0.05}]


def columns(location_effect: float, n: int = 60, noise: float = 0.3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Gate columns whose RoI beats scatter clearly and location by ``location_effect`` logits (with noise)."""
    gen = torch.Generator().manual_seed(seed)
    cols = {"clean:correct": torch.ones(n), "attack:margin_clean": torch.full((n,), 4.0),
            "attack:margin:roi": torch.full((n,), -1.0), "attack:margin:shifted": torch.full((n,), 3.0),
            "attack:margin:scattered": torch.full((n,), 3.0)}
    for fill in ("road", "blur"):
        cols[f"deletion:{fill}:drop:roi"] = 2.0 + noise * torch.randn(n, generator=gen)
        cols[f"deletion:{fill}:drop:scattered"] = 0.2 + noise * torch.randn(n, generator=gen)
        cols[f"deletion:{fill}:drop:shifted"] = cols[f"deletion:{fill}:drop:roi"] - location_effect \
            + noise * torch.randn(n, generator=gen)
    return cols


def gate_of(location_effect: float, noise: float = 0.3):  # type: ignore[no-untyped-def]
    return summarize_gate(columns(location_effect, noise=noise), torch.zeros(60, dtype=torch.long),
                          randomization=PASSING)


def test_each_status_reads_as_one_phrase() -> None:
    passed, failed, undecided = gate_of(1.5), gate_of(-1.0), gate_of(0.1, noise=2.0)
    assert (passed.status, failed.status, undecided.status) == ("passed", "failed", "undecided")
    assert roi_interpretation(passed) == "interpretable" and roi_label(passed) == "" and roi_caveat(passed) == ""
    assert roi_label(failed).startswith("not interpretable: the RoI is not better than location")
    assert roi_interpretation(failed) == roi_label(failed) and roi_caveat(failed) == ""
    caveat = roi_caveat(undecided)
    assert caveat.startswith("RoI faithfulness undecided (about ") and caveat.endswith(" correct images would decide)")
    assert roi_interpretation(undecided) == f"interpretable; {caveat}" and roi_label(undecided) == ""


def test_a_failed_gates_label_names_a_failing_randomization_check_and_no_undecided_one() -> None:
    """The label says why the gate failed: a randomization check still undecided (too few check images) is not a
    reason, and reading "fails the randomization check" beside it would contradict its own row."""
    cols, classes = columns(-1.0), torch.zeros(60, dtype=torch.long)
    undecided = summarize_gate(cols, classes, randomization=[{"step": 1, "layer": "read", "spearman": 0.3,
                                                               "per_image": [0.3, 0.1, 0.5, 0.2]}])
    assert undecided.status == "failed" and undecided.comparisons["randomization"].outcome == "undecided"
    assert roi_label(undecided) == "not interpretable: the RoI is not better than location"
    fails = summarize_gate(cols, classes, randomization=[{"step": 1, "layer": "read", "spearman": 0.9}])
    assert fails.comparisons["randomization"].outcome == "fails"
    assert roi_label(fails) == ("not interpretable: the RoI is not better than location; the RoI fails the "
                                "randomization check: cascade |Spearman| after every layer 0.90 (>= 0.5 fails)")


def test_an_roi_is_usable_unless_its_gate_failed_and_carries_its_caveat() -> None:
    undecided = Roi.judged("gradcam", "GAP head", gate_of(0.1, noise=2.0))
    assert undecided.usable and not undecided.faithful and undecided.status == "undecided"
    assert undecided.caveat.startswith("RoI faithfulness undecided")
    failed = Roi.judged("gradcam", "GAP head", gate_of(-1.0))
    assert not failed.usable and failed.caveat == ""


def test_an_undecided_gate_keeps_a_claims_verdict_and_adds_its_caveat() -> None:
    gate = gate_of(0.1, noise=2.0)
    claim = Claim("the attack acts where the model looks", "pgd", "energy_in_roi", "same-class", 0.4, 0.3,
                  Estimate(0.1, 0.08, 0.12, 200), 1.3, 1e-4, gates={"RoI faithfulness": not gate.failed},
                  primary=True)
    free = Claim("the attack co-locates with the centre", "pgd", "energy_in_roi", "same-class", 0.4, 0.3,
                 Estimate(0.1, 0.08, 0.12, 200), 1.3, 1e-4)
    judge(with_roi_caveat([claim, free], gate))
    assert claim.verdict == "supported" and claim.caveats == [roi_caveat(gate)]
    assert free.caveats == []
    assert Claim.from_dict(claim.as_dict()).caveats == claim.caveats
    with_roi_caveat([claim], gate)
    assert len(claim.caveats) == 1   # added once
