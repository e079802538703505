"""The locality controls: the context-matched sampler and the cluster bootstrap over images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.stats import bootstrap
from torch import nn

from advspatial.analysis.locality import cluster_bootstrap_rate, locality_analysis
from advspatial.analysis.locality_placements import context_maps, matched_variants, ring_offsets
from advspatial.statistics.accuracy import wilson_interval

# -- the context-matched sampler ---------------------------------------------------------------

def _reference_strata(image: np.ndarray, pattern: np.ndarray, edge_bins: int, intensity_bins: int):
    """Independent reference: offsets -> stratum of one image's k-pixel pattern (scipy filters, numpy quantiles)."""
    grey = image.mean(axis=0)
    edge = np.hypot(ndimage.sobel(grey, axis=0, mode="nearest"), ndimage.sobel(grey, axis=1, mode="nearest"))
    intensity = ndimage.uniform_filter(grey, size=3, mode="nearest")
    h, w = grey.shape
    offsets, scores = [], []
    for dr in range(-h, h):
        for dc in range(-w, w):
            moved = pattern + np.array([dr, dc])
            if (moved >= 0).all() and (moved[:, 0] < h).all() and (moved[:, 1] < w).all():
                offsets.append((dr, dc))
                scores.append((edge[moved[:, 0], moved[:, 1]].mean(), intensity[moved[:, 0], moved[:, 1]].mean()))
    scores = np.array(scores)

    def bins(values, n):
        cuts = np.quantile(values, np.arange(1, n) / n)
        return np.searchsorted(cuts, values, side="left")

    strata = bins(scores[:, 0], edge_bins) * intensity_bins + bins(scores[:, 1], intensity_bins)
    return dict(zip(offsets, strata.tolist(), strict=True))


@pytest.mark.parametrize("k,channels,seed", [(1, 1, 0), (1, 3, 1), (2, 1, 2), (3, 3, 3)])
def test_matched_sampler_returns_only_placements_of_the_ring_variants_stratum(k, channels, seed):
    gen = torch.Generator().manual_seed(seed)
    n, size, radii, draws = 3, 14, (1, 2), 5
    x = torch.rand(n, channels, size, size, generator=gen)
    x[:, :, :, : size // 2] = 0.0  # a flat dark half: many ties at the minimum
    pixels = torch.randint(3, size - 3, (n, k, 2), generator=gen)
    mv = matched_variants(x, pixels, radii, draws, seed=seed, edge_strata=3, intensity_strata=2)
    assert len(mv.image) > 0 and torch.equal(mv.stratum, mv.source_stratum)
    for i in range(n):
        ref = _reference_strata(x[i].double().numpy(), pixels[i].numpy(), 3, 2)
        mine = mv.image == i
        # every drawn placement: in the reference stratum of the ring variant it stands for, away from the attack
        for pos, off, src in zip(mv.positions[mine], mv.offset[mine], mv.source_stratum[mine], strict=True):
            assert torch.equal(pos, pixels[i] + off)
            assert ref[tuple(off.tolist())] == int(src)
            assert off.abs().max() > max(radii)
        # every ring variant inside the image whose stratum has a far placement got `draws` of them, in ring order
        eligible = {s for o, s in ref.items() if max(abs(o[0]), abs(o[1])) > max(radii)}
        expected = []
        for r in radii:
            for o in ring_offsets(r).tolist():
                if tuple(o) in ref and ref[tuple(o)] in eligible:
                    expected += [ref[tuple(o)]] * draws
        assert mv.source_stratum[mine].tolist() == expected


def test_matched_draws_are_keyed_by_sample_id():
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(4, 1, 12, 12, generator=gen)
    pixels = torch.randint(2, 10, (4, 1, 2), generator=gen)
    ids = torch.tensor([10, 11, 12, 13])
    all_ = matched_variants(x, pixels, (1,), 3, seed=7, sample_ids=ids)
    alone = matched_variants(x[2:3], pixels[2:3], (1,), 3, seed=7, sample_ids=ids[2:3])
    assert torch.equal(all_.positions[all_.image == 2], alone.positions)
    other_seed = matched_variants(x[2:3], pixels[2:3], (1,), 3, seed=8, sample_ids=ids[2:3])
    assert not torch.equal(other_seed.positions, alone.positions)


class EdgeDetector(nn.Module):
    """Fooled (class 1) by a mid-grey pixel anywhere on the two edge columns 9 and 10 -- vulnerability is a
    property of the *context* (the edge), not of the distance to an attack pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 0.1 - (x[:, 0, :, 9:11] - 0.5).abs().flatten(1).amin(dim=1)
        return torch.stack((torch.zeros_like(s), s), dim=1)


def test_matched_control_tells_edge_vulnerability_from_locality():
    # left half dark, right half bright: a vertical edge on columns 9/10; the attack puts 0.5 on column 9
    n, size = 40, 20
    x = torch.zeros(n, 1, size, size)
    x[:, :, :, 10:] = 1.0
    y = torch.zeros(n, dtype=torch.long)
    rows = torch.arange(n) % 12 + 4
    pixels = torch.stack((rows, torch.full((n,), 9)), dim=1)
    colours = torch.full((n, 1), 0.5)
    res = locality_analysis(EdgeDetector(), x, y, pixels, colours, radii=(1, 2, 3), n_random=100, matched_draws=4)
    ring = res.ring_successes[:, 0].double() / res.ring_counts[:, 0]
    matched = res.matched_successes[:, 0].double() / res.matched_counts[:, 0]
    uniform = res.random_successes.double() / res.random_counts
    # columns 9 and 10 of the 3x3 ring fool, column 8 does not
    assert torch.allclose(ring, torch.full((n,), 5 / 8, dtype=torch.float64))
    # the matched control lands on the same kind of pixel: it fools exactly as often, so no "locality" is claimed
    assert torch.allclose(matched, ring)
    # the uniform control mostly lands on flat background: against it, the edge looks like locality
    assert (ring - uniform).mean() > 0.4
    edge = res.context["edge"]
    assert torch.allclose(edge["matched_1"], edge["ring_1"]) and (edge["random"] < edge["ring_1"]).all()


# -- the cluster bootstrap -----------------------------------------------------------------

def test_cluster_bootstrap_is_wider_than_wilson_on_clustered_data():
    rng = np.random.default_rng(0)
    images, trials = 60, 50
    p = np.where(rng.random(images) < 0.5, 0.9, 0.05)  # easy and hard images
    successes = rng.binomial(trials, p)
    est = cluster_bootstrap_rate(successes, np.full(images, trials), seed=0)
    wilson = wilson_interval(int(successes.sum()), images * trials)
    low, high = wilson.low, wilson.high
    assert est.low <= est.rate <= est.high and low <= est.rate <= high
    assert (est.high - est.low) > 3 * (high - low)
    # independent trials (every image alike): the two agree
    flat = rng.binomial(trials, np.full(images, 0.4))
    est = cluster_bootstrap_rate(flat, np.full(images, trials), seed=0)
    wilson = wilson_interval(int(flat.sum()), images * trials)
    low, high = wilson.low, wilson.high
    assert (est.high - est.low) == pytest.approx(high - low, rel=0.25)


def test_cluster_bootstrap_matches_scipy_on_a_known_example():
    successes = np.array([3, 0, 7, 10, 1, 4, 9, 2, 0, 6])
    trials = np.array([10, 8, 10, 12, 9, 10, 10, 11, 7, 10])
    est = cluster_bootstrap_rate(successes, trials, seed=1, resamples=40_000)
    ref = bootstrap((successes, trials), lambda s, n: s.sum() / n.sum(), paired=True, vectorized=False,
                    method="percentile", n_resamples=40_000, random_state=np.random.default_rng(2))
    assert est.rate == pytest.approx(successes.sum() / trials.sum())
    assert est.low == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert est.high == pytest.approx(ref.confidence_interval.high, abs=0.01)
    assert (est.successes, est.trials, est.images) == (42, 97, 10)


def test_cluster_bootstrap_edge_cases():
    assert np.isnan(cluster_bootstrap_rate([], []).rate)
    one = cluster_bootstrap_rate([2, 0], [5, 0])  # the image without trials is left out
    assert (one.rate, one.low, one.high, one.images) == (0.4, 0.4, 0.4, 1)
    with pytest.raises(Exception, match="successes"):
        cluster_bootstrap_rate([3], [2])
    assert cluster_bootstrap_rate([1, 2, 3], [4, 4, 4], seed=3) == cluster_bootstrap_rate([1, 2, 3], [4, 4, 4], seed=3)


def test_context_maps_of_a_flat_image_and_an_edge():
    x = torch.zeros(1, 3, 6, 6)
    edge, intensity = context_maps(x)
    assert edge.abs().max() == 0 and intensity.abs().max() == 0
    x[:, :, :, 3:] = 1.0
    edge, intensity = context_maps(x)
    assert (edge[0, :, 2] > 0).all() and (edge[0, :, 3] > 0).all() and edge[0, :, [0, 5]].abs().max() == 0
    assert intensity[0, 0, 2] == pytest.approx(1 / 3) and intensity[0, 0, 5] == pytest.approx(1.0)
