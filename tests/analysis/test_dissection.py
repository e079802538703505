"""Network dissection: IoUs on units that equal concept masks, exact and approximate thresholds."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch import nn

from advspatial.analysis.dissection import dissect, sensitivity_vs_interpretability
from advspatial.data.base import ImageDataset
from advspatial.errors import ConfigError, ModelError, ShapeError


def identity_net() -> nn.Module:
    """The layer '0' outputs the input itself: each input channel is one unit."""
    return nn.Sequential(nn.Identity()).eval()


def concept_case():
    """4 images 8x8. Concept A = rows 0:4 x cols 0:4, B = rows 2:6 x cols 2:6 (overlap 4 px).
    Unit 0 = A, unit 1 = B, unit 2 = A on images 0 and 1 only."""
    a = torch.zeros(4, 8, 8, dtype=torch.bool)
    a[:, :4, :4] = True
    b = torch.zeros(4, 8, 8, dtype=torch.bool)
    b[:, 2:6, 2:6] = True
    units = torch.stack([a, b, a], 1).float()
    units[2:, 2] = 0
    return units, {"A": a, "B": b}


def test_iou_of_units_equal_to_concepts_by_hand():
    units, concepts = concept_case()
    # 256 values per unit; units 0,1 have 64 ones: the 0.75-quantile falls at position
    # 191.25, between the last 0 and the first 1 -> T = 0.25 and region = mask.
    res = dissect(identity_net(), "0", units, concepts, quantile=0.75, batch_size=3)
    torch.testing.assert_close(res.thresholds, torch.tensor([0.25, 0.25, 0.0]))
    # unit 0: IoU(A)=1, IoU(B)=(4·4)/(4·(16+16−4)) = 1/7; unit 1 the mirror image;
    # unit 2 (A on 2 images, 32 px): IoU(A) = 32/64, IoU(B) = 8/(32+64−8) = 1/11
    # (a per-image average would give 1/14 for the last one: the sums are over the set)
    expected = torch.tensor([[1.0, 1 / 7], [1 / 7, 1.0], [0.5, 1 / 11]], dtype=torch.float64)
    torch.testing.assert_close(res.iou, expected)
    assert res.best_concept.tolist() == [0, 1, 0] and res.best_names == ["A", "B", "A"]
    torch.testing.assert_close(res.best_iou, torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64))
    assert res.unit_area.tolist() == [64.0, 64.0, 32.0]
    assert res.exact


def test_default_quantile_keeps_top_half_percent_of_a_continuous_unit():
    gen = torch.Generator().manual_seed(0)
    acts = torch.rand(10, 2, 20, 20, generator=gen)
    concept = torch.zeros(10, 20, 20, dtype=torch.bool)
    res = dissect(identity_net(), "0", acts, {"none": concept})
    assert res.unit_area.tolist() == [20.0, 20.0]  # 0.5% of 4000 pixels
    assert res.iou.abs().sum() == 0 and res.union[:, 0].tolist() == [20.0, 20.0]


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 1000),
    q=st.sampled_from([0.0, 0.5, 0.9, 0.995, 0.999, 1.0]),
    batch=st.integers(1, 7),
    dist=st.sampled_from(["normal", "uniform", "ties"]),
)
def test_exact_threshold_equals_torch_quantile(seed, q, batch, dist):
    gen = torch.Generator().manual_seed(seed)
    shape = (7, 3, 6, 5)
    if dist == "normal":
        acts = torch.randn(shape, generator=gen)
    elif dist == "uniform":
        acts = torch.rand(shape, generator=gen)
    else:
        acts = torch.randint(0, 3, shape, generator=gen).float()
    res = dissect(identity_net(), "0", acts, {"c": torch.ones(7, 6, 5, dtype=torch.bool)}, quantile=q, batch_size=batch)
    expected = torch.quantile(acts.transpose(0, 1).flatten(1), q, dim=1)
    torch.testing.assert_close(res.thresholds, expected, atol=1e-6, rtol=1e-6)


def test_histogram_threshold_is_within_one_bin():
    gen = torch.Generator().manual_seed(1)
    acts = torch.cat([torch.randn(20, 2, 10, 10, generator=gen), 3 * torch.rand(20, 2, 10, 10, generator=gen)], 1)
    concepts = {"c": torch.zeros(20, 10, 10, dtype=torch.bool)}
    exact = dissect(identity_net(), "0", acts, concepts, method="exact", batch_size=6)
    approx = dissect(identity_net(), "0", acts, concepts, method="histogram", bins=256, batch_size=6)
    auto = dissect(identity_net(), "0", acts, concepts, max_exact_elements=10, bins=256, batch_size=6)
    flat = acts.transpose(0, 1).flatten(1)
    width = (flat.amax(1) - flat.amin(1)) / 256
    assert not approx.exact and not auto.exact and exact.exact
    assert ((approx.thresholds - exact.thresholds).abs() <= width).all()
    torch.testing.assert_close(auto.thresholds, approx.thresholds)


def test_raw_quantile_and_bilinear_upsampling():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(5, 2, 8, 8, generator=gen)
    model = nn.Sequential(nn.AvgPool2d(2)).eval()
    concepts = {"c": torch.ones(5, 8, 8, dtype=torch.bool)}
    raw = dissect(model, "0", x, concepts, quantile=0.9, quantile_on="raw")
    pooled = nn.functional.avg_pool2d(x, 2)
    torch.testing.assert_close(raw.thresholds, torch.quantile(pooled.transpose(0, 1).flatten(1), 0.9, dim=1))
    up = dissect(model, "0", x, concepts, quantile=0.9)
    # bilinear upsampling (align_corners=False) of a 4x4 map stays inside its range and
    # the upsampled 0.9-quantile region covers ~10% of the 320 pixels per unit
    assert ((up.unit_area - 32).abs() <= 2).all()
    assert (up.thresholds <= pooled.amax((0, 2, 3))).all()


def test_dataset_input_and_hook_release():
    units, concepts = concept_case()
    ds = ImageDataset("toy", units, torch.zeros(4, dtype=torch.long), ("a",), concepts=concepts)
    model = identity_net()
    res = dissect(model, "0", ds, quantile=0.75)
    assert res.concept_names == ("A", "B")
    torch.testing.assert_close(res.iou[0], torch.tensor([1.0, 1 / 7], dtype=torch.float64))
    assert len(model[0]._forward_hooks) == 0
    with pytest.raises(ConfigError):
        dissect(model, "0", units, {})
    with pytest.raises(ShapeError):
        dissect(model, "0", units, {"A": concepts["A"][:2]})
    with pytest.raises(ModelError):
        dissect(nn.Sequential(nn.Flatten()).eval(), "0", units, concepts)
    assert len(model[0]._forward_hooks) == 0


def test_sensitivity_vs_interpretability_matches_scipy():
    gen = torch.Generator().manual_seed(3)
    change = torch.rand(12, generator=gen)
    iou = torch.rand(12, generator=gen)
    iou[3] = iou[5]  # a tie
    corr = sensitivity_vs_interpretability(change, iou, n_perm=200, seed=1)
    assert corr.rho == pytest.approx(stats.spearmanr(change.numpy(), iou.numpy()).statistic, abs=1e-12)
    assert 0 < corr.p_value <= 1
    mono = sensitivity_vs_interpretability(change, change**3 + 1, n_perm=500)
    assert mono.rho == pytest.approx(1.0) and mono.p_value == pytest.approx(1 / 501)
    anti = sensitivity_vs_interpretability(change, -change, n_perm=500)
    assert anti.rho == pytest.approx(-1.0) and anti.p_value == pytest.approx(1 / 501)
    flat = sensitivity_vs_interpretability(change, torch.zeros(12))
    assert flat.rho != flat.rho  # NaN for a constant input
    with pytest.raises(ShapeError):
        sensitivity_vs_interpretability(change, iou[:5])


def test_correlation_p_is_the_engines_two_sided_permutation_p():
    import itertools

    gen = torch.Generator().manual_seed(5)
    change = torch.rand(6, generator=gen)
    iou = change + 0.3 * torch.rand(6, generator=gen)
    corr = sensitivity_vs_interpretability(change, iou, n_perm=20_000, seed=2)
    # exact: the mean excess over the exact partner null, recomputed under every permutation of the 6 units
    ra = torch.from_numpy(stats.rankdata(change.numpy())) - 3.5
    rb = torch.from_numpy(stats.rankdata(iou.numpy())) - 3.5
    pairs = 6 * torch.outer(rb, ra) / (ra.norm() * rb.norm())
    null = torch.stack([(pairs[:, i].sum() - pairs[i, i]) / 5 for i in range(6)])
    t = float((pairs.diagonal() - null).mean())
    perms = list(itertools.permutations(range(6)))
    observed = pairs.diagonal()
    t_null = [float(((6 * pairs[list(p), range(6)] - observed) / 5 - null).mean()) for p in perms]
    exact = sum(abs(v) >= abs(t) - 1e-12 for v in t_null) / len(perms)
    assert corr.p_value == pytest.approx(exact, abs=0.02)
    assert corr.rho == pytest.approx(stats.spearmanr(change.numpy(), iou.numpy()).statistic, abs=1e-12)
    # two-sided: the reversed relation gets the same p
    flipped = sensitivity_vs_interpretability(change, -iou, n_perm=20_000, seed=2)
    assert flipped.rho == pytest.approx(-corr.rho) and flipped.p_value == pytest.approx(corr.p_value, abs=1e-12)
    assert flipped.z == pytest.approx(-corr.z)


def test_correlation_uses_the_engines_count_of_permutations_by_default():
    """10^4 permutations, as every permutation test of the engine (pse's correlation_permutations too), through the
    engine's rule: p = (1 + #{|T_b| >= |T|}) / (1 + B) lies on that grid."""
    from advspatial.experiments.pse import PSEConfig

    gen = torch.Generator().manual_seed(0)
    change, iou = torch.rand(40, generator=gen), torch.rand(40, generator=gen)
    result = sensitivity_vs_interpretability(change, iou)
    assert result.n_perm == 10_000 == PSEConfig().correlation_permutations
    assert (result.p_value * 10_001) == pytest.approx(round(result.p_value * 10_001))
