"""Tests for training: config validation, caching, and a CI-sized real training run."""

from __future__ import annotations

import json

import pytest
import torch

from advspatial.errors import ConfigError
from advspatial.training import TrainConfig, checkpoint_paths, get_or_train, load_cached, resolve_model

from conftest import needs_fashion_mnist


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
