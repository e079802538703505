"""Typing stability: agreement and Cohen's kappa known answers, streaming confusion, SLIC superpixels."""

from __future__ import annotations

import math

import pytest
import torch

from advspatial.experiments.pse import stability as stab
from advspatial.errors import ConfigError, ShapeError


def test_cohen_kappa_known_answers():
    a = torch.tensor([0, 0, 1, 1])
    assert stab.cohen_kappa(a, a) == 1.0
    assert stab.cohen_kappa(a, torch.tensor([1, 1, 0, 0])) == -1.0
    # observed 0.5, chance 0.5 (both use 0 and 1 half the time): kappa 0
    assert stab.cohen_kappa(a, torch.tensor([0, 1, 0, 1])) == 0.0
    # one shared single type: chance agreement is already 1, kappa undefined
    assert math.isnan(stab.cohen_kappa(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)))


def test_agreement_skips_untyped_and_unperturbed_elements():
    a = torch.tensor([0, 1, -2, 2, -1])
    b = torch.tensor([0, 2, 1, 2, 3])
    agree = stab.typing_agreement(a, b)
    assert agree.n == 3 and agree.fraction == pytest.approx(2 / 3)
    keep = torch.tensor([True, True, True, False, True])
    assert stab.typing_agreement(a, b, keep).n == 2


def test_confusion_of_batches_adds_up_to_the_whole():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-2, 4, (50,), generator=g)
    b = torch.randint(-2, 4, (50,), generator=g)
    whole = stab.confusion(a, b)
    parts = stab.confusion(a[:20], b[:20]) + stab.confusion(a[20:], b[20:])
    assert torch.equal(whole, parts)
    assert stab.agreement_from_confusion(parts) == stab.typing_agreement(a, b)
    with pytest.raises(ShapeError):
        stab.confusion(a, b[:3])
    with pytest.raises(ConfigError):
        stab.confusion(torch.tensor([4]), torch.tensor([0]))


@pytest.mark.skipif(not stab.superpixels_available(), reason="scikit-image is not installed")
def test_superpixels_cover_every_pixel_with_consecutive_labels():
    x = torch.zeros(2, 1, 16, 16)
    x[:, :, :, 8:] = 1.0  # two flat halves
    labels = stab.superpixel_labels(x, segments=4)
    assert labels.shape == (2, 16, 16) and labels.dtype == torch.int64
    for img in labels:
        assert torch.equal(img.unique(), torch.arange(int(img.max()) + 1))
        assert (img[:, :8].unique()[:, None] != img[:, 8:].unique()[None, :]).all()  # no segment crosses the edge
    with pytest.raises(ShapeError):
        stab.superpixel_labels(torch.zeros(16, 16))


def test_superpixels_without_scikit_image_is_a_one_line_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_skimage(name, *args, **kwargs):
        if name.startswith("skimage"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_skimage)
    with pytest.raises(ConfigError, match="pip install scikit-image"):
        stab.superpixel_labels(torch.zeros(1, 1, 8, 8))
