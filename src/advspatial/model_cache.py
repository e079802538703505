"""Trained models cached on disk, and a ready model from any spec.

A checkpoint of :func:`advspatial.training.train_model` is keyed by dataset, architecture, training mode,
every config field and the seed; it lives under ``<cache>/models/`` as ``<stem>.pt`` (state dict, loaded
with ``weights_only=True``) beside ``<stem>.json`` (metadata: test accuracy, training time, the resolved
config). :func:`get_or_train` loads it or trains it once (a file lock keeps parallel processes from
training it twice; under torchrun ``advspatial train`` has the processes train it together, rank 0
writing it); :func:`resolve_model` turns a model spec into a ready model, training a registered
architecture on first use.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .data import dataset_spec, load_dataset
from .distributed import from_main, main_only, on_every_rank, world
from .environment import cache_dir
from .errors import ConfigError, ModelError, first_line
from .models import load_model, parse_model_spec
from .models.layout import in_fast_layout
from .runtime import pick_device
from .training import TrainConfig, TrainedModel, build_for, refuse_training_on_test_images, train_model


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock so that parallel processes do not train the same model twice (the second waits)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot train into the model cache {path.parent} ({exc.strerror or exc}); set "
                          "ADVSPATIAL_CACHE to a writable directory") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def checkpoint_paths(config: TrainConfig) -> tuple[Path, Path]:
    directory = cache_dir("models")
    return directory / f"{config.stem()}.pt", directory / f"{config.stem()}.json"


def load_cached(config: TrainConfig, device: torch.device | str = "cpu") -> TrainedModel | None:
    """The cached model for ``config``, or None when there is none.

    A checkpoint that is there but cannot be read, or does not fit the model built
    for the dataset, is a :class:`ModelError` naming the file: it is never retrained
    in silence.
    """
    from .files import load_torch_file

    weights, meta = checkpoint_paths(config)
    if not (weights.is_file() and meta.is_file()):
        return None
    dataset = load_dataset(config.dataset, "test")
    model = build_for(config, dataset)
    remedy = f"delete it and {meta.name} to retrain"
    state = load_torch_file(weights, f"cached checkpoint {weights} is unreadable", remedy)
    try:
        model.load_state_dict(state)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, AttributeError) as exc:
        shape = "x".join(map(str, dataset.image_shape))
        raise ModelError(f"cached checkpoint {weights} does not fit {config.arch} for {config.dataset} test images "
                         f"of {shape} ({first_line(exc, 120)}); if the dataset files changed, check them, else "
                         f"{remedy}") from exc
    try:
        metadata = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cached metadata {meta} is unreadable ({first_line(exc)}); {remedy}") from exc
    return TrainedModel(model.to(device).eval(), config, metadata, weights)


def announce_training(config: TrainConfig, weights: Path, force: bool) -> None:
    """One line on stderr before a training starts: what is trained, why, and where it is cached."""
    why = "--force asks to retrain it" if force else f"no cached checkpoint {weights.name}"
    limit = f"{config.train_limit} training images" if config.train_limit else "all training images"
    print(f"advspatial: training {config.arch} on {config.dataset} ({config.mode}, seed {config.seed}, "
          f"{config.epochs} epochs on {limit}): {why}; it is cached in {weights.parent}", file=sys.stderr, flush=True)


def get_or_train(
    config: TrainConfig, device: torch.device | str | None = None, progress: bool = True, force: bool = False,
    data_parallel: bool = False,
) -> TrainedModel:
    """Load the cached model for ``config``, training (and caching) it first if needed.

    A cached model is read without taking the lock (a read-only cache works); the
    lock is taken only to train, so parallel processes train a model once.
    ``data_parallel`` under torchrun (``advspatial train``): every process calls it
    and they train the model together (:func:`_get_or_train_together`).
    """
    config.validate()
    device = pick_device("auto") if device is None else torch.device(device)
    if data_parallel and world().is_distributed:
        return _get_or_train_together(config, device, progress, force)
    weights, meta = checkpoint_paths(config)
    if not force and (cached := load_cached(config, device)) is not None:
        return cached
    with _file_lock(weights.with_suffix(".lock")):
        if not force and (cached := load_cached(config, device)) is not None:
            return cached  # trained by another process while this one waited
        announce_training(config, weights, force)
        trained = train_model(config, device, progress)
        _save(trained, weights, meta)
        return trained


def _save(trained: TrainedModel, weights: Path, meta: Path) -> None:
    """Write a trained model into the cache (weights, then metadata; each atomically)."""
    from .files import atomic_torch_save, atomic_write_text

    atomic_torch_save(trained.model.state_dict(), weights)
    atomic_write_text(meta, json.dumps(trained.metadata, indent=2))
    trained.path = weights


def _get_or_train_together(config: TrainConfig, device: torch.device, progress: bool, force: bool) -> TrainedModel:
    """:func:`get_or_train` in every process of a torchrun launch, which train the model together.

    Rank 0 holds the lock (another command training the same model waits, and is waited for) and decides:
    a cached model is loaded there and its weights sent to every process; else every process trains its shard
    (:func:`train_model` with ``data_parallel``) and rank 0 alone writes the checkpoint.
    """
    weights, meta = checkpoint_paths(config)
    with contextlib.ExitStack() as held:
        on_every_rank(lambda: held.enter_context(_file_lock(weights.with_suffix(".lock"))) if world().is_main else None)

        def cached_state() -> tuple[dict[str, torch.Tensor], dict] | None:
            cached = None if force else load_cached(config, "cpu")
            return None if cached is None else (cached.model.state_dict(), cached.metadata)

        found = from_main(cached_state)
        if found is not None:
            model = build_for(config, load_dataset(config.dataset, "test"))
            model.load_state_dict(found[0])
            return TrainedModel(model.to(device).eval(), config, found[1], weights)
        if world().is_main:
            announce_training(config, weights, force)
        trained = train_model(config, device, progress, data_parallel=True)
        main_only(lambda: _save(trained, weights, meta))
        trained.path = weights
        return trained


def resolve_model(
    dataset: str, spec: str = "smallcnn", arch: str | None = None, seed: int = 0,
    device: str | torch.device = "auto", progress: bool = True, weights: str | None = None,
    num_classes: int | None = None, image_shape: tuple[int, int, int] | None = None,
) -> nn.Module:
    """A ready model for ``dataset`` from a spec (``advspatial.models.spec``), in eval mode on ``device``.

    A registered architecture name without ``weights`` gives the naturally
    trained model for that dataset (trained on first use, then cached);
    anything else is loaded as the spec says (zoo, factory, file, library); an
    architecture it builds (a state-dict file with ``arch``) gets ``num_classes``
    outputs and ``image_shape`` input (default: the dataset's, else 10 and 3x32x32),
    so a 2-class folder takes a 2-class checkpoint. A built-in architecture on the CPU comes in the memory layout
    it runs fastest in (:func:`~advspatial.models.layout.in_fast_layout`; its numbers agree to float rounding).
    """
    target = pick_device(device) if isinstance(device, str) else device
    source = parse_model_spec(spec, weights, arch)
    if source.needs_training:
        refuse_training_on_test_images(dataset, spec)
        return in_fast_layout(get_or_train(TrainConfig(dataset=dataset, arch=spec, seed=seed), target, progress).model)
    info = dataset_spec(dataset)
    c, h, _ = image_shape or info.image_shape or (3, 32, 32)
    model = load_model(source, in_channels=c, num_classes=num_classes or info.num_classes or 10, input_size=h)
    return in_fast_layout(model.to(target).eval())
