"""Tests for Normalized and user-model loading (TorchScript, state dict, torchvision)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advspatial.errors import ModelError
from advspatial.models import Normalized, build_model, load_model
from advspatial.models.loading import load_state_dict_model, load_torchscript


def test_normalized_matches_manual_normalization(tiny_cnn) -> None:
    model = tiny_cnn(in_channels=3, size=28)
    wrapped = Normalized(model, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    x = torch.rand(3, 3, 28, 28)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(wrapped(x), model((x - mean) / std))


def test_normalized_rejects_bad_stats(tiny_cnn) -> None:
    with pytest.raises(ModelError, match="std must be > 0"):
        Normalized(tiny_cnn(), (0.5,), (0.0,))
    with pytest.raises(ModelError, match="channels"):
        Normalized(tiny_cnn(), (0.5, 0.5), (1.0,))


@pytest.mark.parametrize("training", [False, True])
def test_normalized_starts_in_the_wrapped_models_mode(tiny_cnn, training: bool) -> None:
    """Restoring the wrapper's mode must not switch an eval model to training (or the reverse)."""
    model = tiny_cnn().train(training)
    wrapped = Normalized(model, (0.5,), (0.25,))
    assert wrapped.training == training
    wrapped.train(wrapped.training)
    assert all(m.training == training for m in model.modules())


def test_state_dict_round_trip(tmp_path) -> None:
    model = build_model("lenet5").eval()
    path = tmp_path / "w.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = load_model(str(path), arch="lenet5")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


def test_data_parallel_prefix_is_stripped(tmp_path) -> None:
    """Checkpoints saved from nn.DataParallel / DDP carry 'module.' on every key."""
    model = build_model("lenet5").eval()
    path = tmp_path / "dp.pt"
    torch.save({"state_dict": torch.nn.DataParallel(model).state_dict()}, path)
    assert all(k.startswith("module.") for k in torch.load(path, weights_only=True)["state_dict"])
    loaded = load_state_dict_model(path, "lenet5")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


def test_only_a_prefix_on_every_key_is_stripped() -> None:
    from advspatial.models.loading import strip_wrapper_prefix

    mixed = {"module.fc.weight": 1, "head.bias": 2}
    assert strip_wrapper_prefix(mixed) == mixed
    assert strip_wrapper_prefix({"module.a": 1, "module.b.c": 2}) == {"a": 1, "b.c": 2}
    assert strip_wrapper_prefix({}) == {}


def test_state_dict_wrong_arch_is_a_model_error(tmp_path) -> None:
    path = tmp_path / "w.pt"
    torch.save(build_model("lenet5").state_dict(), path)
    with pytest.raises(ModelError, match="do not fit"):
        load_state_dict_model(path, "smallcnn")


def test_refuses_pickled_objects(tmp_path) -> None:
    """weights_only=True: a whole pickled module is not loaded."""
    path = tmp_path / "m.pt"
    torch.save(build_model("lenet5"), path)
    with pytest.raises(ModelError, match="cannot read weights"):
        load_state_dict_model(path, "lenet5")


def test_torchscript_round_trip(tmp_path) -> None:
    model = build_model("smallcnn").eval()
    path = tmp_path / "m.ts"
    torch.jit.save(torch.jit.trace(model, torch.rand(1, 1, 28, 28)), str(path))
    loaded = load_model(str(path))
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(loaded(x), model(x), atol=1e-6)


def test_missing_files_are_model_errors(tmp_path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_torchscript(tmp_path / "none.ts")
    bad = tmp_path / "bad.ts"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="TorchScript"):
        load_torchscript(bad)


def test_torchvision_is_optional() -> None:
    """Without an importable torchvision, torchvision:NAME is a clear ModelError."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        with pytest.raises(ModelError, match="torchvision"):
            load_model("torchvision:resnet18")
    else:  # pragma: no cover - only where torchvision works
        pytest.skip("torchvision importable here")


def test_load_errors_are_short_and_never_advise_unsafe_loading(tmp_path) -> None:
    """A state-dict mismatch ran to 5 lines listing every key, and the weights_only refusal repeated torch's advice
    to load with weights_only=False."""
    path = tmp_path / "w.pt"
    torch.save(build_model("lenet5").state_dict(), path)
    with pytest.raises(ModelError) as info:
        load_state_dict_model(path, "smallcnn")
    message = str(info.value)
    assert "\n" not in message and len(message) < 400 and "Missing key(s): " in message
    torch.save(build_model("lenet5"), path)
    with pytest.raises(ModelError) as info:
        load_state_dict_model(path, "lenet5")
    assert "weights_only=False" not in str(info.value).replace("`", "") and "\n" not in str(info.value)
    assert "state_dict()" in str(info.value)


@pytest.mark.parametrize("where", ["factory", "import"])
def test_a_model_file_calling_sys_exit_is_a_model_error(tmp_path, where: str) -> None:
    """A factory raising SystemExit(0) (or a file running argparse at import) ended the command with exit 0 and
    no output."""
    path = tmp_path / "m.py"
    body = ("def make():\n    raise SystemExit(0)\n" if where == "factory"
            else "import sys\nsys.exit(0)\ndef make(): pass\n")
    path.write_text(body)
    with pytest.raises(ModelError, match=r"SystemExit\(0\): the code called sys.exit\(\)"):
        load_model(f"{path}:make")


def test_code_checksum_follows_the_model_code_not_its_path(tmp_path) -> None:
    """The checksum a resumed run is tied to changes with the code of the model's classes, not with
    where the file lies; advspatial's own architectures are the tool's code."""
    from advspatial.models.spec import code_checksum

    source = ("import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
              "        self.fc = torch.nn.Linear(4, 2)\n"
              "    def forward(self, x):\n        return self.fc(x.flatten(1))\n"
              "def make():\n    return Net()\n")
    sums = []
    negated = source.replace("self.fc(x.flatten(1))", "-self.fc(x.flatten(1))")
    for folder, text in (("a", source), ("b", source), ("c", negated)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m.py").write_text(text)
        spec = f"{tmp_path / folder / 'm.py'}:make"
        sums.append(code_checksum(load_model(spec), spec))
    assert sums[0] == sums[1] != sums[2]
    assert code_checksum(build_model("lenet5"), "lenet5") == code_checksum(build_model("lenet5"), "lenet5")


def test_a_checksum_is_read_once_per_state_inside_a_run_and_every_time_outside() -> None:
    """Inside remembered_checksums the weights are read once while unchanged; an optimizer's step or a loaded
    state is a new checksum, equal to a fresh computation; outside the block a write no version counter sees
    (through .data) is still seen."""
    from advspatial.host_syncs import counting
    from advspatial.models.loading import remembered_checksums, state_checksum

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    reads: list[int] = []
    with remembered_checksums():
        first = state_checksum(model)
        with counting(lambda: reads.append(1)):
            assert state_checksum(model) == first
        assert not reads
        torch.optim.SGD(model.parameters(), lr=0.1).zero_grad()
        model(torch.rand(4, 3)).sum().backward()
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        stepped = state_checksum(model)
        model.train()(torch.rand(4, 3))  # BatchNorm's running statistics change in place
        moved = state_checksum(model)
    assert len({first, stepped, moved}) == 3
    assert state_checksum(model) == moved  # outside: computed again, the same
    with torch.no_grad():
        model[0].weight.data.add_(1.0)  # through .data: the version counter does not move
    assert state_checksum(model) != moved
