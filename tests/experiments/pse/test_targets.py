"""Targets of the ``pse`` attack variants: targeted classes, the clean runner-up, the pre-specified t."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.errors import ConfigError
from advspatial.experiments.pse.targets import adversarial_class, choose_targets, prespecified_target, runner_up


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 12), st.integers(1, 40), st.integers(0, 10_000))
def test_random_targets_never_the_label_and_seeded(num_classes: int, n: int, seed: int) -> None:
    labels = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed))
    t = choose_targets(labels, num_classes, "random", seed)
    assert t.shape == (n,)
    assert ((t >= 0) & (t < num_classes)).all()
    assert (t != labels).all()
    assert torch.equal(t, choose_targets(labels, num_classes, "random", seed))


def test_random_targets_cover_all_other_classes() -> None:
    labels = torch.zeros(3000, dtype=torch.long)
    t = choose_targets(labels, 4, "random", 0)
    counts = torch.bincount(t, minlength=4)
    assert counts[0] == 0
    assert (counts[1:] > 850).all()  # ~1000 each, uniform over the 3 other classes


def test_next_and_least_likely_targets_known_answers() -> None:
    labels = torch.tensor([0, 2, 1])
    assert choose_targets(labels, 3, "next", 0).tolist() == [1, 0, 2]
    logits = torch.tensor([[-5.0, 1.0, 0.0], [3.0, 2.0, -9.0], [0.0, -1.0, 4.0]])
    # in every row the lowest logit is the label's own, so the next lowest class is chosen
    assert choose_targets(labels, 3, "least-likely", 0, logits).tolist() == [2, 1, 0]
    with pytest.raises(ConfigError):
        choose_targets(labels, 3, "least-likely", 0)
    with pytest.raises(ConfigError):
        choose_targets(labels, 3, "farthest", 0)
    with pytest.raises(ConfigError):
        choose_targets(labels, 1, "random", 0)


def test_runner_up_is_the_clean_second_class() -> None:
    logits = torch.tensor([[5.0, 4.0, 1.0], [0.0, 2.0, 3.0], [1.0, 1.0, 9.0]])
    labels = torch.tensor([0, 2, 2])
    assert runner_up(logits, labels).tolist() == [1, 1, 0]  # ties: the lowest class
    labels = torch.tensor([1, 0, 1])  # a misclassified image still gets the best class other than its label
    assert runner_up(logits, labels).tolist() == [0, 2, 2]


def test_prespecified_target_ignores_the_class_the_attack_reached() -> None:
    runner = torch.tensor([1, 2])
    untargeted = SimpleNamespace(target=None, adv_pred=torch.tensor([3, 3]))
    targeted = SimpleNamespace(target=torch.tensor([4, 0]), adv_pred=torch.tensor([3, 3]))
    assert prespecified_target(untargeted, runner).tolist() == [1, 2]
    assert prespecified_target(targeted, runner).tolist() == [4, 0]
    assert adversarial_class(untargeted).tolist() == [3, 3]  # the post-hoc class, secondary view only
