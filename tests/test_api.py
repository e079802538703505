"""The public API: every exported name imports; ``advspatial.run`` takes a model object and tensors."""

from __future__ import annotations

import importlib

import pytest
import torch
from conftest import TinyCNN
from helpers import self_labelled_tiny_cnn

import advspatial
from advspatial.errors import AdvspatialError

PACKAGES = ["advspatial", "advspatial.attacks", "advspatial.maps", "advspatial.regions", "advspatial.defence",
            "advspatial.data", "advspatial.models", "advspatial.experiments", "advspatial.analysis",
            "advspatial.statistics", "advspatial.faithfulness"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_imports(package):
    module = importlib.import_module(package)
    assert module.__all__, f"{package} lists no public names"
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_attacks_in_the_torchattacks_idiom():
    from advspatial.attacks import (
        APGD, FGSM, PGD, PGDL2, Attack, AutoAttack, CarliniWagnerL2, DeepFool, KPixel, OnePixel, Square, SSIMBallAttack,
        list_attacks,
    )

    registered = {spec.cls for spec in list_attacks().values()}
    for cls in (APGD, CarliniWagnerL2, FGSM, PGD, PGDL2, AutoAttack, DeepFool, KPixel, OnePixel, SSIMBallAttack,
                Square):
        assert issubclass(cls, Attack) and cls in registered, cls
    torch.manual_seed(0)
    model, x = TinyCNN().eval(), torch.rand(3, 1, 28, 28)
    x_adv = PGD(model, eps=0.05, steps=3)(x, torch.tensor([0, 1, 2]))
    assert float((x_adv - x).abs().max()) <= 0.05 + 1e-6


def test_map_functions_are_the_registered_methods():
    from vit_helpers import tiny_vit

    from advspatial.maps import attack_map, importance_map
    from advspatial.maps.attack import attack_functions
    from advspatial.maps.importance import importance_functions, list_importance_methods

    torch.manual_seed(0)
    model, x = TinyCNN().eval(), torch.rand(3, 1, 28, 28)
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    IMPORTANCE_FUNCTIONS, ATTACK_MAP_FUNCTIONS = importance_functions(), attack_functions()
    assert set(IMPORTANCE_FUNCTIONS) == set(list_importance_methods()) - {"auto"}
    transformer = ("token-gradcam", "token-hirescam", "rollout", "chefer")  # explain vision transformers only
    for name, fn in IMPORTANCE_FUNCTIONS.items():
        if name == "cam" or name in transformer:  # cam needs a GAP + linear head
            continue
        torch.manual_seed(1)
        expected = (importance_map(name, model, x, layer="features.3") if "cam" in name
                    else importance_map(name, model, x))
        torch.manual_seed(1)
        got = fn(model, x, layer="features.3") if "cam" in name else fn(model, x)
        assert torch.allclose(got, expected), name
    vit, z = tiny_vit(), torch.rand(2, 3, 16, 16)
    for name in transformer:
        assert torch.equal(IMPORTANCE_FUNCTIONS[name](vit, z), importance_map(name, vit, z)), name
    gap = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    assert torch.allclose(IMPORTANCE_FUNCTIONS["cam"](gap, x), importance_map("cam", gap, x))
    assert torch.equal(ATTACK_MAP_FUNCTIONS["magnitude"](x, x_adv).map, attack_map("magnitude", None, x, x_adv).map)
    assert torch.allclose(ATTACK_MAP_FUNCTIONS["contribution"](model, x, x_adv, steps=4).map,
                          attack_map("contribution", model, x, x_adv, steps=4).map)
    assert torch.equal(ATTACK_MAP_FUNCTIONS["gradient"](model, x_adv).map, attack_map("gradient", model, x_adv).map)


@pytest.fixture
def tiny_setup():
    model, x, y = self_labelled_tiny_cnn(16)
    y[:4] = (y[:4] + 1) % 10  # four wrong
    return model, x, y


def test_run_with_a_model_object_and_tensors(tiny_setup, tmp_path):
    model, x, y = tiny_setup
    result = advspatial.run("baseline", model=model, data=(x, y), out=str(tmp_path / "b"), progress=False)
    assert result.metrics["clean_accuracy"] == pytest.approx(12 / 16)
    assert len(result.rows) == 16 and result.report.is_file()
    assert result.config.model.startswith("object:TinyCNN-") and result.config.dataset.startswith("memory:images-")
    assert result.config.preset == "none"
    again = advspatial.run("baseline", model=model, data=(x, y), out=str(tmp_path / "b"), resume=True, progress=False)
    assert again.rows == result.rows
    torch.manual_seed(123)  # (a run seeds the global stream: without this the next net would equal model)
    other = TinyCNN().eval()
    with pytest.raises(AdvspatialError, match="other settings"):
        advspatial.run("baseline", model=other, data=(x, y), out=str(tmp_path / "b"), resume=True, progress=False)


def test_run_infers_the_preset_from_in_memory_images(tmp_path):
    torch.manual_seed(0)
    model = TinyCNN(in_channels=3, size=32).eval()
    x, y = torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    result = advspatial.run("baseline", model=model, data=(x, y), out=str(tmp_path / "c"), progress=False)
    assert result.config.preset == "cifar10"
    explicit = advspatial.run("baseline", model=model, data=(x, y), out=str(tmp_path / "d"), preset="none",
                              progress=False)
    assert explicit.config.preset == "none"


def test_run_errors_are_clear(tiny_setup):
    model, x, y = tiny_setup
    with pytest.raises(AdvspatialError, match="unknown experiment"):
        advspatial.run("spatal", model=model, data=(x, y))
    with pytest.raises(AdvspatialError, match="out="):
        advspatial.run("baseline", model=model, data=(x, y), resume=True)
    with pytest.raises(AdvspatialError, match="ImageDataset or a pair"):
        advspatial.run("baseline", model=model, data=x)
