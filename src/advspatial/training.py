"""Training: the one epoch loop, and training from scratch.

:func:`fit` is the one epoch loop (seeded data order, one optimizer step per batch, the loss of the training
mode, masks from a callable). :func:`train_model` trains a registered architecture from scratch
(:class:`TrainConfig`; AdamW with a one-cycle schedule, optionally on augmented images); its checkpoint is cached
by :func:`advspatial.model_cache.get_or_train` (keyed by dataset, architecture, mode, every config field and the
seed); the localized-training experiment fine-tunes pretrained models with the same loop.

The loss of a batch is the training mode's (:mod:`advspatial.training_modes`); it gets the batch's foreground masks
from :func:`fit`'s ``masks_fn`` (by default the dataset's own masks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from .data import ImageDataset, dataset_spec, load_dataset
from .data.augment import FlipCrop, check_augmentation
from .data.imagefolder import split_root
from .data_parallel import DataParallel, current_shard, on_shard
from .distributed import world
from .errors import ConfigError, DataError, check_range, check_seed, unknown_name
from .models import build_model, list_models
from .models.hooks import frozen_eval
from .progress import progress_bar
from .runtime import make_generator, model_device, seed_everything
from .training_modes import TRAINING_MODES, LossFn, LossSettings


class FitSettings(LossSettings, Protocol):
    """What :func:`fit` reads besides the loss settings: epochs, batch size, and the seed of the data order."""

    @property
    def epochs(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def seed(self) -> int: ...


#: masks_fn(positions in the training set) -> (N,H,W) bool foreground masks of those images, or None
MasksFn = Callable[[torch.Tensor], "torch.Tensor | None"]
#: adversarial settings that natural training ignores (left out of its cache key)
ADVERSARIAL_FIELDS = ("eps", "norm", "attack_steps", "mix")


def augmented(loss: LossFn, config: TrainConfig) -> LossFn:
    """``loss`` on the batch augmented as ``config.augment`` says (:class:`~advspatial.data.augment.FlipCrop`)."""
    augment = FlipCrop(config.seed)
    return loss if config.augment == "none" else (
        lambda model, x, y, masks, settings: loss(model, augment(x, current_shard()), y, masks, settings))


def check_recipe(config: Any) -> None:
    """:class:`ConfigError` for a bad training mode, epoch count, batch size, lr, weight decay or attack setting
    (the fields :class:`TrainConfig` and :class:`FinetuneConfig` share)."""
    if config.mode not in TRAINING_MODES:
        raise unknown_name("training mode", config.mode, TRAINING_MODES)
    check_range("epochs", config.epochs, 1)
    check_range("batch_size", config.batch_size, 1)
    check_range("lr", config.lr, 0, low_inclusive=False)
    check_range("weight_decay", config.weight_decay, 0)
    check_range("mix", config.mix, 0, 1)
    check_range("eps", config.eps, 0)
    check_range("attack_steps", config.attack_steps, 1)
    if config.norm not in ("linf", "l2"):
        raise ConfigError(f"norm={config.norm!r} is not valid; valid: linf, l2")


def relevant_fields(config: Any) -> dict[str, Any]:
    """A config's fields that affect the trained weights: adversarial ones only for adversarial modes."""
    fields = dataclasses.asdict(config)
    fields = {k: v for k, v in fields.items() if k != "augment" or v != "none"}  # no augmentation: the old key
    if config.mode == "natural":
        for name in ADVERSARIAL_FIELDS:
            fields.pop(name)
    elif config.mode == "pgd":
        fields.pop("mix")  # Madry training uses adversarial examples only
    elif config.mode == "mixed-pgd" and config.mix == 0:
        for name in ADVERSARIAL_FIELDS:  # no adversarial example is made: natural training
            fields.pop(name)
    return fields


#: how :func:`train_model` trains, part of every cache key: a checkpoint trained another way (before training ran on
#: one CPU thread with deterministic kernels, its weights depended on the machine's thread count) is not reused
TRAINING_PROCEDURE = "one-thread-deterministic"


def settings_key(fields: dict[str, Any]) -> str:
    """12 hex digits of the SHA-256 of ``fields`` as sorted JSON: the cache key of a trained model."""
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@contextlib.contextmanager
def reproducible_training(device: torch.device) -> Iterator[None]:
    """Train the same weights on every machine: on the CPU one torch thread (a reduction split over threads sums in
    an order that depends on their number), and torch's deterministic kernels (where an operation has none, on a
    GPU, torch warns instead of failing); both restored afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cpu":
        torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _described(default: Any, help: str, **metadata: Any) -> Any:
    """A config field with its ``advspatial train --help`` text (the option is generated from the field)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model (and so its cache key)."""

    dataset: str = _described("fashion-mnist", "")
    arch: str = _described("smallcnn", "Registered architecture.")
    mode: str = _described("natural", "Training mode (advspatial list training-modes).")
    epochs: int = _described(5, "")
    batch_size: int = _described(128, "")
    lr: float = _described(3e-3, "")
    weight_decay: float = _described(1e-4, "AdamW weight decay.")
    seed: int = _described(0, "")
    train_limit: int | None = _described(None, "Train on the first N training images only.")
    # adversarial training modes (ignored by "natural")
    eps: float = _described(0.1, "Adversarial modes: attack budget.")
    norm: str = _described("linf", "")
    attack_steps: int = _described(7, "")
    mix: float = _described(0.5, "Adversarial modes: weight of the adversarial loss.")
    augment: str = _described("none", "none, or flip-crop: random flips and 4-pixel crops of the training images.")

    def validate(self) -> TrainConfig:
        dataset_spec(self.dataset)

        if self.arch not in list_models():
            raise unknown_name("model", self.arch, list_models())
        check_recipe(self)
        check_seed("seed", self.seed)
        if self.train_limit is not None:
            check_range("train_limit", self.train_limit, 1)
        check_augmentation(self.augment, self.mode)
        return self

    def relevant(self) -> dict[str, Any]:
        """Fields that affect the result: adversarial fields only for adversarial modes."""
        return relevant_fields(self)

    def key(self) -> str:
        return settings_key({**self.relevant(), "procedure": TRAINING_PROCEDURE})

    def stem(self) -> str:
        return f"{self.dataset.replace(':', '_').replace('/', '_')}-{self.arch}-{self.mode}-s{self.seed}-{self.key()}"


@dataclass
class TrainedModel:
    """A trained (or fine-tuned) model, the config that made it, its metadata and where it is stored."""

    model: nn.Module
    config: FitSettings  # a TrainConfig or a finetuning.FinetuneConfig
    metadata: dict[str, Any]
    path: Path | None


def evaluate_accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (eval mode, no gradients, streamed).

    Every module gets back its own mode afterwards: ``model.train(was_training)`` would set
    all of them to the top module's mode, switching an eval-mode model inside a wrapper built
    in training mode (a new ``nn.Module`` is) to training, or a ``freeze_bn`` model's batch
    norms back to updating their statistics.
    """
    device = model_device(model)
    correct = 0
    with frozen_eval(model), torch.inference_mode():
        for x, y, _ in dataset.batches(batch_size):
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    return correct / max(len(dataset), 1)


def build_for(config: TrainConfig, dataset: ImageDataset) -> nn.Module:
    c, h, w = dataset.image_shape
    if h != w:
        raise ConfigError(f"{config.arch} needs square images, dataset {config.dataset} has {h}x{w}")
    return build_model(config.arch, in_channels=c, num_classes=dataset.num_classes, input_size=h)


def dataset_masks(data: ImageDataset) -> MasksFn:
    """The default ``masks_fn`` of :func:`fit`: the dataset's own foreground masks (None when it has none)."""
    return lambda idx: None if data.masks is None else data.masks[idx]


def set_train_mode(model: nn.Module, freeze_bn: bool = False) -> None:
    """``model.train()``; with ``freeze_bn`` every batch-norm layer stays in eval mode (running statistics
    are used and not updated; its affine weights still train)."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def fit(
    model: nn.Module,
    data: ImageDataset,
    loss_fn: LossFn,
    config: FitSettings,
    optimizer: torch.optim.Optimizer,
    schedule: Any = None,
    masks_fn: MasksFn | None = None,
    progress: bool = True,
    freeze_bn: bool = False,
    desc: str = "train",
    data_parallel: bool = False,
) -> dict[str, Any]:
    """The epoch loop every training recipe runs; ``model`` is trained in place and left in eval mode.

    Each of ``config.epochs`` epochs visits ``data`` once in an order drawn from
    a generator seeded by ``config.seed`` (so two models fitted with the same
    seed see the same batches in the same order), one optimizer step (and one
    ``schedule`` step) per batch of ``config.batch_size``. ``loss_fn`` gets the
    batch's foreground masks from ``masks_fn(positions)`` (default: the
    dataset's own masks). Randomness inside the loss (PGD starts) comes from the
    global torch stream: seed it before calling. Returns the number of steps,
    the mean loss of the last epoch and the wall time.

    ``data_parallel`` under torchrun: every process calls ``fit`` alike and they train
    one model with DistributedDataParallel, each on its shard of every batch
    (:mod:`advspatial.data_parallel`); ``config.batch_size`` is the global batch's.
    """
    device = model_device(model)
    masks_fn = dataset_masks(data) if masks_fn is None else masks_fn
    steps_per_epoch = -(-len(data) // config.batch_size)
    shuffle = make_generator(config.seed)
    start = time.perf_counter()
    parallel = DataParallel(model, len(data), config.batch_size) if data_parallel and world().is_distributed else None
    net = model if parallel is None else parallel.net
    steps, epoch_losses = 0, list[float]()
    bar = progress_bar(total=config.epochs * steps_per_epoch, desc=desc, disable=not progress, unit="batch")
    for epoch in range(config.epochs):
        set_train_mode(net, freeze_bn)
        order = torch.randperm(len(data), generator=shuffle)
        epoch_losses = []
        for start_idx in range(0, len(data), config.batch_size):
            idx = order[start_idx : start_idx + config.batch_size]
            shard = None if parallel is None else parallel.shard(len(idx))
            if shard is not None:
                idx = idx[shard.positions]
            x, y = data.images(idx).to(device), data.labels[idx].to(device)
            with on_shard(shard):
                masks = masks_fn(idx)
                loss = loss_fn(net, x, y, None if masks is None else masks.to(device), config)
            if shard is not None:
                loss = DataParallel.weighted(loss, shard)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            steps += 1
            epoch_losses.append(loss.item() if parallel is None else parallel.global_loss(loss))
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{epoch_losses[-1]:.3f}")
    bar.close()
    if parallel is not None:
        parallel.finish()
    model.eval()
    return {"steps": steps, "last_epoch_loss": sum(epoch_losses) / max(len(epoch_losses), 1),
            "seconds": round(time.perf_counter() - start, 2)}


def environment(device: torch.device) -> dict[str, Any]:
    """Where a model was trained: torch version, device, threads, Python, time."""
    return {"torch": str(torch.__version__), "device": str(device), "threads": torch.get_num_threads(),
            "python": platform.python_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def shared_splits(dataset: str) -> str | None:
    """Why ``dataset``'s training images are its test images (None when they are not): a folder without train/
    and test/ folders, or images in a file (``arrays:``)."""
    kind, _, rest = dataset.partition(":")
    if kind == "arrays":
        return f"{dataset} holds one set of images, both its training and its test split"
    if kind == "imagefolder":
        root = Path(rest).expanduser()
        if root.is_dir() and split_root(root, "train") == split_root(root, "test"):  # a missing one: the loader says so
            return f"{root} has no train/ and test/ folders"
    return None


def refuse_training_on_test_images(dataset: str, spec: str) -> None:
    """A :class:`ConfigError` when the model trained on first use for ``dataset`` would be trained on the images
    it is then measured on: every result would be a training-set result. ``advspatial train`` still trains there
    (and says so), for a user who wants that model."""
    why = shared_splits(dataset)
    if why is not None:
        raise ConfigError(f"{spec} would be trained on first use on the images it is then measured on ({why}); give "
                          f"a trained model (a weights file with --arch {spec}, or a zoo model), or a folder with "
                          "train/ and test/ folders")


def note_shared_splits(dataset: str) -> None:
    """One line on stderr when ``dataset`` has no separate training images (:func:`shared_splits`): training and
    testing then use the same images, and the test accuracy is not held out."""
    why = shared_splits(dataset)
    if why is not None:
        print(f"advspatial: note: {why}, so the model is trained and tested on the same images (its test accuracy "
              "is not held out)", file=sys.stderr, flush=True)


def train_model(config: TrainConfig, device: torch.device | str = "cpu", progress: bool = True,
                data_parallel: bool = False) -> TrainedModel:
    """Train a model from scratch according to ``config`` (AdamW, one-cycle schedule) and report its test accuracy.

    The weights are the same whatever the machine's thread count (:func:`reproducible_training`), so the default
    model trained on first use is the same model everywhere.

    ``data_parallel`` under torchrun: every process calls it alike and they train one model together
    (:func:`fit`); every process ends with the same weights, and rank 0 alone shows progress."""
    config.validate()
    device = torch.device(device)
    seed_everything(config.seed)
    train = load_dataset(config.dataset, "train").head(config.train_limit)
    test = load_dataset(config.dataset, "test")
    note_shared_splits(config.dataset)
    if train.image_shape != test.image_shape:
        raise DataError(f"{config.dataset}: training images are {'x'.join(map(str, train.image_shape))} but test "
                        f"images {'x'.join(map(str, test.image_shape))}; check the dataset files")
    model = build_for(config, train).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.epochs * steps_per_epoch)
    parallel = data_parallel and world().is_distributed
    with reproducible_training(device):
        history = fit(model, train, augmented(TRAINING_MODES[config.mode], config), config, optimizer, schedule,
                      progress=progress and (world().is_main or not parallel),
                      desc=f"train {config.arch} ({config.mode})", data_parallel=parallel)
    metadata = {
        "config": dataclasses.asdict(config),
        "key": config.key(),
        "test_accuracy": evaluate_accuracy(model, test),
        "train_seconds": history["seconds"],
        "train_images": len(train),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        **environment(device),
        **({"processes": world().size} if parallel else {}),
    }
    return TrainedModel(model, config, metadata, None)
