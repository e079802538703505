"""The models of experiment ``localized-training``: trained from scratch (the model cache keeps them) or fine-tuned
from one pretrained start on the same images in the same order (the run directory keeps them), one per training
mode and training seed, each with the importance map that is its RoI."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from ...data import ImageDataset
from ...distributed import map_batches
from ...errors import ConfigError
from ...files import atomic_write_text
from ...finetuning import FinetuneConfig, finetune_model
from ...model_cache import get_or_train
from ...models.loading import state_checksum
from ...rundir import RunDir
from ...runtime import batch_slices, model_device
from ...training import TrainedModel
from ..context import load_checked_model, train_images
from ..gate import resolve_importance
from .config import FINETUNE_IMAGES, MASKED, MODES, LocalizedConfig, finetune_config, train_config
from .region import mask_uses_importance, region_mask_fn


def train_models(config: LocalizedConfig, device: torch.device, timings: dict[str, float]) -> dict[str, TrainedModel]:
    """The models, trained on first use and cached; wall time per model in ``timings``."""

    def train(_: int, mode: str) -> TrainedModel:
        started = time.perf_counter()
        trained = get_or_train(train_config(config, mode), device, config.progress)
        trained.model.eval()
        # setdefault: under torchrun a process calls this again to load the model; the training time is kept
        timings.setdefault(f"train/{mode}", round(time.perf_counter() - started, 2))
        return trained

    return dict(zip(MODES, map_models(train), strict=True))


T = TypeVar("T")


def map_models(job: Callable[[int, str], T]) -> list[T]:
    """``job(i, mode)`` for every mode, in order; under torchrun each model is trained by one process (the
    model cache or the run directory keeps it) and then loaded by all (:func:`~advspatial.distributed.map_batches`)."""
    return map_batches(job, list(MODES), desc="models", progress=False)


def load_start(config: LocalizedConfig, data: ImageDataset, device: torch.device) -> nn.Module:
    """The pretrained start model ``config.model`` in eval mode, checked against the data by one forward pass."""
    return load_checked_model(config, data, device)


def finetune_images(config: LocalizedConfig, data: ImageDataset) -> ImageDataset:
    """The training images of fine-tuning: ``train_limit`` (0: FINETUNE_IMAGES) class-stratified ones (seed
    ``config.seed``); on a dataset with one image set for both splits, never one of the evaluated ``data``."""
    return train_images(config, config.train_limit or FINETUNE_IMAGES, exclude=data.ids)


def ids_checksum(ids: torch.Tensor) -> str:
    """16 hex digits identifying a set of global sample ids (part of a fine-tuned model's key)."""
    return hashlib.sha256(ids.to(torch.int64).cpu().numpy().tobytes()).hexdigest()[:16]


def training_mask_source(config: LocalizedConfig, train: ImageDataset, method: str) -> str:
    """Where the localized model's training background comes from, in words (also part of its key)."""
    if mask_uses_importance("background", train):
        return (f"the complement of the top {config.fraction:.0%} of the start model's {method} map of the true class "
                f"(ties broken by sample id, seed {config.seed})")
    return "the complement of the dataset's own foreground masks"


def training_foreground(config: LocalizedConfig, rundir: RunDir, start: nn.Module, train: ImageDataset,
                        method: str) -> torch.Tensor:
    """(N,H,W) bool foreground of every training image for localized fine-tuning: the complement of the
    evaluation's ``background`` mask, computed once on the *start* model (its ``method`` map of the true class
    for colour data without masks), per global sample id; cached per batch in the run directory."""
    background = region_mask_fn(dataclasses.replace(config, mask="background"), train, start, method)

    def foreground(sl: slice) -> Callable[[], torch.Tensor]:
        return lambda: background(sl)[:, 0] < 0.5

    parts = [rundir.cached(f"finetune/masks/{method}-f{config.fraction:g}/batch-{b:05d}", foreground(sl))
             for b, sl in enumerate(batch_slices(len(train), config.batch_size))]
    return torch.cat(parts)


def check_start(rundir: RunDir, config: LocalizedConfig, sha256: str) -> None:
    """A resumed run must fine-tune from the same weights its stages were computed with."""
    recorded = rundir.cached("finetune/start", lambda: {"model": config.model, "weights": config.weights,
                                                        "sha256": sha256})
    if recorded["sha256"] != sha256:
        raise ConfigError(f"{rundir.path} was fine-tuned from {config.model} with weights sha256 "
                          f"{recorded['sha256'][:12]}, but it now has {sha256[:12]}: the start model changed; "
                          "start a new run (--out)")


@dataclass
class Start:
    """The pretrained start of fine-tuning: the model, its weights' checksum, the training images, and the
    importance map that cut the localized model's training background."""

    model: nn.Module
    sha256: str
    train: ImageDataset
    method: str
    why: str
    mask_source: str


def finetune_models(config: LocalizedConfig, rundir: RunDir, data: ImageDataset, device: torch.device,
                    timings: dict[str, float]) -> tuple[dict[str, TrainedModel], Start]:
    """The models fine-tuned from the same start on the same images in the same order (cached in the
    run directory); wall time per model in ``timings``."""
    started = time.perf_counter()
    start = load_start(config, data, device)
    sha = state_checksum(start)
    check_start(rundir, config, sha)
    train = finetune_images(config, data)
    probe = train.images(slice(0, min(2, len(train)))).to(device)
    method, why = resolve_importance(config.importance, start, probe)
    source = training_mask_source(config, train, method)
    foreground: list[torch.Tensor] = []

    def masks_fn(idx: torch.Tensor) -> torch.Tensor:
        if not foreground:  # computed (or loaded) on first use: a resumed run with cached models never needs it
            foreground.append(training_foreground(config, rundir, start, train, method))
        return foreground[0][idx]

    rows = ["index,label"] + [f"{int(i)},{int(y)}" for i, y in zip(train.ids, train.labels, strict=True)]
    atomic_write_text(rundir.path / "train_subset.csv", "\n".join(rows) + "\n")
    timings["finetune/start"] = round(time.perf_counter() - started, 2)

    def finetune(_: int, mode: str) -> TrainedModel:
        started = time.perf_counter()
        fc = finetune_config(config, mode, sha, ids_checksum(train.ids), source)
        stage = f"finetune/{mode}-{fc.key()}"

        def compute() -> dict[str, Any]:
            tm = finetune_model(start, fc, train, masks_fn if fc.mode in MASKED else None, config.progress)
            return {"state_dict": {k: v.detach().cpu() for k, v in tm.model.state_dict().items()},
                    "metadata": tm.metadata}

        saved = rundir.cached(stage, compute)
        model = copy.deepcopy(start)
        model.load_state_dict(saved["state_dict"])
        # setdefault: under torchrun a process calls this again to load the model; the training time is kept
        timings.setdefault(f"train/{mode}", round(time.perf_counter() - started, 2))
        return TrainedModel(model.to(device).eval(), fc, saved["metadata"], rundir.stage_path(stage))

    trained = dict(zip(MODES, map_models(finetune), strict=True))
    return trained, Start(start, sha, train, method, why, source)


def resolve_methods(config: LocalizedConfig, models: dict[str, nn.Module],
                    data: ImageDataset) -> dict[str, dict[str, str]]:
    """{mode: {"method", "why"}}: the importance map of each model (``auto``: by its head type)."""
    out = {}
    for mode, model in models.items():
        probe = data.images(slice(0, min(2, len(data)))).to(model_device(model))
        method, why = resolve_importance(config.importance, model, probe)
        out[mode] = {"method": method, "why": why}
    return out


def seed_name(mode: str, k: int) -> str:
    """The model name of ``mode`` trained with seed ``model_seed + k`` (k = 0: the mode itself)."""
    return mode if k == 0 else f"{mode}@seed{k}"


def training_facts(trained: TrainedModel) -> dict[str, Any]:
    """What the model cache knows about a model: full test-set accuracy (NaN for a fine-tuned one), training
    time, checkpoint (a fine-tuned model's run-directory stage)."""
    meta = trained.metadata
    facts = {"test_accuracy": meta.get("test_accuracy", math.nan), "train_seconds": meta.get("train_seconds", math.nan),
             "epochs": trained.config.epochs, "checkpoint": str(trained.path) if trained.path else ""}
    if isinstance(trained.config, FinetuneConfig):
        facts.update({"steps": meta.get("steps", 0), "last_epoch_loss": meta.get("last_epoch_loss", math.nan),
                      "key": meta.get("key", "")})
    return facts

