"""Tests for training: config validation, caching, and a CI-sized real training run."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import needs_fashion_mnist

from advspatial.errors import ConfigError
from advspatial.model_cache import checkpoint_paths, get_or_train, load_cached, resolve_model
from advspatial.training import TrainConfig


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVSPATIAL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("epochs", 0, "epochs"), ("lr", 0.0, "lr"), ("mix", 1.5, "mix"), ("arch", "vgg99", "model"),
     ("mode", "magic", "training mode"), ("dataset", "imagenet", "dataset"), ("norm", "l7", "norm")],
)
def test_invalid_config_is_rejected(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value}).validate()


def test_cache_key_depends_on_relevant_fields_only() -> None:
    base = TrainConfig()
    assert base.key() == TrainConfig(eps=0.3).key(), "natural training ignores adversarial settings"
    assert base.key() != TrainConfig(seed=1).key()
    assert base.key() != TrainConfig(epochs=6).key()
    assert TrainConfig(mode="natural").stem().startswith("fashion-mnist-smallcnn-natural-s0-")


@needs_fashion_mnist
def test_tiny_training_run_is_far_above_chance_and_cached(cache) -> None:
    config = TrainConfig(arch="lenet5", epochs=1, train_limit=3000, batch_size=100, seed=1)
    trained = get_or_train(config, "cpu", progress=False)
    accuracy = trained.metadata["test_accuracy"]
    assert accuracy > 0.6, f"chance is 0.1, got {accuracy}"
    weights, meta = checkpoint_paths(config)
    assert weights.is_file() and json.loads(meta.read_text())["test_accuracy"] == accuracy
    again = load_cached(config)
    assert again is not None
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(again.model(x), trained.model(x))
    # the same seed trains the same weights
    retrained = get_or_train(config, "cpu", progress=False, force=True)
    assert torch.equal(retrained.model(x), trained.model(x))


@needs_fashion_mnist
def test_resolve_model_loads_user_state_dict(cache, tmp_path) -> None:
    from advspatial.models import build_model

    model = build_model("lenet5").eval()
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    loaded = resolve_model("fashion-mnist", str(path), arch="lenet5", device="cpu")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


# -- the shared epoch loop and fine-tuning ------------------------------------------------------

class GapNet(torch.nn.Module):
    """conv-BN-ReLU-conv, global average pooling, linear: a tiny pretrained-like CNN with batch norm."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6),
                                            torch.nn.ReLU(), torch.nn.Conv2d(6, 8, 3, padding=1))
        self.fc = torch.nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def colour_data(n: int = 24, side: int = 12, seed: int = 0):
    from advspatial.data import ImageDataset

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    pixels = 0.4 * torch.rand(n, 3, side, side, generator=g)
    for i, c in enumerate(labels.tolist()):
        pixels[i, c, 3:9, 3:9] += 0.6  # a class-coloured square in the middle
    return ImageDataset("colour", pixels, labels, ("r", "g", "b"), ids=torch.arange(100, 100 + n))


def start_model() -> GapNet:
    torch.manual_seed(3)
    model = GapNet()
    with torch.no_grad():  # non-trivial running statistics, as a pretrained model has
        model.features[1].running_mean.uniform_(-0.2, 0.2)
        model.features[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


def finetune_settings(mode: str, model: torch.nn.Module, **kw):
    from advspatial.experiments.localized.finetuning import FinetuneConfig
    from advspatial.models.loading import state_checksum

    values = {"dataset": "colour", "start": "gapnet", "start_sha256": state_checksum(model), "mode": mode,
              "epochs": 1, "batch_size": 8, "lr": 0.05, "eps": 0.1, "attack_steps": 2, "seed": 4, **kw}
    return FinetuneConfig(**values)


def test_fit_visits_every_image_once_per_epoch_in_a_seeded_order() -> None:
    from advspatial.training import fit

    data = colour_data(10)
    seen: list[torch.Tensor] = []

    def loss_fn(model, x, y, masks, config):  # type: ignore[no-untyped-def]
        seen.append(masks.clone())
        return torch.nn.functional.cross_entropy(model(x), y)

    def run(seed: int) -> list[torch.Tensor]:
        seen.clear()
        model = GapNet()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        config = TrainConfig(epochs=2, batch_size=4, seed=seed)
        history = fit(model, data, loss_fn, config, optimizer, masks_fn=lambda idx: idx, progress=False)
        assert history["steps"] == 2 * 3 and not model.training
        return list(seen)

    first = run(0)
    epochs = [torch.cat(first[:3]), torch.cat(first[3:])]
    assert all(sorted(e.tolist()) == list(range(10)) for e in epochs), "each epoch visits every position once"
    assert not torch.equal(epochs[0], epochs[1]), "a new order per epoch"
    assert all(torch.equal(a, b) for a, b in zip(first, run(0), strict=True)), "the same seed gives the same order"
    assert not all(torch.equal(a, b) for a, b in zip(first, run(1), strict=True))


def test_finetuning_starts_from_the_same_weights_and_ends_different() -> None:
    from advspatial.experiments.localized.finetuning import finetune_model
    from advspatial.models.loading import state_checksum

    data = colour_data(24)
    start = start_model()
    before = state_checksum(start)
    foreground = torch.zeros(24, 12, 12, dtype=torch.bool)
    foreground[:, 3:9, 3:9] = True
    tuned = {mode: finetune_model(start, finetune_settings(mode, start), data,
                                  (lambda idx: foreground[idx]) if mode == "localized" else None, progress=False)
             for mode in ("natural", "pgd", "localized")}
    assert state_checksum(start) == before, "the start model is not changed"
    sums = {mode: state_checksum(t.model) for mode, t in tuned.items()}
    assert len(set(sums.values()) | {before}) == 4, "each mode ends at different weights"
    for t in tuned.values():
        assert t.metadata["steps"] == 3 and t.metadata["train_images"] == 24 and not t.model.training
        assert t.metadata["test_accuracy"] != t.metadata["test_accuracy"], "no test accuracy: NaN"
    again = finetune_model(start, finetune_settings("pgd", start), data, progress=False)
    assert state_checksum(again.model) == sums["pgd"], "seeded: the same config gives the same weights"
    with pytest.raises(ConfigError, match="foreground masks"):
        finetune_model(start, finetune_settings("localized", start), colour_data(8), progress=False)
    with pytest.raises(ConfigError, match="start_sha256"):
        finetune_model(start, finetune_settings("natural", start, start_sha256="0" * 64), data, progress=False)


def test_frozen_batch_norm_keeps_the_start_statistics() -> None:
    from advspatial.experiments.localized.finetuning import finetune_model

    data = colour_data(16)
    start = start_model()
    bn = start.features[1]
    for freeze in (True, False):
        tuned = finetune_model(start, finetune_settings("pgd", start, freeze_bn=freeze), data, progress=False)
        tbn = tuned.model.features[1]
        assert torch.equal(tbn.running_mean, bn.running_mean) == freeze
        assert torch.equal(tbn.running_var, bn.running_var) == freeze
        assert not torch.equal(tbn.weight, bn.weight), "the affine weights train either way"


def test_finetune_key_covers_the_start_the_data_and_the_recipe() -> None:
    from advspatial.models.loading import state_checksum

    start = start_model()
    base = finetune_settings("natural", start)
    assert base.key() == finetune_settings("natural", start, eps=0.3, masks="x").key(), "natural ignores these"
    assert base.key() != finetune_settings("localized", start).key()
    for change in ({"start_sha256": "f" * 64}, {"train_ids": "abc"}, {"lr": 0.1}, {"epochs": 2},
                   {"freeze_bn": True}, {"seed": 5}, {"start": "other"}):
        assert base.key() != finetune_settings("natural", start, **change).key(), change
    local = finetune_settings("localized", start)
    assert local.key() != finetune_settings("localized", start, masks="other").key()
    other = GapNet()
    assert state_checksum(other) != state_checksum(start)
    other.load_state_dict(start.state_dict())
    assert state_checksum(other) == state_checksum(start), "the checksum identifies the weights, not the object"
    with pytest.raises(ConfigError, match="momentum"):
        finetune_settings("natural", start, momentum=1.0).validate()


@needs_fashion_mnist
def test_training_is_announced_and_a_bad_checkpoint_is_named_not_retrained(cache, capsys, monkeypatch) -> None:
    """A cache miss trained in silence, and an unreadable or unfitting checkpoint was retrained in silence;
    a cached model needs no lock, so a read-only cache serves it."""
    from advspatial import model_cache
    from advspatial.errors import AdvspatialError

    config = TrainConfig(arch="lenet5", epochs=1, train_limit=200, batch_size=100, seed=3)
    get_or_train(config, "cpu", progress=False)
    assert "advspatial: training lenet5 on fashion-mnist" in capsys.readouterr().err
    weights, meta = checkpoint_paths(config)

    def no_lock(path):  # type: ignore[no-untyped-def]
        raise AssertionError("a cached model must be read without the training lock")

    monkeypatch.setattr(model_cache, "_file_lock", no_lock)
    assert get_or_train(config, "cpu", progress=False).path == weights
    assert capsys.readouterr().err == ""
    good = weights.read_bytes()
    weights.write_bytes(b"")
    with pytest.raises(AdvspatialError, match=rf"{weights.name}.*delete it"):
        get_or_train(config, "cpu", progress=False)
    other = TrainConfig(arch="smallcnn", epochs=1, train_limit=200, batch_size=100, seed=3)
    checkpoint_paths(other)[0].write_bytes(good)
    checkpoint_paths(other)[1].write_text(meta.read_text())
    with pytest.raises(AdvspatialError, match="does not fit smallcnn"):
        get_or_train(other, "cpu", progress=False)


def test_a_dataset_root_that_does_not_exist_is_refused(cache) -> None:
    """fashion-mnist:/nonexistent silently used the system copy under another cache key, so it retrained."""
    from advspatial.data import load_dataset
    from advspatial.errors import DataError

    with pytest.raises(DataError, match="folder '/nonexistent/x' does not exist"):
        load_dataset("fashion-mnist:/nonexistent/x", "test")


def test_test_images_of_another_size_stop_before_training(cache, tmp_path, monkeypatch) -> None:
    """A 20x20 test IDX beside 28x28 training images started a full training with no message."""
    import numpy as np

    from advspatial.data.idx import write_idx
    from advspatial.errors import DataError

    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (20, 28, 28), dtype=np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(20, dtype=np.uint8) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (10, 20, 20), dtype=np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8))
    monkeypatch.setenv("ADVSPATIAL_DATA", str(tmp_path / "data"))

    def never(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("no training may start")

    from advspatial import training

    monkeypatch.setattr(training, "fit", never)
    with pytest.raises(DataError, match="training images are 1x28x28 but test images 1x20x20"):
        get_or_train(TrainConfig(arch="lenet5", epochs=1, seed=5), "cpu", progress=False)


# -- the controls of localized training -------------------------------------------

def _fit_tiny(mode: str, masks_fn=None, mix: float = 0.5, seed: int = 0):
    """A tiny linear-conv net fitted 2 epochs on 24 synthetic images by ``mode``; returns its state dict."""
    from advspatial.data import ImageDataset
    from advspatial.training import TrainConfig, fit
    from advspatial.training_modes import TRAINING_MODES

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 8, 8, generator=gen)
    masks = torch.zeros(24, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True  # the "object": the attack acts on the rest
    data = ImageDataset("toy", x, torch.arange(24) % 3, ("a", "b", "c"), masks=masks)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(256, 3))
    config = TrainConfig(dataset="toy", mode=mode, epochs=2, batch_size=8, eps=0.1, attack_steps=2, mix=mix,
                         seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(seed)
    fit(model, data, TRAINING_MODES[mode], config, optimizer, masks_fn=masks_fn, progress=False)
    return model.state_dict(), data


def test_mixed_pgd_with_mix_zero_is_natural_training():
    natural, _ = _fit_tiny("natural")
    mixed, _ = _fit_tiny("mixed-pgd", mix=0.0)
    assert all(torch.equal(natural[k], mixed[k]) for k in natural)
    adversarial, _ = _fit_tiny("mixed-pgd", mix=0.5)
    assert not all(torch.equal(natural[k], adversarial[k]) for k in natural)


def test_random_mask_control_equals_localized_training_on_the_same_random_masks():
    """localized-random draws its masks from the global stream right before the loss; localized training
    given a masks function that draws the same way, at the same point, gets the same weights."""
    from advspatial.training_modes import random_masks_like

    control, data = _fit_tiny("localized-random")

    def same_random(idx):
        return random_masks_like(data.masks[idx])

    localized_on_random, _ = _fit_tiny("localized", masks_fn=same_random)
    assert all(torch.equal(control[k], localized_on_random[k]) for k in control)
    localized_on_object, _ = _fit_tiny("localized")
    assert not all(torch.equal(control[k], localized_on_object[k]) for k in control)


def test_random_masks_keep_each_images_area_at_random_positions():
    from advspatial.training_modes import random_masks_like

    masks = torch.zeros(5, 10, 10, dtype=torch.bool)
    for i in range(5):
        masks[i, : i + 1, :] = True
    torch.manual_seed(0)
    drawn = random_masks_like(masks)
    assert drawn.flatten(1).sum(1).tolist() == masks.flatten(1).sum(1).tolist()
    assert not torch.equal(drawn, masks)
    torch.manual_seed(0)
    assert torch.equal(random_masks_like(masks), drawn)


def test_evaluate_accuracy_gives_every_module_back_its_own_mode() -> None:
    """A wrapper built in training mode around an eval model (and a model with frozen batch norms) keep their
    modes: restoring the top module's mode to all of them would switch the inner model to training, where its
    BatchNorm statistics drift and Dropout draws (a bug the one-pixel benchmark once had)."""
    from torch import nn

    from advspatial.data import ImageDataset
    from advspatial.training import evaluate_accuracy

    torch.manual_seed(0)
    inner = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5),
                          nn.Linear(4 * 6 * 6, 3)).eval()
    wrapper = nn.Sequential(inner)  # a new module: training mode
    data = ImageDataset("toy", torch.rand(12, 1, 8, 8), torch.arange(12) % 3, ("a", "b", "c"))
    with torch.no_grad():
        expected = float((inner(data.images()).argmax(1) == data.labels).float().mean())
    statistics = inner[1].running_mean.clone()
    assert evaluate_accuracy(wrapper, data, batch_size=5) == pytest.approx(expected)
    assert wrapper.training and not any(m.training for m in inner.modules())
    with torch.no_grad():
        inner(torch.rand(4, 1, 8, 8))  # an eval-mode pass: the statistics stay
    assert torch.equal(inner[1].running_mean, statistics)
    frozen = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train()
    frozen[1].eval()  # what training with freeze_bn does
    evaluate_accuracy(nn.Sequential(frozen, nn.Flatten(), nn.Linear(2 * 6 * 6, 3)), data)
    assert frozen.training and not frozen[1].training
