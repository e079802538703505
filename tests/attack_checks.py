"""Checks shared by the attack tests (importable as ``attack_checks``: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import torch

from advspatial.attacks import Attack


def assert_batch_equals_each_alone(attack: Attack, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor,
                                   staggered: bool = True) -> None:
    """Attacked together, each image gets what it gets attacked alone with its sample id: the same point and the
    same query count. ``staggered``: also require images that stop at different times (else the test is weak)."""
    batch = attack.run(x, y, sample_ids=ids)
    if staggered:
        assert (batch.queries > batch.queries.min()).any(), "test needs images that stop at different times"
    for i in range(len(x)):
        alone = attack.run(x[i:i + 1], y[i:i + 1], sample_ids=ids[i:i + 1])
        assert torch.allclose(alone.x_adv, batch.x_adv[i:i + 1], atol=1e-6, rtol=0)
        assert alone.queries.item() == batch.queries[i].item()
