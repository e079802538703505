"""SSIM in torch against scikit-image (the reference), plus its own properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import structural_similarity

from advspatial.analysis.ssim import default_win_size, ssim, ssim_map
from advspatial.regions.fills import gaussian_kernel1d
from advspatial.errors import ConfigError, ShapeError

TOL = 1e-4  # required agreement with skimage; float64 inputs in fact agree to ~1e-12


def skimage_ssim(a: np.ndarray, b: np.ndarray, **kwargs) -> tuple[float, np.ndarray]:
    """skimage's mean SSIM and channel-mean full map of one (C,H,W) pair, standard settings."""
    opts = dict(data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
    opts.update(kwargs)
    if a.shape[0] == 1:
        mean, full = structural_similarity(a[0], b[0], **opts)
        return float(mean), full
    mean, full = structural_similarity(a, b, channel_axis=0, **opts)
    return float(mean), full.mean(axis=0)


def random_pair(seed: int, shape: tuple[int, ...], noise: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    b = np.clip(a + noise * rng.standard_normal(shape), 0.0, 1.0)
    return a, b


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    channels=st.sampled_from([1, 3]),
    height=st.integers(11, 33),
    width=st.integers(11, 33),
    noise=st.floats(0.0, 0.5),
)
def test_matches_skimage_mean_and_full_map(seed, channels, height, width, noise):
    a, b = random_pair(seed, (channels, height, width), noise)
    ref_mean, ref_map = skimage_ssim(a, b)
    x, y = torch.from_numpy(a)[None], torch.from_numpy(b)[None]
    assert abs(float(ssim(x, y)[0]) - ref_mean) < TOL
    assert np.abs(ssim_map(x, y)[0].numpy() - ref_map).max() < TOL


def test_float32_matches_skimage():
    a, b = random_pair(1, (3, 20, 24), 0.2)
    ref_mean, ref_map = skimage_ssim(a, b)
    x, y = torch.from_numpy(a).float()[None], torch.from_numpy(b).float()[None]
    assert abs(float(ssim(x, y)[0]) - ref_mean) < TOL
    assert np.abs(ssim_map(x, y)[0].numpy() - ref_map).max() < TOL


def test_uniform_window_matches_skimage():
    a, b = random_pair(2, (1, 15, 19), 0.3)
    ref_mean, ref_map = skimage_ssim(a, b, gaussian_weights=False, win_size=7)
    x, y = torch.from_numpy(a)[None], torch.from_numpy(b)[None]
    assert abs(float(ssim(x, y, gaussian=False)[0]) - ref_mean) < TOL
    assert np.abs(ssim_map(x, y, gaussian=False)[0].numpy() - ref_map).max() < TOL


def test_fashion_mnist_pairs_match_skimage(fmnist_test_subset):
    images, _ = fmnist_test_subset
    x = images[:12].double()
    gen = torch.Generator().manual_seed(0)
    pairs = [
        torch.roll(images[12:24].double(), 0),  # different garments
        (x + 0.1 * torch.randn(x.shape, generator=gen, dtype=x.dtype)).clamp(0, 1),  # noisy copy
        torch.roll(x, shifts=1, dims=3),  # shifted copy
    ]
    for y in pairs:
        ours_mean, ours_map = ssim(x, y), ssim_map(x, y)  # batched: all 12 at once
        for i in range(len(x)):
            ref_mean, ref_map = skimage_ssim(x[i].numpy(), y[i].numpy())
            assert abs(float(ours_mean[i]) - ref_mean) < TOL
            assert np.abs(ours_map[i].numpy() - ref_map).max() < TOL


def test_default_window_is_skimage_11_taps():
    assert default_win_size(1.5) == 11
    assert default_win_size(1.5, gaussian=False) == 7
    kernel = gaussian_kernel1d(1.5, radius=5, dtype=torch.float64)
    assert kernel.shape == (11,)
    assert torch.isclose(kernel.sum(), torch.tensor(1.0, dtype=kernel.dtype))
    assert torch.equal(kernel, kernel.flip(0))


def test_identical_images_score_one_and_symmetry():
    a, b = random_pair(3, (2, 3, 16, 16), 0.2)
    x, y = torch.from_numpy(a), torch.from_numpy(b)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=x.dtype))
    assert torch.allclose(ssim_map(x, x), torch.ones(2, 16, 16, dtype=x.dtype))
    assert torch.allclose(ssim(x, y), ssim(y, x))
    assert (ssim(x, y) < 0.99).all()


def test_batch_equals_single_and_per_channel_shapes():
    a, b = random_pair(4, (3, 2, 14, 12), 0.2)
    x, y = torch.from_numpy(a), torch.from_numpy(b)
    batched = ssim(x, y)
    singles = torch.cat([ssim(x[i : i + 1], y[i : i + 1]) for i in range(3)])
    assert torch.allclose(batched, singles, atol=1e-12)
    per_chan = ssim(x, y, per_channel=True)
    assert per_chan.shape == (3, 2)
    assert torch.allclose(per_chan.mean(1), batched)
    assert ssim_map(x, y, per_channel=True).shape == (3, 2, 14, 12)
    assert ssim_map(x, y).shape == (3, 14, 12)


def test_gradient_is_correct_and_vanishes_at_identity():
    a, b = random_pair(5, (1, 1, 11, 11), 0.2)
    x = torch.from_numpy(a)
    y = torch.from_numpy(b).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: ssim(x, t), (y,), eps=1e-6, atol=1e-6, fast_mode=True)
    same = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(ssim(x, same).sum(), same)
    assert grad.abs().max() < 1e-8  # SSIM is maximal (= 1) at y = x


def test_map_works_on_images_smaller_than_window_but_score_refuses():
    x = torch.rand(1, 1, 6, 9, dtype=torch.float64)
    assert ssim_map(x, x).shape == (1, 6, 9)  # reflection extends any axis length
    with pytest.raises(ShapeError, match="smaller than the SSIM window"):
        ssim(x, x)


def test_bad_arguments_raise_user_errors():
    x = torch.rand(1, 1, 12, 12)
    with pytest.raises(ShapeError):
        ssim(x, torch.rand(1, 1, 12, 13))
    with pytest.raises(ShapeError):
        ssim_map(x[0], x[0])
    with pytest.raises(ShapeError, match="odd"):
        ssim_map(x, x, win_size=4)
    with pytest.raises(ConfigError):
        ssim_map(x, x, data_range=0)
    with pytest.raises(ConfigError):
        ssim_map(x, x, sigma=-1.0)
