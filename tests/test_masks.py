"""Tests of localized-attack masks and of localized adversarial training (METHODS §4).

Masks: shapes, binary values, alignment with the dataset index (slice or
tensor), the background/foreground partition, Grad-CAM roi masks, user mask
files with every error a user can cause, and exact masks of the synthetic data.
Attacks restricted to the background never change a foreground pixel. The
``localized`` training mode really trains on clean images plus background-only
PGD examples, weighted by ``mix``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import needs_fashion_mnist
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from advspatial import training, training_modes
from advspatial.attacks.fgsm import FGSM
from advspatial.attacks.pgd import PGD, PGDL2
from advspatial.data import ImageDataset
from advspatial.errors import ConfigError, DataError, ShapeError
from advspatial.masks import BACKGROUND_TAU, attack_mask, load_mask_file, threshold_background
from advspatial.training import TrainConfig
from advspatial.training_modes import localized_loss, pgd_loss

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def grey_dataset(n: int = 10, size: int = 28, seed: int = 0, with_masks: bool = False) -> ImageDataset:
    """MNIST-like images: a bright random blob per image on a black background, some pixels exactly at tau."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.zeros(n, 1, size, size)
    for i in range(n):
        r0, c0 = torch.randint(2, size // 2, (2,), generator=g).tolist()
        h, w = torch.randint(4, size // 2, (2,), generator=g).tolist()
        pixels[i, 0, r0 : r0 + h, c0 : c0 + w] = 0.2 + 0.8 * torch.rand(h, w, generator=g)
    pixels[:, 0, 0, 0] = BACKGROUND_TAU  # exactly at the threshold: background (x <= tau)
    pixels[:, 0, 0, 1] = 0.051  # just above: foreground
    labels = torch.arange(n) % 10
    masks = (pixels[:, 0] > BACKGROUND_TAU) if with_masks else None
    return ImageDataset("grey-test", pixels, labels, tuple(str(k) for k in range(10)), masks=masks)


# -- masks ---------------------------------------------------------------------------------

def test_threshold_background_is_x_at_most_tau_in_every_channel() -> None:
    x = torch.tensor([0.0, 0.05, 0.0501, 1.0]).view(1, 1, 2, 2)
    assert threshold_background(x).tolist() == [[[True, True], [False, False]]]
    colour = torch.stack([torch.zeros(2, 2), torch.full((2, 2), 0.5)]).unsqueeze(0)  # one channel bright
    assert not threshold_background(colour).any()


@pytest.mark.parametrize("with_masks", [False, True])
def test_background_and_foreground_partition_the_image_and_follow_the_index(with_masks: bool) -> None:
    data = grey_dataset(with_masks=with_masks)
    for index in (slice(3, 8), torch.tensor([7, 2, 5])):
        bg = attack_mask("background", data, index)
        fg = attack_mask("foreground", data, index)
        x = data.images(index)
        assert bg.shape == (len(x), 1, 28, 28) and bg.dtype == torch.float32
        assert set(bg.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(bg + fg, torch.ones_like(bg)), "background and foreground partition every pixel"
        assert torch.equal(bg[:, 0].bool(), x[:, 0] <= BACKGROUND_TAU), "row i belongs to image index[i]"
        assert bg[:, 0, 0, 0].all() and not bg[:, 0, 0, 1].any()


def test_no_mask_spec_gives_none() -> None:
    data = grey_dataset()
    assert attack_mask(None, data, slice(0, 2)) is None
    assert attack_mask("none", data, slice(0, 2)) is None


@needs_fashion_mnist
def test_fashion_mnist_background_is_the_datasets_own_mask_and_the_threshold() -> None:
    from advspatial.data import load_dataset

    data = load_dataset("fashion-mnist", "test").head(50)
    bg = attack_mask("background", data, slice(10, 30))[:, 0].bool()
    assert torch.equal(bg, ~data.masks[10:30])
    assert torch.equal(bg, threshold_background(data.images(slice(10, 30))))
    share = bg.float().mean().item()
    assert 0.2 < share < 0.8, f"Fashion-MNIST images are about half background, got {share}"


def test_synthetic_shapes_background_is_the_exact_object_complement(tiny_cnn) -> None:
    synthetic = pytest.importorskip("advspatial.data.synthetic")
    data = synthetic.load_synthetic_shapes("test", n=6, size=32, channels=3, seed=3)
    bg = attack_mask("background", data, slice(1, 5))  # colour, but exact masks: no model needed
    assert torch.equal(bg[:, 0].bool(), ~data.masks[1:5])
    grey = synthetic.load_synthetic_shapes("test", n=6, size=32, channels=1, seed=3)
    assert torch.equal(attack_mask("foreground", grey, torch.tensor([4, 0]))[:, 0].bool(), grey.masks[[4, 0]])


def test_roi_masks_are_the_top_fraction_of_gradcam_and_need_a_model(tiny_cnn) -> None:
    data = grey_dataset(n=6)
    model = tiny_cnn(seed=1)
    roi = attack_mask("roi", data, slice(0, 6), model, fraction=0.2)
    rest = attack_mask("roi-complement", data, slice(0, 6), model, fraction=0.2)
    assert roi.shape == (6, 1, 28, 28) and torch.equal(roi + rest, torch.ones_like(roi))
    counts = roi.flatten(1).sum(1)
    assert (counts <= round(0.2 * 28 * 28)).all() and counts.sum() > 0
    # the selected pixels are where Grad-CAM of the true class is largest
    from advspatial.maps import importance_map

    cam = importance_map("gradcam", model, data.images(slice(0, 6)), target="true", y=data.labels[:6])
    for i in range(6):
        inside, outside = cam[i][roi[i, 0].bool()], cam[i][~roi[i, 0].bool()]
        if len(inside) and len(outside):
            assert inside.min() >= outside.max()
    with pytest.raises(ConfigError, match="needs a model"):
        attack_mask("roi", data, slice(0, 2))


def test_colour_data_without_masks_needs_a_model_for_background() -> None:
    data = ImageDataset("rgb", torch.rand(3, 3, 16, 16), torch.zeros(3, dtype=torch.long), ("a",))
    with pytest.raises(ConfigError, match="needs a model"):
        attack_mask("background", data, slice(0, 3))


@pytest.mark.parametrize("suffix", [".pt", ".npy"])
def test_mask_file_rows_align_with_the_dataset(tmp_path, suffix: str) -> None:
    data = grey_dataset(n=8)
    masks = torch.rand(8, 28, 28)
    path = tmp_path / f"masks{suffix}"
    if suffix == ".pt":
        torch.save(masks, path)
    else:
        np.save(path, masks.numpy())
    got = attack_mask(str(path), data, slice(2, 6))
    assert got.shape == (4, 1, 28, 28) and torch.equal(got[:, 0], masks[2:6])
    assert torch.equal(attack_mask(str(path), data, torch.tensor([7, 0]))[:, 0], masks[[7, 0]])
    torch.save(masks.unsqueeze(1) > 0.5, tmp_path / "n1hw.pt")  # (N,1,H,W) bool is accepted too
    assert torch.equal(load_mask_file(tmp_path / "n1hw.pt", 8, (28, 28)), (masks > 0.5).float())


def test_mask_file_errors_say_what_is_wrong(tmp_path) -> None:
    data = grey_dataset(n=8)
    with pytest.raises(ConfigError, match="neither a file nor one of"):
        attack_mask(str(tmp_path / "missing.pt"), data, slice(0, 2))
    cases = {
        "short.pt": (torch.rand(4, 28, 28), ShapeError, "need"),
        "size.pt": (torch.rand(8, 20, 20), ShapeError, "need"),
        "range.pt": (torch.rand(8, 28, 28) * 2, DataError, r"\[0, 1\]"),
        "negative.npy": (-torch.rand(8, 28, 28), DataError, r"\[0, 1\]"),
        "dict.pt": ({"masks": torch.rand(8, 28, 28)}, DataError, "one tensor"),
    }
    for name, (value, error, message) in cases.items():
        path = tmp_path / name
        if name.endswith(".npy"):
            np.save(path, value.numpy())
        else:
            torch.save(value, path)
        with pytest.raises(error, match=message):
            attack_mask(str(path), data, slice(0, 2))
    (tmp_path / "corrupt.pt").write_bytes(b"not a tensor file")
    with pytest.raises(DataError, match="cannot read"):
        attack_mask(str(tmp_path / "corrupt.pt"), data, slice(0, 2))


# -- background-only attacks ---------------------------------------------------------------

ATTACKS = {
    "pgd": lambda m, s: PGD(m, eps=0.1, alpha=0.04, steps=3, seed=s),
    "pgd-l2": lambda m, s: PGDL2(m, eps=1.0, alpha=0.4, steps=3, seed=s),
    "fgsm": lambda m, s: FGSM(m, eps=0.1),
}


@pytest.mark.parametrize("name", list(ATTACKS))
@SETTINGS
@given(seed=st.integers(0, 10_000), spec=st.sampled_from(["background", "foreground"]))
def test_localized_attacks_never_touch_pixels_outside_their_region(tiny_cnn, name: str, seed: int, spec: str) -> None:
    data = grey_dataset(n=4, seed=seed)
    x, y = data.images(), data.labels
    mask = attack_mask(spec, data, slice(0, 4))
    attack = ATTACKS[name](tiny_cnn(seed=seed % 3), seed)
    delta = attack.run(x, y, mask=mask).x_adv - x
    outside = ~mask.bool().expand_as(x)
    assert torch.count_nonzero(delta[outside]) == 0, "perturbation must be exactly zero outside the region"
    assert torch.count_nonzero(delta) > 0, "the attack changes something inside its region"


# -- localized adversarial training ----------------------------------------------------------

class Spy:
    """Records every call of training_modes._adversarial_batch (inputs and the returned x_adv)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict[str, torch.Tensor | None]] = []
        original = training_modes._adversarial_batch

        def spy(model, x, y, config, mask):  # type: ignore[no-untyped-def]
            x_adv = original(model, x, y, config, mask)
            self.calls.append({"x": x.clone(), "mask": None if mask is None else mask.clone(), "x_adv": x_adv.clone()})
            return x_adv

        monkeypatch.setattr(training_modes, "_adversarial_batch", spy)


def test_localized_loss_mixes_clean_and_background_only_examples(tiny_cnn, monkeypatch) -> None:
    spy = Spy(monkeypatch)
    data = grey_dataset(n=8, seed=5, with_masks=True)
    x, y, fg = data.images(), data.labels, data.masks
    model = tiny_cnn(seed=2).train()
    config = TrainConfig(mode="localized", eps=0.2, attack_steps=3, mix=0.3)
    torch.manual_seed(0)
    loss = localized_loss(model, x, y, fg, config)
    assert len(spy.calls) == 1
    x_adv = spy.calls[0]["x_adv"]
    delta = x_adv - x
    assert torch.count_nonzero(delta[:, 0][fg]) == 0, "foreground pixels are never changed"
    assert torch.count_nonzero(delta[:, 0][~fg]) > 0, "background pixels are attacked"
    assert float(delta.abs().max()) <= 0.2 + 1e-6
    assert torch.equal(spy.calls[0]["mask"][:, 0].bool(), ~fg)
    assert model.training, "the attack restores train mode"
    ce = nn.functional.cross_entropy
    expected = 0.7 * ce(model(x), y) + 0.3 * ce(model(x_adv), y)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert not torch.allclose(ce(model(x), y), ce(model(x_adv), y)), "the two terms differ, so the weight matters"
    with pytest.raises(ConfigError, match="foreground masks"):
        localized_loss(model, x, y, None, config)


def test_pgd_loss_attacks_the_whole_image(tiny_cnn, monkeypatch) -> None:
    spy = Spy(monkeypatch)
    data = grey_dataset(n=6, seed=1, with_masks=True)
    x, y = data.images(), data.labels
    model = tiny_cnn(seed=0).train()
    loss = pgd_loss(model, x, y, data.masks, TrainConfig(mode="pgd", eps=0.1, attack_steps=2))
    call = spy.calls[0]
    assert call["mask"] is None
    delta = call["x_adv"] - x
    assert torch.count_nonzero(delta[:, 0][data.masks]) > 0 and torch.count_nonzero(delta[:, 0][~data.masks]) > 0
    assert torch.allclose(loss, nn.functional.cross_entropy(model(call["x_adv"]), y), atol=1e-6)


@needs_fashion_mnist
def test_localized_training_batches_hold_background_only_examples_of_the_dataset(tmp_path, monkeypatch) -> None:
    """train_model in mode 'localized' gives each batch's foreground masks to the attack."""
    from advspatial.data import load_dataset

    monkeypatch.setenv("ADVSPATIAL_CACHE", str(tmp_path))
    monkeypatch.setattr(training, "evaluate_accuracy", lambda model, dataset: 0.0)  # skip the 10000-image test pass
    spy = Spy(monkeypatch)
    config = TrainConfig(arch="lenet5", mode="localized", epochs=1, train_limit=64, batch_size=32, attack_steps=2)
    training.train_model(config, "cpu", progress=False)
    assert len(spy.calls) == 2, "one adversarial batch per training batch"
    train = load_dataset("fashion-mnist", "train").head(64)
    all_images = train.images()
    for call in spy.calls:
        x, x_adv, mask = call["x"], call["x_adv"], call["mask"]
        rows = [int(torch.nonzero((all_images == xi).flatten(1).all(1))[0]) for xi in x]
        assert torch.equal(mask[:, 0].bool(), ~train.masks[rows]), "mask = the background of exactly these images"
        changed = (x_adv != x)[:, 0]
        assert not (changed & train.masks[rows]).any() and changed.any()


def test_a_mask_file_with_nan_is_refused(tmp_path) -> None:
    """NaN in a mask file was accepted and gave 'L2 nan, Linf nan'."""
    masks = torch.ones(4, 8, 8)
    masks[2, 3, 3] = float("nan")
    path = tmp_path / "m.pt"
    torch.save(masks, path)
    with pytest.raises(DataError, match="NaN or infinite"):
        load_mask_file(path, 4, (8, 8))
    np.save(tmp_path / "m.npy", masks.numpy())
    with pytest.raises(DataError, match="NaN or infinite"):
        load_mask_file(tmp_path / "m.npy", 4, (8, 8))
