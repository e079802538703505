"""Fills: exact values, SciPy cross-check of the blur, inpainting known answers, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter

from advspatial.regions.fills import diffusion_inpaint, fill, gaussian_blur, list_fills, make_fill, put_back
from advspatial.errors import ConfigError, ShapeError
from advspatial.runtime import per_sample_noise


def _batch(seed: int, n: int = 3, c: int = 2, h: int = 9, w: int = 7, p: float = 0.4):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=gen, dtype=torch.float64)
    region = torch.rand(n, h, w, generator=gen) < p
    return x, region


def test_registry_lists_the_fills():
    assert list_fills() == ["blur", "inpaint", "mean", "road", "zero"]


@pytest.mark.parametrize("kind", ["zero", "mean", "blur", "inpaint", "road"])
def test_outside_the_region_is_unchanged_bit_for_bit(kind):
    x, region = _batch(1)
    out = fill(x, region, kind, dataset_mean=[0.2, 0.7])
    outside = ~region[:, None].expand_as(x)
    assert torch.equal(out[outside], x[outside])
    assert out.shape == x.shape and out.dtype == x.dtype


def test_zero_and_mean_fill_exact_values():
    x, region = _batch(2)
    inside = region[:, None].expand_as(x)
    zero = fill(x, region, "zero")
    assert bool((zero[inside] == 0).all())
    mean = fill(x, region, "mean", dataset_mean=torch.tensor([0.25, 0.75]))
    assert bool((mean[:, 0][region] == 0.25).all()) and bool((mean[:, 1][region] == 0.75).all())


def test_empty_region_returns_the_images():
    x, _ = _batch(3)
    empty = torch.zeros(x.shape[0], *x.shape[2:], dtype=torch.bool)
    for kind in list_fills():
        assert torch.equal(fill(x, empty, kind, dataset_mean=[0.0, 0.0]), x)


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), sigma=st.floats(0.3, 4.0), truncate=st.sampled_from([2.0, 4.0]),
       seed=st.integers(0, 1000))
def test_blur_matches_scipy_gaussian_filter(h, w, sigma, truncate, seed):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ref = gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="reflect", truncate=truncate)
    np.testing.assert_allclose(gaussian_blur(x, sigma, truncate).numpy(), ref, atol=1e-10)
    # the blur fill takes exactly these values inside the region (float32 too)
    region = torch.ones(2, h, w, dtype=torch.bool)
    out = fill(x.float(), region, "blur", sigma=sigma, truncate=truncate)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)


def test_inpaint_keeps_a_constant_image_constant():
    x = torch.full((2, 3, 10, 10), 0.37, dtype=torch.float64)
    _, region = _batch(4, n=2, h=10, w=10, p=0.6)
    out = fill(x, region, "inpaint")
    assert torch.allclose(out, x, atol=1e-12)


@pytest.mark.parametrize("axis", [2, 3])
def test_inpaint_reproduces_a_linear_ramp_in_a_hole(axis):
    h = 20
    ramp = torch.linspace(0, 1, h, dtype=torch.float64)
    x = (ramp.view(1, 1, 1, h) if axis == 3 else ramp.view(1, 1, h, 1)).expand(2, 1, h, h).clone()
    region = torch.zeros(2, h, h, dtype=torch.bool)
    region[0, 5:15, 4:12] = True     # an interior hole
    region[1, :, 4:12] = True        # a band across the ramp, touching two borders where its slope is 0
    if axis == 2:
        region[1] = region[1].T.clone()
    out = fill(x, region, "inpaint", iterations=3000, tol=1e-9)
    assert float((out - x).abs().max()) < 1e-4
    # the hole's values were not used: a different start inside gives the same result
    noisy = torch.where(region[:, None], torch.rand_like(x), x)
    assert torch.allclose(fill(noisy, region, "inpaint", iterations=3000, tol=1e-9), out, atol=1e-12)


def test_inpaint_batch_equals_each_image_alone():
    x, region = _batch(5, n=4, h=12, w=12, p=0.5)
    region[2] = False
    region[3, 2:10, 2:10] = True     # a big hole needs more sweeps than the others
    batched = diffusion_inpaint(x, region, 500, 1e-6)
    for i in range(4):
        alone = diffusion_inpaint(x[i : i + 1], region[i : i + 1], 500, 1e-6)
        assert torch.equal(batched[i : i + 1], alone)


def test_inpaint_with_no_known_pixel_is_finite():
    x = torch.rand(1, 1, 4, 4)
    out = fill(x, torch.ones(1, 4, 4, dtype=torch.bool), "inpaint")
    assert torch.equal(out, torch.zeros_like(x))


@pytest.mark.parametrize("kind", ["zero", "mean", "blur", "inpaint", "road"])
def test_gradients_flow_from_outside_only_as_documented(kind):
    x, region = _batch(6, n=2, c=1, h=8, w=8, p=0.3)
    x.requires_grad_(True)
    out = fill(x, region, kind, dataset_mean=[0.5])
    weights = torch.rand(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    outside = ~region[:, None]
    if kind in ("zero", "mean", "inpaint", "road"):
        # nothing inside the region is read (inpaint starts from the known pixels' mean)
        assert bool((grad[region[:, None]] == 0).all())
    if kind in ("zero", "mean"):
        assert torch.equal(grad[outside], weights[outside])
    else:
        # blur/inpaint content depends on known pixels: gradient differs from the identity
        assert not torch.equal(grad[outside], weights[outside])


def test_put_back_takes_the_source_inside_the_region():
    x, region = _batch(7)
    source = torch.rand_like(x)
    out = put_back(x, region, source)
    mask = region[:, None].expand_as(x)
    assert torch.equal(out[mask], source[mask]) and torch.equal(out[~mask], x[~mask])


def test_errors_name_what_is_valid():
    x, region = _batch(8)
    with pytest.raises(ConfigError, match="valid: blur, inpaint, mean, road, zero"):
        fill(x, region, "median")
    with pytest.raises(ConfigError, match="dataset_mean"):
        fill(x, region, "mean")
    with pytest.raises(ShapeError, match="channels"):
        fill(x, region, "mean", dataset_mean=[0.1, 0.2, 0.3])
    with pytest.raises(ShapeError, match="region must have shape"):
        fill(x, region[:, :-1], "zero")
    with pytest.raises(ShapeError, match="bool"):
        fill(x, region.float(), "zero")
    with pytest.raises(ConfigError, match="sigma"):
        fill(x, region, "blur", sigma=0)
    with pytest.raises(ConfigError, match="no parameter"):
        make_fill("blur", radius=3)
    with pytest.raises(ConfigError, match="dataset_mean"):
        make_fill("mean")
    with pytest.raises(ConfigError, match="noise"):
        fill(x, region, "road", noise=-0.1)
    with pytest.raises(ConfigError, match="no parameter"):
        make_fill("road", sample_ids=[0, 1, 2])   # per batch: passed at call time
    with pytest.raises(ShapeError, match="sample_ids"):
        fill(x, region, "road", sample_ids=[0, 1])


def test_make_fill_binds_parameters():
    x, region = _batch(9)
    bound = make_fill("blur", sigma=2.0)
    assert torch.equal(bound(x, region), fill(x, region, "blur", sigma=2.0))


# -- road: noisy linear imputation (Rong et al., 2022) ------------------------------------

def _quantus_imputation(x: torch.Tensor, region: torch.Tensor, noise: float = 0.0) -> np.ndarray:
    """Quantus 0.6's ``noisy_linear_imputation`` of each image (indices = the region's flat pixel ids)."""
    from quantus.functions.perturb_func import noisy_linear_imputation as quantus_nli

    return np.stack([quantus_nli(x[i].numpy(), np.flatnonzero(region[i].numpy().reshape(-1)), noise=noise)
                     for i in range(x.shape[0])])


@pytest.mark.parametrize("c,h,w,p", [(1, 12, 12, 0.3), (3, 9, 13, 0.5), (2, 16, 10, 0.9), (1, 8, 8, 0.05)])
def test_road_exact_imputation_equals_quantus(c, h, w, p):
    """noise=0: our sparse solve equals Quantus' (its 8-neighbour weights, its border rule) to 1e-5."""
    x, region = _batch(11, n=3, c=c, h=h, w=w, p=p)
    x = x.float()
    region[0, 0, 0] = region[0, -1, -1] = True          # corners and edges are imputed too
    ours = fill(x, region, "road", noise=0.0)
    np.testing.assert_allclose(ours.numpy(), _quantus_imputation(x, region), atol=1e-5, rtol=0)
    # a wrong neighbour rule (4-neighbour diffusion) is far from it: the comparison can fail
    assert np.abs(fill(x, region, "inpaint", tol=1e-9, iterations=5000).numpy()
                  - _quantus_imputation(x, region)).max() > 1e-3


def test_road_with_the_same_noise_equals_quantus(monkeypatch):
    """Quantus fed our noise (its ``np.random.randn`` returns our draws at its pixels) gives our fill to 1e-5."""
    x, region = _batch(12, n=3, c=3, h=10, w=11, p=0.4)
    x = x.float()
    ids = torch.tensor([5, 900, 17])
    ours = fill(x, region, "road", noise=0.05, seed=3, sample_ids=ids)
    eps = per_sample_noise(x.shape, 3, ids, "normal").numpy().reshape(3, 3, -1)
    for i in range(3):
        idx = np.flatnonzero(region[i].numpy().reshape(-1))
        monkeypatch.setattr(np.random, "randn", lambda *shape, i=i, idx=idx: eps[i][:, idx])
        from quantus.functions.perturb_func import noisy_linear_imputation as quantus_nli

        ref = quantus_nli(x[i].numpy(), idx, noise=0.05)
        np.testing.assert_allclose(ours[i].numpy(), ref, atol=1e-5, rtol=0)


def test_road_noise_is_gaussian_with_the_stated_sd_and_keyed_by_sample_id():
    """The fill minus the exact imputation is N(0, noise^2) on the region, 0 outside; batch = images alone."""
    from scipy.stats import kstest

    x, region = _batch(13, n=6, c=3, h=20, w=20, p=0.5)
    ids = torch.tensor([3, 1, 4, 1000, 5, 9])
    noisy = fill(x, region, "road", noise=0.01, seed=7, sample_ids=ids)
    exact = fill(x, region, "road", noise=0.0)
    inside = region[:, None].expand_as(x)
    z = ((noisy - exact)[inside] / 0.01).numpy()
    assert kstest(z, "norm").pvalue > 1e-3 and abs(z.std() - 1) < 0.05
    assert torch.equal(noisy[~inside], x[~inside])
    for i in range(6):
        alone = fill(x[i:i + 1], region[i:i + 1], "road", noise=0.01, seed=7, sample_ids=ids[i:i + 1])
        assert torch.equal(alone[0], noisy[i])
    assert not torch.equal(fill(x, region, "road", seed=8, sample_ids=ids), noisy)
    bound = make_fill("road", noise=0.01, seed=7)
    assert torch.equal(bound(x, region, sample_ids=ids), noisy)


def test_road_known_answers():
    """A linear ramp is reproduced exactly in an interior hole (the weighted neighbour mean of a plane); a
    constant image stays constant; a region covering the image is filled with 0 (no pixel to impute from)."""
    ramp = torch.arange(12, dtype=torch.float64).view(1, 1, 1, 12).expand(1, 2, 10, 12).clone()
    hole = torch.zeros(1, 10, 12, dtype=torch.bool)
    hole[0, 2:8, 3:9] = True
    torch.testing.assert_close(fill(ramp, hole, "road", noise=0.0), ramp, atol=1e-10, rtol=0)
    const = torch.full((1, 1, 7, 7), 0.3, dtype=torch.float64)
    spots = torch.rand(1, 7, 7, generator=torch.Generator().manual_seed(0)) < 0.6
    torch.testing.assert_close(fill(const, spots, "road", noise=0.0), const, atol=1e-10, rtol=0)
    full = torch.ones(1, 7, 7, dtype=torch.bool)
    assert torch.equal(fill(const, full, "road", noise=0.0), torch.zeros_like(const))


def test_road_gradient_matches_finite_differences():
    x, region = _batch(14, n=2, c=2, h=6, w=7, p=0.4)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: fill(t, region, "road", noise=0.0), (x,), atol=1e-8)
