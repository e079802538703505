"""Hugging Face ``transformers`` image classifiers from a local folder: the ``hf:PATH`` model spec.

A folder written by ``model.save_pretrained(PATH)`` and ``image_processor.save_pretrained(PATH)`` holds what
advspatial needs: ``config.json`` (the architecture), the weights (``model.safetensors``, ``pytorch_model.bin``
or a sharded index) and ``preprocessor_config.json`` (the image size and the normalization). The model is loaded
with ``local_files_only=True`` (nothing is downloaded, no remote code is run) and its eager attention (so its
attention probabilities exist for rollout and the relevance maps), wrapped so that it returns the logits of its
output (``.logits``), and wrapped in :class:`~advspatial.models.Normalized` with the processor's mean and std: it
takes images in [0,1] like every model here. ``transformers`` is imported only here, on first use
(``pip install 'advspatial[transformers]'``).

Examples:
    >>> from advspatial.models import load_model            # doctest: +SKIP
    >>> vit = load_model("hf:checkpoints/vit-cifar10")       # doctest: +SKIP
    >>> vit(torch.rand(2, 3, 224, 224)).shape                # doctest: +SKIP
    torch.Size([2, 10])
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError, bounded_repr, load_failure
from .loading import Normalized, _first_line, _import_optional

#: the files one of which holds the weights
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
HF_EXTRA_HINT = "pip install 'advspatial[transformers]'"


@dataclass(frozen=True)
class Preprocessing:
    """What a folder's image processor does to an image that advspatial must do the same way.

    Attributes:
        size: the side of the square image the model takes (the crop's, when it centre-crops).
        crop_fraction: the centre crop's side over the resized image's (1: no crop).
        mean, std: per-channel normalization of [0,1] images.
    """

    size: int
    crop_fraction: float
    mean: tuple[float, ...]
    std: tuple[float, ...]


def check_folder(path: str | Path) -> Path:
    """``path`` as a folder with a config, weights and an image processor's settings; one line naming what is
    missing otherwise."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"hf:{path}: no such folder; valid: a folder written by save_pretrained (config.json, "
                         "model.safetensors, preprocessor_config.json)")
    if not (folder / "config.json").is_file():
        raise ModelError(f"hf:{path}: the folder has no config.json, so it is not a Hugging Face model folder; "
                         "write one with model.save_pretrained(PATH)")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ModelError(f"hf:{path}: the folder has no weights ({', '.join(WEIGHT_FILES[:2])}); write them with "
                         "model.save_pretrained(PATH)")
    if not (folder / "preprocessor_config.json").is_file():
        raise ModelError(f"hf:{path}: the folder has no preprocessor_config.json, so the model's input size and "
                         "normalization are unknown; write it with image_processor.save_pretrained(PATH)")
    return folder


def read_preprocessing(path: str | Path) -> Preprocessing:
    """The size, crop and normalization of the folder's ``preprocessor_config.json`` (read as JSON: no image
    processor class is imported); one line when it asks for pixels other than [0,255] / 255."""
    folder = check_folder(path)
    file = folder / "preprocessor_config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"hf:{path}: {file.name} is unreadable: {_first_line(exc)}") from exc
    if config.get("do_rescale", True) and abs(float(config.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise ModelError(f"hf:{path}: the image processor rescales pixels by {config['rescale_factor']}, not 1/255; "
                         "advspatial feeds images in [0,1] and supports processors that rescale by 1/255")
    channels = len(config.get("image_mean") or ()) or model_channels(folder)
    normalize = config.get("do_normalize", True)
    mean = tuple(float(v) for v in config.get("image_mean", (0.5,) * channels)) if normalize else (0.0,) * channels
    std = tuple(float(v) for v in config.get("image_std", (0.5,) * channels)) if normalize else (1.0,) * channels
    size = _side(config.get("size"), 224, path, "size")
    crop = _side(config.get("crop_size"), size, path, "crop_size") if config.get("do_center_crop") else size
    fraction = float(config["crop_pct"]) if config.get("crop_pct") else min(1.0, crop / size)
    return Preprocessing(crop, fraction, mean, std)


def model_channels(folder: Path) -> int:
    """The image channels ``config.json`` declares (``num_channels``; 3 when it declares none)."""
    try:
        return int(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("num_channels", 3))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ModelError(f"hf:{folder}: config.json is unreadable: {_first_line(exc)}") from exc


def _side(value: object, default: int, path: str | Path, key: str) -> int:
    """The side of a processor's size setting (``key``): an int, or a mapping with height or shortest_edge;
    ``default`` when unset; anything else is one line (never a silent default)."""
    if value is None:
        return default
    side = value.get("height") or value.get("shortest_edge") if isinstance(value, dict) else value
    if isinstance(side, int) and not isinstance(side, bool) and side > 0:
        return side
    raise ModelError(f"hf:{path}: preprocessor_config.json has {key}: {bounded_repr(value)}; valid: a positive "
                     "integer or a mapping with height and width (or shortest_edge)")


def _why(exc: BaseException) -> str:
    """A library's failure in one line; a refused pickle without torch's advice to load it unsafely."""
    return load_failure(exc) if "weights_only" in str(exc) else _first_line(exc)


def shape_mismatch(folder: Path) -> str:
    """What differs between ``config.json`` and the weights' shapes, naming both numbers where the weights tell:
    the classes (the classifier's outputs) and the image channels (the first convolution's inputs)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    labels = len(config.get("id2label") or {}) or config.get("num_labels")
    channels = config.get("num_channels", 3)
    shapes = weight_shapes(folder)
    outputs = next((s[0] for k, s in shapes.items() if k.endswith(("classifier.weight", "head.weight"))), None)
    inputs = next((s[1] for s in shapes.values() if len(s) == 4), None)
    found = [f"config.json declares {what} {declared} but the weights have {actual}"
             for what, declared, actual in (("num_labels", labels, outputs), ("num_channels", channels, inputs))
             if actual is not None and actual != declared]
    return ("; ".join(found) or f"config.json (num_labels {labels}, num_channels {channels}) does not fit the "
            "shapes of the weights") + "; save the config and the weights of one model with save_pretrained"


def weight_shapes(folder: Path) -> dict[str, list[int]]:
    """Tensor name -> shape of ``model.safetensors`` (read from its JSON header, no tensor loaded); {} otherwise."""
    file = folder / "model.safetensors"
    try:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(min(length, 1 << 26)))
        return {k: list(v["shape"]) for k, v in header.items() if isinstance(v, dict) and "shape" in v}
    except (OSError, ValueError, struct.error, TypeError, AttributeError):
        return {}


class LogitsOf(nn.Module):
    """A ``transformers`` classifier that returns the tensor of logits of its output (``.logits``).

    Its output is a ``ModelOutput`` (a dict), which attacks, maps and the output checks do not take.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        logits = getattr(out, "logits", None)
        if not isinstance(logits, torch.Tensor):
            raise ModelError(f"{type(self.model).__name__} returned {type(out).__name__} without logits; valid: an "
                             "image classifier (AutoModelForImageClassification)")
        return logits


def load_hf(path: str | Path) -> nn.Module:
    """The image classifier in the folder ``path``, taking images in [0,1] and returning logits (module doc)."""
    folder = check_folder(path)
    prep = read_preprocessing(folder)
    transformers = _import_optional("transformers", f"hf:{path}", HF_EXTRA_HINT)
    logging = transformers.utils.logging
    bars, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()  # a local folder loads in a moment: no bar on stderr
    logging.set_verbosity_error()  # its load report spans lines; a failure is said in one line below
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(
            str(folder), local_files_only=True, attn_implementation="eager")
    except Exception as exc:  # transformers raises many types for a folder it cannot read
        if "ignore_mismatched_sizes" in str(exc):
            raise ModelError(f"hf:{path}: {shape_mismatch(folder)}") from exc
        raise ModelError(f"hf:{path}: transformers cannot load an image classifier from it: "
                         f"{type(exc).__name__}: {_why(exc)}") from exc
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
    channels = int(getattr(model.config, "num_channels", len(prep.mean)))
    if channels != len(prep.mean):
        raise ModelError(f"hf:{path}: the model takes {channels} channels but its image processor normalizes "
                         f"{len(prep.mean)}")
    return Normalized(LogitsOf(model.eval()), prep.mean, prep.std).eval()
