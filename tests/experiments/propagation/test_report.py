"""The propagation report's texts (experiments/propagation/report.py): they state this run's numbers, not a
dataset's."""

from __future__ import annotations

from types import SimpleNamespace

from advspatial.experiments.propagation.report import attacks_section


def test_the_attacks_section_states_the_success_rate_and_no_dataset_it_did_not_run() -> None:
    """It said "changing one pixel of a 28x28 grey image rarely flips a well-trained classifier" on every dataset,
    also below a CIFAR-10 ResNet-20's one-pixel attack that fooled 0.37 of its images."""
    success = SimpleNamespace(successes=21, rate=0.368, ci_low=0.26, ci_high=0.49)
    findings = SimpleNamespace(k={1: SimpleNamespace(correct=57, success=success, median_queries=900.0,
                                                     mean_l0=1.0)})
    section = attacks_section(SimpleNamespace(pixels_list=[1]), findings)  # type: ignore[arg-type]
    assert section.paragraphs == ["With k = 1 the attack fools the model on 0.368 of the correctly classified "
                                  "images; larger k give the propagation and locality analyses more successful "
                                  "attacks to rest on."]
