"""Training with cached checkpoints: natural now, adversarial modes plug in by name.

A checkpoint is keyed by dataset, architecture, training mode, every config
field and the seed; it lives under ``<cache>/models/`` as ``<stem>.pt`` (state
dict, loaded with ``weights_only=True``) beside ``<stem>.json`` (metadata: test
accuracy, training time, the resolved config). Training modes are loss functions
registered in :data:`TRAINING_MODES`; later modes (PGD, localized) register there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import ImageDataset, dataset_spec, load_dataset
from .errors import ConfigError, check_range, unknown_name
from .models import build_model
from .runtime import cache_dir, make_generator, model_device, pick_device, seed_everything

#: loss(model, x, y, foreground_mask_or_None, config) -> scalar loss
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, "torch.Tensor | None", "TrainConfig"], torch.Tensor]
TRAINING_MODES: dict[str, LossFn] = {}


def register_training_mode(name: str) -> Callable[[LossFn], LossFn]:
    """Register a training mode: a function computing the loss of one batch."""

    def wrap(fn: LossFn) -> LossFn:
        TRAINING_MODES[name] = fn
        return fn

    return wrap


@register_training_mode("natural")
def natural_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor | None, config: "TrainConfig") -> torch.Tensor:
    """Plain cross-entropy on clean images."""
    return nn.functional.cross_entropy(model(x), y)


def _training_attack(model: nn.Module, config: "TrainConfig", seed: int):  # type: ignore[no-untyped-def]
    """The PGD attack used to make training examples (random start, ``attack_steps`` steps)."""
    from .attacks.pgd import PGD, PGDL2

    cls = PGD if config.norm == "linf" else PGDL2
    alpha = 2.5 * config.eps / config.attack_steps
    return cls(model, eps=config.eps, alpha=alpha, steps=config.attack_steps, random_start=True, seed=seed)


def _adversarial_batch(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: "TrainConfig", mask: torch.Tensor | None
) -> torch.Tensor:
    """PGD examples for one batch; the attack puts the model in eval mode and restores train mode."""
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())  # drawn from the seeded global stream
    attack = _training_attack(model, config, seed)
    return attack.run(x, y, mask=mask).x_adv.detach()


@register_training_mode("pgd")
def pgd_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor | None, config: "TrainConfig") -> torch.Tensor:
    """Madry PGD adversarial training: cross-entropy on full-image PGD examples only."""
    return nn.functional.cross_entropy(model(_adversarial_batch(model, x, y, config, None)), y)


@register_training_mode("localized")
def localized_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor | None, config: "TrainConfig") -> torch.Tensor:
    """Localized adversarial training: (1-mix)*CE(clean) + mix*CE(background-only PGD examples)."""
    if masks is None:
        raise ConfigError(f"training mode 'localized' needs foreground masks; dataset {config.dataset!r} has none")
    background = (~masks).unsqueeze(1).to(x.dtype)
    x_adv = _adversarial_batch(model, x, y, config, background)
    clean = nn.functional.cross_entropy(model(x), y)
    adversarial = nn.functional.cross_entropy(model(x_adv), y)
    return (1 - config.mix) * clean + config.mix * adversarial


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model (and so its cache key)."""

    dataset: str = "fashion-mnist"
    arch: str = "smallcnn"
    mode: str = "natural"
    epochs: int = 5
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    train_limit: int | None = None
    # adversarial training modes (ignored by "natural")
    eps: float = 0.1
    norm: str = "linf"
    attack_steps: int = 7
    mix: float = 0.5

    def validate(self) -> "TrainConfig":
        dataset_spec(self.dataset)
        from .models import list_models

        if self.arch not in list_models():
            raise unknown_name("model", self.arch, list_models())
        if self.mode not in TRAINING_MODES:
            raise unknown_name("training mode", self.mode, TRAINING_MODES)
        check_range("epochs", self.epochs, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("lr", self.lr, 0, low_inclusive=False)
        check_range("weight_decay", self.weight_decay, 0)
        check_range("mix", self.mix, 0, 1)
        check_range("eps", self.eps, 0)
        if self.train_limit is not None:
            check_range("train_limit", self.train_limit, 1)
        if self.norm not in ("linf", "l2"):
            raise ConfigError(f"norm={self.norm!r} is not valid; valid: linf, l2")
        return self

    def relevant(self) -> dict[str, Any]:
        """Fields that affect the result: adversarial fields only for adversarial modes."""
        fields = dataclasses.asdict(self)
        if self.mode == "natural":
            for name in ("eps", "norm", "attack_steps", "mix"):
                fields.pop(name)
        elif self.mode == "pgd":
            fields.pop("mix")  # Madry training uses adversarial examples only
        return fields

    def key(self) -> str:
        blob = json.dumps(self.relevant(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def stem(self) -> str:
        return f"{self.dataset.replace(':', '_').replace('/', '_')}-{self.arch}-{self.mode}-s{self.seed}-{self.key()}"


@dataclass
class TrainedModel:
    model: nn.Module
    config: TrainConfig
    metadata: dict[str, Any]
    path: Path | None


def evaluate_accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (eval mode, no gradients, streamed)."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    correct = 0
    with torch.inference_mode():
        for x, y, _ in dataset.batches(batch_size):
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    model.train(was_training)
    return correct / max(len(dataset), 1)


def build_for(config: TrainConfig, dataset: ImageDataset) -> nn.Module:
    c, h, w = dataset.image_shape
    if h != w:
        raise ConfigError(f"{config.arch} needs square images, dataset {config.dataset} has {h}x{w}")
    return build_model(config.arch, in_channels=c, num_classes=dataset.num_classes, input_size=h)


def train_model(config: TrainConfig, device: torch.device | str = "cpu", progress: bool = True) -> TrainedModel:
    """Train a model from scratch according to ``config`` and report its test accuracy."""
    config.validate()
    device = torch.device(device)
    seed_everything(config.seed)
    train = load_dataset(config.dataset, "train").head(config.train_limit)
    test = load_dataset(config.dataset, "test")
    model = build_for(config, train).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.epochs * steps_per_epoch)
    loss_fn = TRAINING_MODES[config.mode]
    shuffle = make_generator(config.seed)
    start = time.perf_counter()
    bar = tqdm(total=config.epochs * steps_per_epoch, desc=f"train {config.arch} ({config.mode})", disable=not progress, unit="batch")
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train), generator=shuffle)
        for start_idx in range(0, len(train), config.batch_size):
            idx = order[start_idx : start_idx + config.batch_size]
            x, y = train.images(idx).to(device), train.labels[idx].to(device)
            masks = None if train.masks is None else train.masks[idx].to(device)
            loss = loss_fn(model, x, y, masks, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    seconds = time.perf_counter() - start
    metadata = {
        "config": dataclasses.asdict(config),
        "key": config.key(),
        "test_accuracy": evaluate_accuracy(model, test),
        "train_seconds": round(seconds, 2),
        "train_images": len(train),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return TrainedModel(model, config, metadata, None)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock so that parallel processes do not train the same model twice."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def checkpoint_paths(config: TrainConfig) -> tuple[Path, Path]:
    directory = cache_dir("models")
    return directory / f"{config.stem()}.pt", directory / f"{config.stem()}.json"


def load_cached(config: TrainConfig, device: torch.device | str = "cpu") -> TrainedModel | None:
    """The cached model for ``config``, or None when there is none (or it is unreadable)."""
    weights, meta = checkpoint_paths(config)
    if not (weights.is_file() and meta.is_file()):
        return None
    dataset = load_dataset(config.dataset, "test")
    model = build_for(config, dataset)
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        metadata = json.loads(meta.read_text())
    except (RuntimeError, OSError, ValueError):
        return None
    return TrainedModel(model.to(device).eval(), config, metadata, weights)


def get_or_train(
    config: TrainConfig, device: torch.device | str | None = None, progress: bool = True, force: bool = False
) -> TrainedModel:
    """Load the cached model for ``config``, training (and caching) it first if needed."""
    config.validate()
    device = pick_device("auto") if device is None else torch.device(device)
    weights, meta = checkpoint_paths(config)
    with _file_lock(weights.with_suffix(".lock")):
        if not force and (cached := load_cached(config, device)) is not None:
            return cached
        trained = train_model(config, device, progress)
        tmp = weights.with_suffix(".pt.tmp")
        torch.save(trained.model.state_dict(), tmp)
        tmp.replace(weights)
        meta.write_text(json.dumps(trained.metadata, indent=2))
        trained.path = weights
        return trained


def resolve_model(
    dataset: str, spec: str = "smallcnn", arch: str | None = None, seed: int = 0,
    device: str | torch.device = "auto", progress: bool = True, weights: str | None = None,
) -> nn.Module:
    """A ready model for ``dataset`` from a spec (``advspatial.models.spec``), in eval mode on ``device``.

    A registered architecture name without ``weights`` gives the naturally
    trained model for that dataset (trained on first use, then cached);
    anything else is loaded as the spec says (zoo, factory, file, library).
    """
    from .models import load_model, parse_model_spec

    target = pick_device(device) if isinstance(device, str) else device
    source = parse_model_spec(spec, weights, arch)
    if source.needs_training:
        return get_or_train(TrainConfig(dataset=dataset, arch=spec, seed=seed), target, progress).model
    info = dataset_spec(dataset)
    c, h, _ = info.image_shape or (3, 32, 32)
    model = load_model(source, in_channels=c, num_classes=info.num_classes or 10, input_size=h)
    return model.to(target).eval()
