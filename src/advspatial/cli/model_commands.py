"""The commands about a model: ``advspatial train`` and ``advspatial evaluate``, and the dataset and model
options every command that needs a model shares (:func:`model_options`, :func:`load_model_and_data`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .options import dataclass_options


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that needs a dataset and a model."""
    options = [
        click.option("--dataset", default="fashion-mnist", show_default=True,
                     help="Dataset name (advspatial list datasets), e.g. imagefolder:PATH."),
        click.option("--model", "model_name", default="smallcnn", show_default=True,
                     help="Model spec: registered or zoo name (advspatial list models), FILE.py:factory, "
                          "package.module:factory, torchvision:NAME, timm:NAME, hf:PATH, or a TorchScript/state-dict "
                          "file."),
        click.option("--weights", default=None,
                     help="State-dict file loaded into a registered/zoo model or a factory."),
        click.option("--arch", default=None, help="Architecture for a state-dict --model file."),
        click.option("--model-seed", default=0, show_default=True, help="Training seed of a cached model."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--subset", default="stratified", show_default=True,
                     type=click.Choice(["stratified", "random", "first"]), help="Which --n test images (seeded)."),
        click.option("--image-size", default=0, show_default=True, type=int,
                     help="Folder datasets: image side in pixels (0: a zoo model's input size, else 32)."),
        click.option("--fit", default="crop", show_default=True, type=click.Choice(["crop", "stretch"]),
                     help="Folder datasets: keep the aspect ratio (centre crop) or stretch."),
        click.option("--class-map", default="",
                     help="Folder datasets: TSV of model output index, folder name[, name]."),
        click.option("--crop-fraction", default=0.0, show_default=True, type=float,
                     help="Folder datasets, --fit crop: centre crop side / shorter side (0: a zoo model's, else 1)."),
        click.option("--progress/--no-progress", default=True, show_default=True,
                     help="Progress bars on stderr (plain lines when stderr is not a terminal; TQDM_DISABLE=1 "
                          "also turns them off)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def load_model_and_data(options: dict[str, Any], n: int, seed: int, split: str = "test"):
    """(model, images) of a command given the :func:`model_options`: validated, the model fitted to the data."""
    from ..data import load_dataset
    from ..data.subset import select
    from ..errors import check_range, check_seed
    from ..experiments.context import check_model_fits_data
    from ..experiments.settings import dataset_options, note_foreign_image_size
    from ..model_cache import resolve_model
    from ..models import parse_model_spec
    from ..runtime import pick_device

    o = options
    check_range("n", n, 1)
    check_seed("seed", seed)
    check_seed("model_seed", o["model_seed"])
    pick_device(o["device"])
    parse_model_spec(o["model_name"], o["weights"], o["arch"])  # validate before any training
    loader_options = dataset_options(o["dataset"], o["model_name"], o["image_size"], o["fit"], o["class_map"],
                                     o["crop_fraction"])
    data = select(load_dataset(o["dataset"], split, **loader_options), n, o["subset"], seed)
    device = pick_device(o["device"])
    model = resolve_model(o["dataset"], o["model_name"], arch=o["arch"], seed=o["model_seed"], device=device,
                          weights=o["weights"], num_classes=data.num_classes, image_shape=data.image_shape,
                          progress=o.get("progress", True))
    check_model_fits_data(model, data, device, o["model_name"])
    note_foreign_image_size(o["model_name"], o["dataset"], o["image_size"])
    return model, data


def train_command() -> click.Command:
    """``advspatial train``: an option per field of :class:`~advspatial.training.TrainConfig` (``--model`` for
    ``arch``), plus ``--force``, ``--device`` and ``--progress``. Built on first use (it imports the training)."""
    from ..training import TrainConfig

    overrides: dict[str, dict[str, Any]] = {"arch": {"flags": ["--model"]},
                                            "norm": {"type": click.Choice(["linf", "l2"])},
                                            "train_limit": {"show_default": False}}
    params = dataclass_options(TrainConfig, overrides=overrides) + [
        click.Option(["--force"], is_flag=True, help="Retrain even when a cached checkpoint exists."),
        click.Option(["--device"], default="auto", show_default=True),
        click.Option(["--progress/--no-progress"], default=True, show_default=True,
                     help="Progress bars on stderr (plain lines when stderr is not a terminal; TQDM_DISABLE=1 "
                          "also turns them off)."),
    ]
    return click.Command("train", callback=train, params=params,
                         help="Train a model (or load it from the cache) and print its test accuracy. Under "
                              "torchrun the processes train it together (DistributedDataParallel; --batch-size is "
                              "the global batch).")


def train(force: bool, device: str, progress: bool, **fields: Any) -> None:
    """Train the model ``fields`` describe (or load it from the cache) and print its test accuracy."""
    from ..distributed import world
    from ..model_cache import get_or_train
    from ..runtime import pick_device
    from ..training import TrainConfig

    config = TrainConfig(**fields).validate()
    together = world().is_distributed  # under torchrun: one model, DistributedDataParallel (docs/scale-out.md)
    trained = get_or_train(config, pick_device(device), progress=progress, force=force, data_parallel=together)
    if not world().is_main:
        return
    meta = trained.metadata
    click.echo(f"{config.arch} on {config.dataset} ({config.mode}): test accuracy {meta['test_accuracy']:.4f}, "
               f"trained in {meta['train_seconds']:.1f} s; checkpoint {trained.path}")


@click.command()
@model_options
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "test"]))
@click.option("--n", default=None, type=int, help="Evaluate on N images only (see --subset; default: all).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the --subset draw.")
@click.option("--batch-size", default=100, show_default=True, type=int)
def evaluate(split: str, n: int | None, seed: int, batch_size: int, **options: Any) -> None:
    """Clean accuracy of a model on a dataset, with its 95% Wilson interval."""
    from ..statistics.accuracy import wilson_interval
    from ..training import evaluate_accuracy

    model, data = load_model_and_data(options, 10**9 if n is None else n, seed, split)  # --n 0: refused, not all
    correct = round(evaluate_accuracy(model, data, batch_size) * len(data))
    share = wilson_interval(correct, len(data))
    click.echo(f"{options['model_name']} on {options['dataset']} {split} ({len(data)} images): accuracy "
               f"{share.value:.4f} [95% CI {share.low:.4f}, {share.high:.4f}]")
