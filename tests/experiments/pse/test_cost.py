"""What pse's forecast prices apart from its reference runs: the exact method's (image, group) pairs, counted from the
settings and timed on the model."""

from __future__ import annotations

import pytest
import torch
from helpers import counted_block_pairs
from torch import nn

from advspatial.analysis import pse_incremental
from advspatial.experiments.forecast import CallPrice
from advspatial.experiments.pse import PSEConfig
from advspatial.experiments.pse.cost import (
    PAIRS, SUCCESSFUL_SHARE, pair_counts, pair_seconds, seconds_per_pair, square_groups,
)
from advspatial.models.cifar_resnet import cifar_resnet


@pytest.mark.parametrize(("height", "width", "side", "expected"), [(28, 28, 2, 196), (224, 224, 2, 12544),
                                                                   (224, 224, 16, 196), (14, 10, 4, 12)])
def test_square_groups_tile_the_image_with_the_partial_ones_at_its_edges(height, width, side, expected) -> None:
    assert square_groups(height, width, side) == expected


def test_pairs_are_counted_per_variant_measurement_control_draw_and_stability_side() -> None:
    share = SUCCESSFUL_SHARE
    config = PSEConfig(n=30, attacks=["pgd"], modes=["untargeted"], block=2, control_draws=3,
                       stability_groups=["4x4", "superpixels"], stability_images=10)
    # isolated + leave-one-out on every image, 3 draws and 4x4's 64 groups on the successful share
    counts = pair_counts(config, 32, 32)
    assert counts == pytest.approx({2: (2 + 3 * share) * 30 * 256, 4: share * 10 * 64})
    both = PSEConfig(n=30, attacks=["pgd", "cw-l2"], modes=["untargeted", "targeted"], block=2, control_draws=3,
                     stability_groups=["4x4"], stability_images=10)
    assert pair_counts(both, 32, 32) == pytest.approx({side: 4 * c for side, c in counts.items()})
    same = PSEConfig(n=30, attacks=["pgd"], modes=["untargeted"], block=4, control_draws=1,
                     stability_groups=["4x4"], stability_images=30)
    assert pair_counts(same, 32, 32) == pytest.approx({4: (2 + share) * 30 * 64 + share * 30 * 64})
    assert pair_counts(PSEConfig(n=30, pse_method="first_order"), 32, 32) == {}


def test_a_pair_is_timed_incrementally_on_a_cpu_and_priced_as_a_forward_pass_elsewhere(monkeypatch) -> None:
    model = cifar_resnet(8).eval()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    config = PSEConfig(n=4, block=2)
    calls = counted_block_pairs(monkeypatch)
    price = CallPrice(forward_fixed=0.5, forward_per_image=0.01, backward_fixed=0.0, backward_per_image=0.0)
    timed = seconds_per_pair(model, images, config, price, 2, repeats=2)
    assert 0 < timed < 1 and calls == [128] * 3  # a warm-up and two timed calls: all 64 groups of both images
    calls.clear()
    seconds_per_pair(model, images, PSEConfig(n=4, block=2, pair_batch=20), price, 4, repeats=2)
    assert calls == [16 + 16] * 3  # the run's 20 * 784 // 256 = 61 pairs a call: both images' 16 groups of 4x4
    monkeypatch.setattr(pse_incremental.BlockEvaluator, "build", classmethod(lambda cls, *a, **k: None))
    rows = config.pair_batch * 28 * 28 // (16 * 16)  # the run's pairs per call at 16 px
    assert seconds_per_pair(model, images, config, price, 2) == pytest.approx(0.5 / rows + 0.01)
    seconds = pair_seconds(config, model, images, price)
    assert list(seconds) == [PAIRS]
    assert seconds[PAIRS] == pytest.approx(sum(pair_counts(config, 16, 16).values()) * (0.5 / rows + 0.01))
    assert pair_seconds(PSEConfig(n=4, pse_method="first_order"), nn.Identity(), images, price) == {}
