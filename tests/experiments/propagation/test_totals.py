"""Bounded-memory aggregation of the propagation maps over batches
(:mod:`advspatial.experiments.propagation.totals`)."""

from __future__ import annotations


import pytest
import torch

from advspatial.experiments.propagation.pixel_changes import apply_pixels
from advspatial.analysis.propagation import average_propagation, depth_summary, propagation_maps
from advspatial.experiments.propagation.totals import PropagationTotals, propagation_stats
from advspatial.errors import ConfigError
from advspatial.experiments.propagation.stages import resolve_layers
from advspatial.models import build_model


# -- bounded-memory aggregation ------------------------------------------------------------

def _pair(n: int, channels: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size, size, generator=gen)
    pos = torch.randint(0, size, (n, 2, 2), generator=gen)
    return x, apply_pixels(x, pos, torch.rand(n, 2, channels, generator=gen))


@pytest.mark.parametrize("arch, channels, size", [("tiny", 1, 12), ("resnet18-cifar", 3, 32)])
def test_totals_over_batches_equal_the_building_blocks_on_all_images(tiny_cnn, arch, channels, size):
    """Merging per-batch statistics gives what average_propagation/depth_summary give on everything at once."""
    model = tiny_cnn(size=size) if arch == "tiny" else build_model(arch, in_channels=channels, input_size=size).eval()
    x, x_adv = _pair(2, channels, size, seed=3)
    layers = resolve_layers(model, [])
    totals = PropagationTotals()
    peaks = []
    for sl in (slice(0, 1), slice(1, 1), slice(1, 2)):  # includes an empty batch
        stats = propagation_stats(model, x[sl], x_adv[sl], layers, threshold=0.05, batch_size=2)
        totals.add(stats)
        peaks.append(stats["peak_last"])
    pms = propagation_maps(model, x, x_adv, layers)
    expected_rows = depth_summary(pms, threshold=0.05)
    expected_means = average_propagation(pms)
    assert totals.count == 2 and totals.layers == list(pms)
    for got, want in zip(totals.depth_rows(), expected_rows, strict=True):
        assert (got.depth, got.layer, got.height, got.width) == (want.depth, want.layer, want.height, want.width)
        for name in ("mean_pm_max", "max_pm_max", "mean_pm_avg", "max_pm_avg", "spread"):
            assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-4, abs=1e-6), (got.layer, name)
    for name, mean in totals.mean_maps().items():
        assert torch.allclose(mean.pm_max, expected_means[name].pm_max, atol=1e-6)
        assert torch.allclose(mean.pm_avg, expected_means[name].pm_avg, atol=1e-6)
    # each image's peak PMmax at the last layer
    assert torch.allclose(torch.cat(peaks), pms[list(pms)[-1]].pm_max.flatten(1).amax(1), rtol=1e-4, atol=1e-6)


def test_totals_reject_batches_with_other_layers(tiny_cnn):
    model = tiny_cnn(size=8)
    x, x_adv = _pair(2, 1, 8, seed=0)
    totals = PropagationTotals()
    totals.add(propagation_stats(model, x, x_adv, ["features.0"], 0.1))
    with pytest.raises(ConfigError):
        totals.add(propagation_stats(model, x, x_adv, ["features.3"], 0.1))


def test_layer_patterns_select_modules_and_unknown_names_fail(tiny_cnn):
    model = tiny_cnn()
    assert resolve_layers(model, ["features.?"]) == [f"features.{i}" for i in range(6)]
    with pytest.raises(ConfigError, match="valid"):
        resolve_layers(model, ["no_such_layer"])
