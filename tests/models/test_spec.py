"""Model specs: every kind is recognised without loading, and loads to a [0,1]-input model."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from advspatial.errors import ConfigError, ModelError
from advspatial.models import build_model, load_model, parse_model_spec
from advspatial.models.spec_kinds import is_torchscript_file

FACTORY_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    from helper_layers import Scale  # a neighbour module: the file's folder is importable

    def make():
        return nn.Sequential(Scale(), nn.Flatten(), nn.Linear(1 * 28 * 28, 10))

    def not_a_module():
        return 42

    def broken():
        raise ValueError("no such thing")
    """
)


@pytest.fixture()
def factory_file(tmp_path):
    (tmp_path / "helper_layers.py").write_text(
        "import torch\nclass Scale(torch.nn.Module):\n    def forward(self, x):\n        return 2 * x\n"
    )
    path = tmp_path / "my_model.py"
    path.write_text(FACTORY_FILE)
    return path


def test_kinds_are_recognised(tmp_path, factory_file) -> None:
    assert parse_model_spec("smallcnn").kind == "registered"
    assert parse_model_spec("smallcnn").needs_training
    assert parse_model_spec("cifar10-resnet20").kind == "zoo"
    assert parse_model_spec("torchvision:resnet18").kind == "torchvision"
    weights = tmp_path / "timm.pt"
    torch.save({}, weights)
    assert parse_model_spec("timm:resnet18", weights=str(weights)).kind == "timm"
    assert parse_model_spec(f"{factory_file}:make").kind == "factory"
    assert parse_model_spec("collections:OrderedDict").kind == "factory"
    scripted = tmp_path / "m.pt"
    torch.jit.save(torch.jit.trace(build_model("lenet5").eval(), torch.rand(1, 1, 28, 28)), str(scripted))
    assert parse_model_spec(str(scripted)).is_torchscript
    state = tmp_path / "w.pt"
    torch.save(build_model("lenet5").state_dict(), state)
    assert parse_model_spec(str(state), arch="lenet5").kind == "state-dict"
    assert not parse_model_spec("smallcnn", weights=str(state)).needs_training


def test_torchscript_detection_does_not_confuse_a_checkpoint(tmp_path) -> None:
    state = tmp_path / "w.pt"
    torch.save({"state_dict": build_model("lenet5").state_dict()}, state)
    assert not is_torchscript_file(state)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert not is_torchscript_file(text)
    with pytest.raises(ModelError, match="--arch NAME"):
        parse_model_spec(str(state))


def test_factory_file_loads_with_weights(factory_file, tmp_path) -> None:
    model = load_model(f"{factory_file}:make")
    x = torch.rand(2, 1, 28, 28)
    assert model(x).shape == (2, 10)
    assert not model.training
    weights = tmp_path / "w.pt"
    torch.save({"state_dict": {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}}, weights)
    loaded = load_model(f"{factory_file}:make", weights=str(weights))
    expected = 0.5 * (2 * x).flatten(1).sum(1, keepdim=True) + 0.5
    assert torch.allclose(loaded(x), expected.expand(2, 10), atol=1e-4)


def test_factory_weights_mismatch_is_a_clear_error(factory_file, tmp_path) -> None:
    weights = tmp_path / "w.pt"
    torch.save(build_model("lenet5").state_dict(), weights)
    with pytest.raises(ModelError, match="do not fit .*Missing key"):
        load_model(f"{factory_file}:make", weights=str(weights))


@pytest.mark.parametrize(
    ("suffix", "message"),
    [(":missing", "no callable 'missing'"), (":not_a_module", "returned int, not a torch.nn.Module"),
     (":broken", r"broken\(\) failed: ValueError: no such thing")],
)
def test_factory_errors_name_the_problem(factory_file, suffix, message) -> None:
    with pytest.raises(ModelError, match=message):
        load_model(f"{factory_file}{suffix}")


def test_unknown_spec_and_missing_files(tmp_path) -> None:
    with pytest.raises(ModelError, match="unknown model 'nosuchnet'.*cifar10-resnet20"):
        parse_model_spec("nosuchnet")
    with pytest.raises(ModelError, match="model file not found"):
        parse_model_spec(str(tmp_path / "absent.py") + ":make")
    with pytest.raises(ModelError, match="weights file not found"):
        parse_model_spec("smallcnn", weights=str(tmp_path / "absent.pt"))


def test_module_factory_is_imported(tmp_path, monkeypatch) -> None:
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text("import torch\ndef tiny():\n    return torch.nn.Sequential(torch.nn.Flatten(), "
                                     "torch.nn.Linear(4, 3))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_model("userpkg.nets:tiny")
    assert model(torch.rand(5, 1, 2, 2)).shape == (5, 3)
    sys.modules.pop("userpkg.nets", None)
    sys.modules.pop("userpkg", None)


def test_registered_weights_load_without_training(tmp_path) -> None:
    reference = build_model("lenet5").eval()
    weights = tmp_path / "w.pt"
    torch.save(reference.state_dict(), weights)
    loaded = load_model("lenet5", weights=str(weights))
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), reference(x))


def test_library_specs_fail_cleanly_without_the_library(monkeypatch, tmp_path) -> None:
    import importlib

    weights = tmp_path / "timm.pt"
    torch.save({}, weights)
    real = importlib.import_module

    def no_timm(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "timm":
            raise ImportError("No module named 'timm'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_timm)
    with pytest.raises(ModelError, match="timm:resnet18 needs an importable timm"):
        load_model("timm:resnet18", weights=str(weights))


def test_torchvision_with_weights_when_importable(tmp_path) -> None:
    try:
        import torchvision.models as tvm
    except Exception as exc:  # CUDA builds of torchvision do not import next to the CPU torch here
        pytest.skip(f"torchvision does not import here: {exc}")
    reference = tvm.get_model("resnet18", weights=None).eval()
    weights = tmp_path / "w.pt"
    torch.save(reference.state_dict(), weights)
    model = load_model("torchvision:resnet18", weights=str(weights))
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(model(x), reference((x - mean) / std), atol=1e-5)


def test_weights_of_the_wrapped_model_load_into_a_normalized_factory(tmp_path) -> None:
    """Published weights are the bare model's; a factory that wraps it in Normalized still takes them."""
    from advspatial.models import Normalized
    from advspatial.models.loading import load_weights

    inner = build_model("lenet5").eval()
    weights = tmp_path / "bare.pt"
    torch.save(inner.state_dict(), weights)
    wrapped = load_weights(Normalized(build_model("lenet5"), (0.5,), (0.25,)), weights)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(wrapped(x), inner((x - 0.5) / 0.25))
    whole = tmp_path / "whole.pt"
    torch.save(Normalized(inner, (0.1,), (0.5,)).state_dict(), whole)  # the wrapper's own state dict
    restored = load_weights(Normalized(build_model("lenet5"), (0.5,), (0.25,)), whole)
    assert torch.equal(restored(x), inner((x - 0.1) / 0.5))


# -- in-memory model objects ---------------------------------------------------------------

def test_model_objects_are_named_by_their_weights():
    from advspatial.models import load_model, parse_model_spec, register_model_object

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    spec = register_model_object(net)
    assert spec.startswith("object:Sequential-") and parse_model_spec(spec).kind == "object"
    assert load_model(spec) is net
    assert register_model_object(net) == spec
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert register_model_object(other) != spec
    with pytest.raises(ModelError, match="does not hold"):
        parse_model_spec("object:Gone-0")
    with pytest.raises(ModelError, match="weights"):
        parse_model_spec(spec, weights=__file__)


# -- the registry of spec kinds ------------------------------------------------------------------------------------

def test_every_registered_kind_recognises_and_builds_in_the_order_of_spec_kinds():
    from advspatial.models.spec import SPEC_KINDS
    from advspatial.models.spec_kinds import SPEC_KIND_REGISTRY

    assert tuple(kind.name for kind in SPEC_KIND_REGISTRY) == SPEC_KINDS
    assert len(set(SPEC_KINDS)) == len(SPEC_KINDS)
    for kind in SPEC_KIND_REGISTRY:
        assert callable(kind.resolve) and callable(kind.recognise) and callable(kind.build), kind.name
    assert SPEC_KIND_REGISTRY[-1].names_file  # the file kinds take what the others leave, so they come last


def test_a_kind_added_to_the_registry_is_recognised_and_built(monkeypatch):
    """A new kind is one registry entry: parsing, loading, the listing and a study's label need no other edit."""
    from advspatial.cli.listing import registries
    from advspatial.models import spec_kinds
    from advspatial.models.spec import model_input, prefixed_name
    from advspatial.models.spec_kinds import ModelSource, SpecKind
    from advspatial.studies.models import default_label

    built = []

    def build(source: ModelSource, shape: dict[str, int]) -> torch.nn.Module:
        built.append((source.target, shape["num_classes"]))
        return torch.nn.Linear(4, shape["num_classes"])

    toy = SpecKind("toy", lambda spec, weights, arch: ModelSource("toy", spec, spec.split(":", 1)[1], weights), build,
                   prefix="toy:", model_input=lambda spec: (8, 0.5), listed=("toy:NAME", "a toy model"))
    monkeypatch.setattr(spec_kinds, "SPEC_KIND_REGISTRY", (toy, *spec_kinds.SPEC_KIND_REGISTRY))
    source = parse_model_spec("toy:tiny")
    assert (source.kind, source.target, source.is_torchscript, source.needs_training) == ("toy", "tiny", False, False)
    model = load_model("toy:tiny", num_classes=3)
    assert built == [("tiny", 3)] and model(torch.rand(2, 4)).shape == (2, 3)
    assert model_input("toy:tiny") == (8, 0.5) and prefixed_name("toy:runs/tiny") == "runs/tiny"
    assert default_label("toy:runs/tiny") == "tiny"
    assert registries()["models"]()["toy:NAME"] == "a toy model"
    assert parse_model_spec("smallcnn").kind == "registered"  # the other kinds are recognised as before


def test_recognition_order_and_messages_survive_the_registry(tmp_path) -> None:
    """Specs the file and library kinds reject get one-line errors that name the problem."""
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelError, match=r"^\S+notes.txt is not a TorchScript archive; for a state dict name its "):
        parse_model_spec(str(text))
    with pytest.raises(ConfigError, match="unknown architecture 'nosuch'"):
        parse_model_spec(str(text), arch="nosuch")
    with pytest.raises(ModelError, match="--weights applies to a name or a factory"):
        parse_model_spec(str(text), weights=str(text))
    with pytest.raises(ModelError, match="--arch applies to a state-dict --model file, not to 'torchvision:x'"):
        parse_model_spec("torchvision:x", arch="lenet5")
    with pytest.raises(ModelError, match="timm:x needs --weights FILE"):
        parse_model_spec("timm:x")
    with pytest.raises(ModelError, match="'timm:' names no model"):
        parse_model_spec("timm:")
