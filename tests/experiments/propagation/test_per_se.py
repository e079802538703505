"""Propagation per se: the claims on a random one-pixel change's peak PMmax, against 0 and
against a fraction of the layer's largest clean activation, judged by the engine; and their metrics (depth,
relative depth, the ratio's CI) -- on a network a pixel cannot reach the end of, and on one it can."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial.analysis.propagation import random_pixel_reach
from advspatial.experiments.propagation.claims import (
    PER_SE_ZERO_NULL, build_claims, per_se_claims, per_se_fraction_null,
)
from advspatial.experiments.propagation.config import PropagationConfig
from advspatial.experiments.propagation.findings import per_se_findings
from advspatial.experiments.propagation.stages import RandomReach
from advspatial.statistics.claims import judge
from advspatial.statistics.estimates import bootstrap_mean_ci

N = 40  # the engine judges nothing below 30 images


def _cnn(last: str = "normal") -> nn.Module:
    """conv, ReLU, conv, ReLU on 8x8 colour images. ``zero``: the second conv's weights are 0 (its output is its
    bias whatever the image); ``dead``: its bias is -100, so the last ReLU is 0 on every image; ``faint``: its
    weights are scaled by 1e-5, so a pixel reaches the end, by a negligible share of the largest activation."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()).eval()
    with torch.no_grad():
        if last == "zero":
            model[2].weight.zero_()
        if last == "dead":
            model[2].bias.fill_(-100.0)
        if last == "faint":
            model[2].weight.mul_(1e-5)
            model[2].bias.fill_(0.5)
    return model


def _reach(model: nn.Module) -> RandomReach:
    x = torch.rand(N, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    layers, peak = random_pixel_reach(model, x, draws=2, seed=0, sample_ids=torch.arange(N))
    return RandomReach(layers, peak)


def _judged(reach: RandomReach, fraction: float) -> dict[tuple[str, str], object]:
    claims = judge(per_se_claims(reach, fraction, seed=0), sesoi=0.01)
    return {(c.statistic.split(" @ ")[1], "zero" if c.null == PER_SE_ZERO_NULL else "fraction"): c for c in claims}


@pytest.mark.parametrize("last", ["zero", "dead"])
def test_a_pixel_that_cannot_reach_the_last_layer_is_not_supported(last):
    reach = _reach(_cnn(last))
    assert reach.layers == ["0", "1", "2", "3"]
    assert torch.equal(reach.peak[:, -1], torch.zeros(N, dtype=torch.float64))
    claims = _judged(reach, 0.1)
    # not supported, in the engine's strongest form: every image 0, so the CI [0, 0] lies inside +-sesoi
    assert claims[("3", "zero")].primary and claims[("3", "zero")].verdict == "equivalent to null"
    assert claims[("3", "fraction")].verdict == "reversed"  # every image 0.1 below the bar
    assert claims[("0", "zero")].verdict == "supported" and not claims[("0", "zero")].primary  # the first conv moves


def test_a_faint_path_is_negligible_not_supported():
    claims = _judged(_reach(_cnn("faint")), 0.1)
    last = claims[("3", "zero")]
    assert 0 < last.effect.low and last.effect.mean < 0.01 and last.verdict == "negligible"


def test_a_normal_cnn_propagates_to_its_last_layer():
    reach = _reach(_cnn())
    last = reach.peak[:, -1]
    assert (last > 0.01).all()
    low = _judged(reach, 0.0)
    assert low[("3", "zero")].verdict == "supported" and low[("3", "fraction")].verdict == "supported"
    high = _judged(reach, float(last.max()) + 0.05)  # a bar above every image: the fraction claim turns over
    assert high[("3", "zero")].verdict == "supported" and high[("3", "fraction")].verdict == "reversed"
    c = high[("3", "fraction")]
    assert c.null == per_se_fraction_null(float(last.max()) + 0.05)
    assert c.effect.mean == pytest.approx(float(last.mean()) - float(last.max()) - 0.05)


def test_only_the_last_layer_is_primary_and_the_layers_are_one_family():
    reach = _reach(_cnn())
    claims = per_se_claims(reach, 0.1, seed=0)
    assert len(claims) == 2 * len(reach.layers)
    assert [c.primary for c in claims] == [False] * (2 * len(reach.layers) - 2) + [True, True]
    judge(claims, sesoi=0.01)
    from advspatial.statistics.verdicts import benjamini_hochberg, holm

    secondary = [c for c in claims if not c.primary]
    assert [c.p_adjusted for c in secondary] == pytest.approx(list(benjamini_hochberg([c.p for c in secondary])))
    primary = [c for c in claims if c.primary]
    assert [c.p_adjusted for c in primary] == pytest.approx(list(holm([c.p for c in primary])))


def test_no_image_keeps_the_primary_rows_with_no_data():
    claims = judge(per_se_claims(RandomReach([], torch.zeros(0, 0)), 0.1, seed=0))
    assert len(claims) == 2 and all(c.primary and c.verdict == "insufficient data" for c in claims)


def test_metrics_expose_depth_relative_depth_and_the_claims_ci():
    reach = _reach(_cnn())
    config = PropagationConfig(reach_fraction=0.2, random_draws=2, seed=0)
    m = per_se_findings(config, reach)
    assert m.images == N and m.draws == 2 and m.fraction == 0.2
    assert [d.depth for d in m.layers] == [0, 1, 2, 3]
    assert [d.relative_depth for d in m.layers] == [0.25, 0.5, 0.75, 1.0]
    claims = {c.statistic: c for c in per_se_claims(reach, 0.2, seed=0) if c.null == PER_SE_ZERO_NULL}
    for d, layer in zip(m.layers, reach.layers, strict=True):
        values = reach.peak[:, d.depth]
        assert d.ratio == bootstrap_mean_ci(values, seed=0)
        effect = claims[f"random-pixel peak PMmax @ {layer}"].effect
        assert (effect.mean, effect.low, effect.high) == pytest.approx((d.ratio.mean, d.ratio.low, d.ratio.high))
        assert d.share_above_fraction == pytest.approx(float((values > 0.2).double().mean()))


def test_attack_against_random_is_secondary_in_the_full_claim_set():
    config = PropagationConfig(pixels_list=[1], radii=[1], seed=0)
    claims = build_claims(config, _reach(_cnn()), [], [])
    assert [c.primary for c in claims] == [True, True] + [False] * (len(claims) - 2)
    assert all(c.subject == "random one-pixel change" for c in claims if c.primary)
