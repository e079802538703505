"""ROAD's linear imputation: the batched block-diagonal solve against a plain per-image reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.regions.imputation import _dissection_rank, linear_imputation
from advspatial.regions.road_stencil import ROAD_NEIGHBOURS

REGION_KINDS = ("random", "empty", "full", "single", "border")


def _reference_system(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's dense ``(unknown, A, B)``: A on the region pixels, B their couplings to the known pixels."""
    h, w = mask.shape
    unknown = np.flatnonzero(mask.reshape(-1))
    position = {int(p): i for i, p in enumerate(unknown)}
    a = np.zeros((unknown.size, unknown.size))
    b = np.zeros((unknown.size, h * w))
    for i, p in enumerate(unknown):
        r, c = divmod(int(p), w)
        for dr, dc, weight in ROAD_NEIGHBOURS:
            rr, cc = r + dr, c + dc
            if not (0 <= rr < h and 0 <= cc < w):
                continue
            a[i, i] -= weight
            q = rr * w + cc
            if q in position:
                a[i, position[q]] = weight
            else:
                b[i, q] = weight
    return unknown, a, b


def _reference(x: np.ndarray, region: np.ndarray, grad_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the imputed images ``u = solve(A, -B x)`` and the gradient of ``sum(out * grad_out)``.

    Known pixels pass through (gradient 1); a region covering the image is filled with 0 (gradient 0).
    """
    out, grad = x.copy(), np.zeros_like(x)
    for n in range(x.shape[0]):
        c, h, w = x[n].shape
        image, g = x[n].reshape(c, h * w).T, grad_out[n].reshape(c, h * w).T
        unknown, a, b = _reference_system(region[n])
        known = ~region[n].reshape(-1)
        grad_n = np.zeros_like(image)
        grad_n[known] = g[known]
        values = np.zeros((unknown.size, c))
        if 0 < unknown.size < h * w:
            values = np.linalg.solve(a, -b @ image)
            grad_n -= b.T @ np.linalg.solve(a.T, g[unknown])
        out_n = image.copy()
        out_n[unknown] = values
        out[n], grad[n] = out_n.T.reshape(c, h, w), grad_n.T.reshape(c, h, w)
    return out, grad


def _region(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An (H,W) region of the given kind: random density, empty, full, one pixel, or the image's border."""
    if kind == "random":
        return rng.random((h, w)) < rng.uniform(0.05, 0.95)
    mask = np.zeros((h, w), dtype=bool)
    if kind == "full":
        mask[:] = True
    elif kind == "single":
        mask[rng.integers(h), rng.integers(w)] = True
    elif kind == "border":
        mask[[0, -1], :] = True
        mask[:, [0, -1]] = True
    return mask


@pytest.mark.parametrize("solver,tolerance", [("exact", 1e-10), ("iterative", 1e-8)])
@settings(max_examples=40, deadline=None)
@given(kinds=st.lists(st.sampled_from(REGION_KINDS), min_size=1, max_size=5), c=st.sampled_from([1, 3]),
       h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 10_000))
def test_batched_imputation_equals_the_per_image_reference(solver, tolerance, kinds, c, h, w, seed):
    """Values and gradients of the whole batch equal the per-image dense solves: the LU to float64 round-off, the
    device's conjugate gradients (:mod:`advspatial.regions.imputation_iterative`) to its stated 1e-8."""
    rng = np.random.default_rng(seed)
    x_np = rng.random((len(kinds), c, h, w))
    region_np = np.stack([_region(kind, h, w, rng) for kind in kinds])
    grad_out = rng.standard_normal(x_np.shape)
    ref_out, ref_grad = _reference(x_np, region_np, grad_out)

    x = torch.tensor(x_np, requires_grad=True)
    out = linear_imputation(x, torch.tensor(region_np), solver=solver)
    (grad,) = torch.autograd.grad(out, x, torch.tensor(grad_out))
    np.testing.assert_allclose(out.detach().numpy(), ref_out, atol=tolerance, rtol=0)
    np.testing.assert_allclose(grad.numpy(), ref_grad, atol=tolerance, rtol=0)
    outside = ~region_np[:, None].repeat(c, axis=1)
    assert np.array_equal(out.detach().numpy()[outside], x_np[outside])  # known pixels bit for bit


def test_edge_cases_empty_full_and_float32():
    """An empty region returns the image; a full one gives 0 with gradient 0; float32 in, float32 out."""
    x = torch.rand(3, 2, 5, 6)
    region = torch.zeros(3, 5, 6, dtype=torch.bool)
    region[1] = True
    region[2, 2, 3] = True
    out = linear_imputation(x, region)
    assert out.dtype == torch.float32
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], torch.zeros_like(x[1]))
    x64 = x.double().requires_grad_(True)
    (grad,) = torch.autograd.grad(linear_imputation(x64, region).sum(), x64)
    assert torch.equal(grad[0], torch.ones_like(grad[0])) and torch.equal(grad[1], torch.zeros_like(grad[1]))


@pytest.mark.parametrize("h,w,p", [(8, 7, 0.4), (28, 28, 0.2), (30, 23, 0.9)])
def test_batch_equals_each_image_alone_bit_for_bit(h, w, p):
    """Each image's block is factorized in a fixed order: alone, in a batch or in another order, the same bits."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(5, 3, h, w, generator=gen, dtype=torch.float64)
    region = torch.rand(5, h, w, generator=gen) < p
    region[1] = True
    region[3] = False
    batched = linear_imputation(x, region)
    for i in range(5):
        assert torch.equal(linear_imputation(x[i:i + 1], region[i:i + 1]), batched[i:i + 1])
    reverse = torch.arange(4, -1, -1)
    assert torch.equal(linear_imputation(x[reverse], region[reverse]), batched[reverse])


@pytest.mark.parametrize("h", [1, 2, 3, 5, 16, 28, 33])
@pytest.mark.parametrize("w", [1, 4, 7, 28, 40])
def test_dissection_rank_is_a_permutation_of_the_pixels(h, w):
    rank = _dissection_rank(h, w)
    assert rank.shape == (h * w,) and np.array_equal(np.sort(rank), np.arange(h * w))


def test_gradcheck_on_a_tiny_batch():
    """The backward (the transposed block-diagonal solve plus the pass-through of known pixels) is the Jacobian."""
    rng = np.random.default_rng(5)
    region = torch.tensor(np.stack([_region(kind, 4, 5, rng) for kind in REGION_KINDS]))
    x = torch.rand(len(REGION_KINDS), 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: linear_imputation(t, region), (x,), atol=1e-8)


def test_chunks_of_a_large_batch_give_the_same_fill_and_gradient(monkeypatch):
    from advspatial.regions import imputation

    gen = torch.Generator().manual_seed(8)
    x = torch.rand(5, 2, 7, 9, generator=gen, dtype=torch.float64)
    region = torch.rand(5, 7, 9, generator=gen) < 0.4
    a = x.clone().requires_grad_()
    whole = imputation.linear_imputation(a, region)
    whole.sum().backward()
    monkeypatch.setattr(imputation, "_IMPUTATION_CHUNK", 30)  # ~1-2 images per chunk
    assert len(imputation._image_chunks(region.numpy())) > 2
    b = x.clone().requires_grad_()
    chunked = imputation.linear_imputation(b, region)
    chunked.sum().backward()
    assert torch.equal(whole, chunked) and torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("empty", [False, True])
def test_a_road_fill_reads_the_host_once_the_region_riding_with_the_pixels(empty: bool) -> None:
    """The solver runs on the host: one read of the images with the region as one more channel (a GPU waits once),
    none to ask first whether the region is empty (an empty one comes back unchanged from the solver's own read),
    and none for its noise (keyed, made on the device); its backward reads the gradient once for every chunk."""
    from advspatial.host_syncs import counting
    from advspatial.regions.fills import fill

    x = torch.rand(3, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    region = torch.zeros(3, 6, 6, dtype=torch.bool)
    if not empty:
        region[:, 2:4, 1:3] = True
    reads: list[int] = []
    with counting(lambda: reads.append(1)):
        out = fill(x, region, "road", sample_ids=torch.arange(3))
    assert len(reads) == 1
    assert torch.equal(out[~region[:, None].expand_as(x)], x[~region[:, None].expand_as(x)])
    assert torch.equal(out, x) == empty
    a = x.clone().requires_grad_()
    with counting(lambda: reads.append(1)):
        linear_imputation(a, region).sum().backward()
    assert len(reads) == 1 + 2 and a.grad is not None
