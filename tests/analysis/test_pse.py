"""Promotion–suppression: known answers on linear models, typing rule, batching, CAM overlap."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advspatial.analysis.pse import block_labels, promotion_suppression
from advspatial.analysis.pse_cam import pse_vs_cam
from advspatial.analysis.pse_types import (
    BALANCED, OPPOSING, PROMOTION, SUPPRESSION, TYPE_NAMES, UNPERTURBED, classify_groups, group_type_map,
)
from advspatial.errors import ConfigError, ShapeError


def linear_model(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Module:
    """z = W·flatten(x) + b in float64 (exact arithmetic up to rounding)."""
    k, d = weight.shape
    lin = nn.Linear(d, k).double()
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(torch.zeros(k) if bias is None else bias)
    return nn.Sequential(nn.Flatten(), lin).eval()


def random_case(seed: int, n: int = 3, c: int = 2, h: int = 6, w: int = 5, k: int = 4):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(k, c * h * w, generator=gen, dtype=torch.float64)
    x = torch.rand(n, c, h, w, generator=gen, dtype=torch.float64)
    delta = 0.1 * torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=gen)
    t = (y + 1 + torch.randint(0, k - 1, (n,), generator=gen)) % k
    return linear_model(weight), weight, x, x + delta, y, t


def linear_group_effects(weight, x, x_adv, y, t, labels):
    """Hand formula: s_G = −W_t0·δ_G, p_G = W_t·δ_G, per image and group."""
    n = x.shape[0]
    delta = (x_adv - x).reshape(n, x.shape[1], -1)
    g = int(labels.max()) + 1
    s = torch.zeros(n, g, dtype=torch.float64)
    p = torch.zeros(n, g, dtype=torch.float64)
    for i in range(n):
        w0 = weight[y[i]].view(x.shape[1], -1)
        wt = weight[t[i]].view(x.shape[1], -1)
        for grp in range(g):
            m = (labels[i].flatten() == grp).double()
            s[i, grp] = -(w0 * delta[i] * m).sum()
            p[i, grp] = (wt * delta[i] * m).sum()
    return s, p


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), block=st.integers(1, 4), method=st.sampled_from(["exact", "first_order"]))
def test_linear_model_known_answer_and_additivity(seed, block, method):
    model, weight, x, x_adv, y, t = random_case(seed)
    res = promotion_suppression(model, x, x_adv, y, t, block=block, method=method)
    s, p = linear_group_effects(weight, x, x_adv, y, t, res.labels)
    torch.testing.assert_close(res.s, s, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(res.p, p, atol=1e-10, rtol=1e-9)
    # additivity for a linear model: the groups add up to the whole perturbation
    torch.testing.assert_close(res.s.sum(1), res.s_total, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(res.p.sum(1), res.p_total, atol=1e-10, rtol=1e-9)


def test_exact_equals_first_order_on_linear_model():
    model, _, x, x_adv, y, t = random_case(7)
    exact = promotion_suppression(model, x, x_adv, y, t, method="exact")
    first = promotion_suppression(model, x, x_adv, y, t, method="first_order")
    torch.testing.assert_close(exact.s, first.s, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(exact.p, first.p, atol=1e-10, rtol=1e-9)
    assert torch.equal(exact.types, first.types)


def test_block_geometry_and_energy():
    labels = block_labels(5, 5, 2)
    assert labels.max() == 8  # 3x3 blocks, the last row/column of width 1
    assert labels[4, 4] == 8 and labels[0, 1] == 0 and labels[1, 2] == 1
    model, _, x, x_adv, y, t = random_case(1, h=5, w=5)
    res = promotion_suppression(model, x, x_adv, y, t, block=2)
    assert res.size[0].tolist() == [4, 4, 2, 4, 4, 2, 2, 2, 1]
    torch.testing.assert_close(res.energy.sum(1), (x_adv - x).pow(2).flatten(1).sum(1))
    assert group_type_map(res).shape == (3, 5, 5)


def test_classify_groups_rule_on_constructed_values():
    s = torch.tensor([3.0, 1.0, 1.0, 1.0, -1.0, -1.0, 2.0, 0.0, -1.0, 0.5])
    p = torch.tensor([1.0, 3.0, 1.0, 0.5, -3.0, 0.1, -5.0, 0.0, -1.0, 1.0])
    expected = [
        SUPPRESSION,  # 3 > 2·1
        PROMOTION,  # 3 > 2·1
        BALANCED,  # equal
        BALANCED,  # 1 = 2·0.5, not strictly greater
        OPPOSING,  # both negative: raw rule would say "suppression" (−1 > −6)
        PROMOTION,  # s⁺ = 0, p⁺ = 0.1
        SUPPRESSION,  # p⁺ = 0
        OPPOSING,  # nothing at all
        OPPOSING,  # raw rule would say both suppression and promotion (−1 > −2)
        BALANCED,  # 1 = 2·0.5
    ]
    assert classify_groups(s, p, kappa=2.0).tolist() == expected
    # atol: tiny values count as zero
    assert classify_groups(torch.tensor([1e-9]), torch.tensor([1.0]), atol=1e-6).item() == PROMOTION
    assert classify_groups(torch.tensor([1e-9]), torch.tensor([0.0]), atol=1e-6).item() == OPPOSING
    with pytest.raises(ConfigError):
        classify_groups(s, p, kappa=0.5)


@settings(max_examples=20, deadline=None)
@given(s=st.floats(-5, 5), p=st.floats(-5, 5), kappa=st.floats(1, 5))
def test_classify_groups_types_are_consistent(s, p, kappa):
    typ = classify_groups(torch.tensor([s], dtype=torch.float64), torch.tensor([p], dtype=torch.float64), kappa).item()
    sp, pp = max(s, 0.0), max(p, 0.0)
    if typ == SUPPRESSION:
        assert sp > kappa * pp
    elif typ == PROMOTION:
        assert pp > kappa * sp
    elif typ == OPPOSING:
        assert sp == 0 and pp == 0
    else:
        assert typ == BALANCED and sp > 0 and pp > 0 and sp <= kappa * pp and pp <= kappa * sp


def disjoint_case():
    """2 classes on a 1x4x4 image: class 0 reads the left half, class 1 the right half,
    both read the bottom-right 2x2 block equally."""
    w = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    w[0, :, :, :2] = 1.0
    w[1, :, :, 2:] = 1.0
    w[0, :, 2:, 2:] = 1.0
    model = linear_model(w.view(2, -1))
    x = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64)
    return model, x


def test_typing_pure_suppression_promotion_balanced():
    model, x = disjoint_case()
    y, t = torch.tensor([0]), torch.tensor([1])
    delta = torch.zeros_like(x)
    delta[..., :2, :2] = -0.2  # top-left: lowers class 0 only -> suppression, energy 4·0.04
    delta[..., :2, 2:] = 0.1  # top-right: raises class 1 only -> promotion, energy 4·0.01
    delta[..., 2:, 2:] = 0.3  # bottom-right: raises both equally: s<0, p>0 -> promotion
    delta[..., 2:, :2] = 0.1  # bottom-left: raises class 0 only: s<0, p=0 -> opposing
    res = promotion_suppression(model, x, x + delta, y, t, block=2)
    assert res.types[0].tolist() == [SUPPRESSION, PROMOTION, OPPOSING, PROMOTION]
    torch.testing.assert_close(res.s[0], torch.tensor([0.8, 0.0, -0.4, -1.2], dtype=torch.float64))
    torch.testing.assert_close(res.p[0], torch.tensor([0.0, 0.4, 0.0, 1.2], dtype=torch.float64))
    energy = torch.tensor([0.16, 0.04, 0.04, 0.36], dtype=torch.float64)
    torch.testing.assert_close(res.energy[0], energy)
    torch.testing.assert_close(res.shares[0], torch.tensor([0.16, 0.40, 0.0, 0.04], dtype=torch.float64) / 0.6)
    assert res.perturbation_type.item() == PROMOTION

    # balanced: a group whose pixels lower class 0 and raise class 1 by the same amount
    delta2 = torch.zeros_like(x)
    delta2[..., :2, 0] = -0.1
    delta2[..., :2, 3] = 0.1
    res2 = promotion_suppression(model, x, x + delta2, y, t, block=4)
    assert res2.types.tolist() == [[BALANCED]]
    assert res2.perturbation_type.tolist() == [BALANCED]
    torch.testing.assert_close(res2.shares[0], torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64))


def test_unperturbed_groups_and_zero_delta():
    model, x = disjoint_case()
    delta = torch.zeros_like(x)
    delta[..., 0, 0] = -0.5
    res = promotion_suppression(model, torch.cat([x, x]), torch.cat([x + delta, x]), torch.tensor([0, 0]),
                                torch.tensor([1, 1]))
    assert res.types[0].tolist() == [SUPPRESSION, UNPERTURBED, UNPERTURBED, UNPERTURBED]
    assert res.types[1].tolist() == [UNPERTURBED] * 4
    assert res.perturbation_type.tolist() == [SUPPRESSION, UNPERTURBED]
    assert res.shares[1].sum() == 0
    assert (group_type_map(res)[0] == UNPERTURBED).sum() == 12


def test_default_target_is_adversarial_prediction():
    model, _, x, x_adv, y, _ = random_case(3)
    res = promotion_suppression(model, x, x_adv, y)
    assert torch.equal(res.target_class, model(x_adv).argmax(1))


def test_batch_consistency_on_cnn(tiny_cnn):
    model = tiny_cnn(size=8)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 8, 8, generator=gen)
    x_adv = (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    y, t = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    whole = promotion_suppression(model, x, x_adv, y, t, batch_size=1000)
    chunked = promotion_suppression(model, x, x_adv, y, t, batch_size=7)
    torch.testing.assert_close(whole.s, chunked.s, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(whole.p, chunked.p, atol=1e-5, rtol=1e-4)
    for i in range(3):
        alone = promotion_suppression(model, x[i : i + 1], x_adv[i : i + 1], y[i : i + 1], t[i : i + 1])
        torch.testing.assert_close(alone.s[0], whole.s[i], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(alone.p[0], whole.p[i], atol=1e-5, rtol=1e-4)
    # the first-order approximation goes in the same direction on small δ
    small = x + 1e-3 * (x_adv - x)
    ex = promotion_suppression(model, x, small, y, t, method="exact")
    fo = promotion_suppression(model, x, small, y, t, method="first_order")
    torch.testing.assert_close(ex.s, fo.s, atol=2e-5, rtol=0.05)


def test_superpixel_labels():
    model, weight, x, x_adv, y, t = random_case(11, h=6, w=6)
    gen = torch.Generator().manual_seed(5)
    sp = torch.randint(0, 5, (3, 6, 6), generator=gen)
    sp[0][sp[0] == 2] = 7  # non-contiguous labels: groups 2 (and 5, 6) are absent in image 0
    res = promotion_suppression(model, x, x_adv, y, t, groups=sp)
    assert res.num_groups == 8
    s, p = linear_group_effects(weight, x, x_adv, y, t, sp)
    torch.testing.assert_close(res.s, s, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(res.p, p, atol=1e-10, rtol=1e-9)
    assert res.size[0, 2] == 0 and res.types[0, 2] == UNPERTURBED
    # a (H,W) label map equal to the blocks gives the block result
    blocks = promotion_suppression(model, x, x_adv, y, t, block=3)
    shared = promotion_suppression(model, x, x_adv, y, t, groups=block_labels(6, 6, 3))
    torch.testing.assert_close(blocks.s, shared.s)


def test_input_errors():
    model, _, x, x_adv, y, t = random_case(0)
    with pytest.raises(ConfigError):
        promotion_suppression(model, x, x_adv, y, t, method="taylor")
    with pytest.raises(ShapeError):
        promotion_suppression(model, x, x_adv[:2], y, t)
    with pytest.raises(ConfigError):
        promotion_suppression(model, x, x_adv, y, t, groups=torch.rand(3, 6, 5))
    with pytest.raises(ShapeError):
        promotion_suppression(model, x, x_adv, y, t, groups=torch.zeros(2, 6, 5, dtype=torch.long))


# ----------------------------------------------------------------------------- pse_vs_cam


def cam_case(n: int = 12):
    """Image i: suppression in a random 2x2 block, promotion in another; CAM_true peaks
    exactly on the suppression block, CAM_target on the promotion block."""
    model, x = disjoint_case()
    gen = torch.Generator().manual_seed(0)
    x = x.expand(n, 1, 4, 4).clone()
    delta = torch.zeros_like(x)
    cam_true = torch.zeros(n, 4, 4)
    cam_target = torch.zeros(n, 4, 4)
    for i in range(n):
        r = int(torch.randint(0, 2, (1,), generator=gen))
        rows = slice(2 * r, 2 * r + 2)
        delta[i, :, rows, :2] = -0.2  # suppression (left half lowers class 0)
        delta[i, :, 0:2, 2:] = 0.1  # promotion (top-right reads class 1 only)
        cam_true[i, rows, :2] = 1.0
        cam_target[i, 0:2, 2:] = 1.0 + i  # same place every image
    res = promotion_suppression(model, x, x + delta, torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long))
    return res, cam_true, cam_target


def test_pse_vs_cam_known_overlap_and_baseline():
    res, cam_true, cam_target = cam_case()
    out = pse_vs_cam(res, cam_true, cam_target, top_fraction=0.25, n_perm=200, seed=0)
    tc, gc = out.true_cam, out.target_cam
    assert tc.observed[SUPPRESSION] == 1.0  # all suppression energy inside CAM_true's top 4 pixels
    assert tc.observed[PROMOTION] == 0.0
    assert tc.baseline_mean[SUPPRESSION] < 0.8  # random pairing: right block half the time
    assert tc.p_value[SUPPRESSION] < 0.05
    # CAM_target is in the same place for every image: pairing does not matter at all
    assert gc.observed[PROMOTION] == 1.0
    assert gc.baseline_mean[PROMOTION] == 1.0 and gc.baseline_std[PROMOTION] == 0.0
    assert gc.p_value[PROMOTION] == 1.0
    assert torch.isnan(tc.observed[BALANCED]) and torch.isnan(tc.p_value[BALANCED])  # no balanced groups
    assert set(out.as_dict()["true_cam"]) == {"suppression", "promotion", "balanced", "opposing"}
    # pixel weighting gives the same answer here (uniform δ inside each group)
    px = pse_vs_cam(res, cam_true, cam_target, top_fraction=0.25, n_perm=20, weight="pixels")
    assert px.true_cam.observed[SUPPRESSION] == 1.0


def test_pse_vs_cam_is_seeded_and_respects_strata():
    res, cam_true, cam_target = cam_case()
    a = pse_vs_cam(res, cam_true, cam_target, n_perm=30, seed=3)
    b = pse_vs_cam(res, cam_true, cam_target, n_perm=30, seed=3)
    torch.testing.assert_close(a.true_cam.baseline_mean, b.true_cam.baseline_mean, equal_nan=True)
    torch.testing.assert_close(a.true_cam.p_value, b.true_cam.p_value, equal_nan=True)
    # every image its own stratum: no partner anywhere, nothing to compare
    c = pse_vs_cam(res, cam_true, cam_target, top_fraction=0.25, n_perm=10, strata=torch.arange(len(res)))
    assert torch.isnan(c.true_cam.per_image).all() and torch.isnan(c.true_cam.observed).all()
    assert all(comp.n == 0 for comp in c.true_cam.comparisons)
    # two strata: the baseline of image i is the mean over the other images of its stratum
    strata = torch.arange(len(res)) % 2
    d = pse_vs_cam(res, cam_true, cam_target, top_fraction=0.25, n_perm=10, strata=strata)
    region = (cam_true > 0).flatten(1).double()
    energy = res.pixel_energy.flatten(1) * (group_type_map(res).flatten(1) == SUPPRESSION)
    share = (region @ energy.T) / energy.sum(1)  # [j, i]: image i's suppression energy in image j's region
    null = [float(share[(strata == strata[i]) & (torch.arange(len(res)) != i), i].mean()) for i in range(len(res))]
    assert float(d.true_cam.baseline_mean[SUPPRESSION]) == pytest.approx(sum(null) / len(null))
    assert d.true_cam.comparisons[SUPPRESSION].null == "same-class"


def test_pse_vs_cam_goes_through_the_hierarchy_of_nulls_of_the_engine():
    """Every null of spatial's co-location claims, from the same engine function (compare_to_nulls with the type's
    weight map as the attack map); the primary null fills the summary fields."""
    from advspatial.regions import top_fraction_mask
    from advspatial.statistics.inference import compare_to_nulls

    res, cam_true, cam_target = cam_case(n=16)
    strata = torch.arange(16) % 2
    composition = torch.linspace(0, 1, 16, dtype=torch.float64)
    out = pse_vs_cam(res, cam_true, cam_target, top_fraction=0.25, n_perm=40, seed=4, strata=strata,
                     composition=composition)
    tc = out.true_cam
    assert list(tc.by_null) == ["uniform", "any-class", "same-class", "object-conditioned"]
    assert out.primary_null == "same-class" and tc.comparisons == tc.by_null["same-class"]
    assert all(c.statistic == name for c, name in zip(tc.by_null["uniform"], TYPE_NAMES, strict=True))
    region = top_fraction_mask(cam_true, 0.25, 4).mask
    energy = (res.pixel_energy * (group_type_map(res) == SUPPRESSION)).float()
    direct = compare_to_nulls(cam_true, energy, region, energy > 0, strata, composition=composition,
                              statistics=("energy_in_roi",), n_permutations=40, seed=4)["energy_in_roi"]
    for null, c in direct.items():
        mine = tc.by_null[null][SUPPRESSION]
        assert (mine.excess, mine.p, mine.z, mine.n) == (c.excess, c.p, c.z, c.n), null
    assert set(out.as_dict()["true_cam"]["suppression"]["nulls"]) == set(tc.by_null)
    any_class = pse_vs_cam(res, cam_true, cam_target, top_fraction=0.25, n_perm=40, seed=4, strata=strata,
                           primary_null="any-class")
    assert any_class.true_cam.comparisons == any_class.true_cam.by_null["any-class"]
    assert "object-conditioned" not in any_class.true_cam.by_null  # no composition, no such null
    with pytest.raises(ConfigError, match="primary_null"):
        pse_vs_cam(res, cam_true, cam_target, n_perm=5, primary_null="object-conditioned")


def test_pse_vs_cam_p_is_two_sided_and_comes_from_the_engine():
    res, cam_true, cam_target = cam_case()
    # CAM_true on the *other* row block: suppression avoids the CAM region -> reversed, small p
    away = torch.flip(cam_true, dims=[1])
    out = pse_vs_cam(res, away, cam_target, top_fraction=0.25, n_perm=300, seed=1)
    tc = out.true_cam
    assert tc.observed[SUPPRESSION] == 0.0 and tc.baseline_mean[SUPPRESSION] > 0.2
    assert tc.p_value[SUPPRESSION] < 0.05
    comp = tc.comparisons[SUPPRESSION]
    assert comp.excess.high < 0 and comp.n == len(res) and comp.n_permutations == 300
    row = out.as_dict()["true_cam"]["suppression"]
    assert row["n"] == len(res) and row["excess"]["mean"] == pytest.approx(comp.excess.mean)
    assert out.as_dict()["alternative"] == "two-sided"


def test_pse_vs_cam_top_region_is_the_shared_rule():
    from advspatial.regions import top_fraction_mask

    res, cam_true, cam_target = cam_case(n=6)
    flat = torch.ones_like(cam_true)  # every pixel tied: the seeded tie-break decides
    ids = torch.tensor([40, 41, 42, 43, 44, 45])
    out = pse_vs_cam(res, flat, cam_target, top_fraction=0.25, n_perm=5, seed=2, sample_ids=ids)
    region = top_fraction_mask(flat, 0.25, 2, ids).mask.flatten(1).double()
    energy = res.pixel_energy.flatten(1) * (group_type_map(res).flatten(1) == SUPPRESSION)
    expected = (region * energy).sum(1) / energy.sum(1)
    torch.testing.assert_close(out.true_cam.per_image[:, SUPPRESSION], expected)


def test_top_region_ignores_zero_pixels():
    res, cam_true, cam_target = cam_case(n=2)
    # CAM_true has only 4 positive pixels: a 50% region still holds only those 4
    out = pse_vs_cam(res, cam_true, cam_target, top_fraction=0.5, n_perm=5)
    assert out.true_cam.observed[SUPPRESSION] == 1.0
    assert out.true_cam.observed[PROMOTION] == 0.0
    with pytest.raises(ShapeError):
        pse_vs_cam(res, cam_true[:, :3], cam_target)
    with pytest.raises(ConfigError):
        pse_vs_cam(res, cam_true, cam_target, top_fraction=0.0)


# -- controls of the typing ---------------------------------------------------------------------

@pytest.mark.parametrize("method", ["exact", "first_order"])
def test_leave_one_out_equals_isolated_on_a_linear_model(method):
    """On a linear model a group's effect does not depend on the others: both measurements agree with the hand
    formula, and both sum to the whole perturbation's effect."""
    model, weight, x, x_adv, y, t = random_case(3)
    iso = promotion_suppression(model, x, x_adv, y, t, block=2, method=method)
    loo = promotion_suppression(model, x, x_adv, y, t, block=2, method=method, variant="leave-one-out")
    s, p = linear_group_effects(weight, x, x_adv, y, t, iso.labels)
    for res in (iso, loo):
        torch.testing.assert_close(res.s, s)
        torch.testing.assert_close(res.p, p)
        torch.testing.assert_close(res.s.sum(1), res.s_total)
    assert loo.variant == "leave-one-out" and torch.equal(iso.types, loo.types)


def test_leave_one_out_differs_from_isolated_where_groups_interact():
    """z = relu(sum of two pixels - 1): each pixel alone does nothing, together they fire."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 1, bias=True), nn.ReLU(), nn.Linear(1, 2)).double().eval()
    with torch.no_grad():
        model[1].weight.fill_(1.0)
        model[1].bias.fill_(-1.0)
        model[3].weight.copy_(torch.tensor([[-1.0], [1.0]]))
        model[3].bias.zero_()
    x = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    x_adv = torch.full_like(x, 0.8)
    y, t = torch.tensor([0]), torch.tensor([1])
    iso = promotion_suppression(model, x, x_adv, y, t, block=1)
    loo = promotion_suppression(model, x, x_adv, y, t, block=1, variant="leave-one-out")
    assert torch.equal(iso.s, torch.zeros(1, 2)) and torch.equal(iso.p, torch.zeros(1, 2))
    torch.testing.assert_close(loo.p, torch.full((1, 2), 0.6, dtype=torch.float64))
    torch.testing.assert_close(loo.s, torch.full((1, 2), 0.6, dtype=torch.float64))


def test_noise_floor_leaves_tiny_groups_untyped_and_counts_them():
    from advspatial.analysis.pse_types import UNTYPED, retype

    weight = torch.zeros(2, 4, dtype=torch.float64)
    weight[0] = -1.0  # every pixel lowers the true class (suppression)
    model = linear_model(weight)
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    x_adv = torch.tensor([[[[1.0, 1e-4], [0.5, 0.0]]]], dtype=torch.float64)
    y, t = torch.tensor([0]), torch.tensor([1])
    floored = promotion_suppression(model, x, x_adv, y, t, block=1, noise_floor=0.01)
    assert floored.types[0].tolist() == [SUPPRESSION, UNTYPED, SUPPRESSION, UNPERTURBED]
    assert int(floored.untyped[0]) == 1 and float(floored.floor[0]) == pytest.approx(0.01 * (1.5 + 1e-4))
    assert floored.shares[0].tolist() == [1.0, 0.0, 0.0, 0.0]  # untyped energy carries no weight
    bare = promotion_suppression(model, x, x_adv, y, t, block=1, noise_floor=0.0)
    assert bare.types[0, 1] == SUPPRESSION and int(bare.untyped[0]) == 0
    assert torch.equal(retype(bare, noise_floor=0.01).types, floored.types)
    with pytest.raises(ConfigError):
        promotion_suppression(model, x, x_adv, y, t, block=1, noise_floor=-0.1)
    with pytest.raises(ConfigError):
        promotion_suppression(model, x, x_adv, y, t, block=1, variant="marginal")


def test_classify_groups_floor_is_per_element_broadcast():
    from advspatial.analysis.pse_types import UNTYPED

    s = torch.tensor([[0.5, 0.001], [0.5, 0.001]])
    p = torch.zeros(2, 2)
    types = classify_groups(s, p, 2.0, floor=torch.tensor([[0.01], [1.0]]))
    assert types.tolist() == [[SUPPRESSION, UNTYPED], [UNTYPED, UNTYPED]]


def test_secondary_view_types_towards_the_secondary_class():
    from advspatial.analysis.pse_types import retype, secondary_view

    model, weight, x, x_adv, y, t = random_case(5)
    t2 = (t + 1) % 4
    both = promotion_suppression(model, x, x_adv, y, t, block=2, secondary_target=t2, noise_floor=0.01)
    alone = promotion_suppression(model, x, x_adv, y, t2, block=2, noise_floor=0.01)
    view = secondary_view(both)
    torch.testing.assert_close(view.p, alone.p)
    torch.testing.assert_close(view.p_total, alone.p_total)
    assert torch.equal(view.types, alone.types) and torch.equal(view.target_class, t2)
    assert torch.equal(retype(both, kappa=both.kappa).types, both.types)
    with pytest.raises(ConfigError):
        secondary_view(alone)


@pytest.mark.parametrize("variant", ["isolated", "leave-one-out"])
@pytest.mark.parametrize("side,block", [(12, 2), (14, 4)])  # 14 = 3 whole squares of 4 and a cut edge
def test_incremental_pairs_equal_full_forward_passes_edges_included(variant, side, block):
    """The exact method's square groups by incremental evaluation give the full passes' s and p (to float
    summation order), the groups cut by an edge going through full passes."""
    from advspatial.models.cifar_resnet import cifar_resnet

    model = cifar_resnet(8).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, side, side, generator=gen)
    x_adv = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    y, t = torch.tensor([0, 1]), torch.tensor([2, 3])
    full = promotion_suppression(model, x, x_adv, y, t, block=block, variant=variant, incremental=False)
    fast = promotion_suppression(model, x, x_adv, y, t, block=block, variant=variant, incremental=True)
    torch.testing.assert_close(fast.s, full.s, atol=5e-5, rtol=1e-4)
    torch.testing.assert_close(fast.p, full.p, atol=5e-5, rtol=1e-4)
    assert float(full.s.abs().max()) > 1e-2  # the groups move the logits: a comparison with content


def test_incremental_auto_is_taken_on_a_cpu_for_square_groups_only(monkeypatch):
    from helpers import counted_block_pairs

    from advspatial.models.cifar_resnet import cifar_resnet

    calls = counted_block_pairs(monkeypatch)
    model = cifar_resnet(8).eval()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    x_adv, y = (x + 0.1).clamp(0, 1), torch.tensor([0])
    promotion_suppression(model, x, x_adv, y)
    assert calls == [16]  # the 16 squares of the 8x8 image, in one call
    promotion_suppression(model, x, x_adv, y, incremental=False)
    promotion_suppression(model, x, x_adv, y, groups=block_labels(8, 8, 2))
    assert calls == [16]
    with pytest.raises(ConfigError, match="incremental='yes' is not valid"):
        promotion_suppression(model, x, x_adv, y, incremental="yes")
