"""The context every experiment works in: the model, its test images, the run directory, the batch loop."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import torch
from torch import nn

from ..data import ImageDataset, load_dataset
from ..data.imagefolder import split_root
from ..data.subset import select
from ..data.tensors import has_own_training_set
from ..distributed import map_batches, on_every_rank
from ..environment import model_work_root
from ..errors import ConfigError, ModelError
from ..files import atomic_write_text
from ..models.loading import state_checksum
from ..models.outputs import check_logits, guard_outputs
from ..model_work import MODEL_IDENTITY, ModelWorkStore
from ..models.spec import code_checksum
from ..rundir import RunDir
from ..runtime import batch_slices, pick_device
from .forecast import announce
from .registry import experiments
from .settings import ExperimentConfig, note_foreign_image_size
from .stage import CLEAN, AttackStage, CleanBatch

if TYPE_CHECKING:
    from ..attacks import Attack, AttackResult

#: the settings an experiment's context carries (its config dataclass)
ConfigT = TypeVar("ConfigT", bound=ExperimentConfig, covariant=True)


@dataclass
class ExperimentContext(Generic[ConfigT]):
    """The model, the first ``n`` test images, the run directory and the deterministic batches; ``config``: the
    experiment's settings, of its own config type (``ExperimentContext[PseConfig]``), so their reads are checked."""

    config: ConfigT
    rundir: RunDir
    model: nn.Module
    data: ImageDataset
    device: torch.device
    slices: list[slice]

    def batch(self, sl: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images on the device, labels on the device, global sample ids) of one batch slice."""
        return self.data.images(sl).to(self.device), self.data.labels[sl].to(self.device), self.data.ids[sl]

    def each_batch(self, fn: Callable[[int, Any], T], desc: str = "", slices: Sequence[Any] | None = None,
                   then: Callable[[int, Any, T], Any] | None = None) -> list[Any]:
        """``[fn(b, sl) for b, sl in enumerate(slices)]`` (default: the run's batches) with a progress bar,
        shared among the processes of a ``torchrun`` launch.

        Every loop over batches goes through here, so that scale-out happens in one
        place (:func:`advspatial.distributed.map_batches`). ``fn`` must depend only on
        its batch (seeds keyed by sample ids, nothing carried from one batch to the
        next: accumulate the returned list instead) and save its costly work as stages
        of batch ``b`` (a :class:`~advspatial.experiments.stage.Stage`: ``STAGE.get(self.rundir, compute, b)``): under
        torchrun it runs once on this process's batches, then on every batch in order,
        loading what the other processes saved. ``then(b, sl, value)`` consumes each value in
        batch order, once per batch (accumulators, rows): see :func:`~advspatial.distributed.map_batches`.
        ``slices`` may also be other independent units of work, e.g. (configuration, batch) pairs.
        """
        return map_batches(fn, self.slices if slices is None else slices, desc=desc,
                           progress=bool(getattr(self.config, "progress", True)), then=then)

    def each_batch_columns(self, fn: Callable[[int, Any], Mapping[str, torch.Tensor]], desc: str = "",
                           slices: Sequence[Any] | None = None) -> dict[str, torch.Tensor]:
        """:meth:`each_batch` over ``fn`` returning per-image columns ``{name: (B, ...) tensor}``: each column
        concatenated over the batches, in batch order."""
        parts: dict[str, list[torch.Tensor]] = {}

        def collect(b: int, item: Any, columns: Mapping[str, torch.Tensor]) -> None:
            for name, values in columns.items():
                parts.setdefault(name, []).append(values)

        self.each_batch(fn, desc=desc, slices=slices, then=collect)
        return {name: torch.cat(values) for name, values in parts.items()}

    def attack(self, stage: AttackStage, attack: Attack, b: int, sl: slice | None = None,
               target: torch.Tensor | None = None) -> AttackResult:
        """``attack`` on batch ``b`` (``sl``, default the run's batch b; towards ``target`` when given), seeds keyed
        by the images' global ids: the cached ``stage`` of that batch, so a resumed or sharded run reads it back."""

        def compute() -> AttackResult:
            x, y, ids = self.batch(self.slices[b] if sl is None else sl)
            return attack.run(x, y, target=None if target is None else target.to(self.device), sample_ids=ids)

        return stage.get(self.rundir, compute, b)

    def clean(self, b: int) -> CleanBatch:
        """The model's clean logits and predictions on batch ``b`` (the shared stage :data:`~.stage.CLEAN`)."""

        def compute() -> CleanBatch:
            x, _, _ = self.batch(self.slices[b])
            with torch.no_grad():
                logits = self.model(x)
            return CleanBatch(logits.cpu(), logits.argmax(1).cpu())

        return CLEAN.get(self.rundir, compute, b)

    def derive(self, cls: type[C], **extra: Any) -> C:
        """The same context as an experiment's subclass ``cls`` with its ``extra`` fields."""
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, **extra)


C = TypeVar("C", bound=ExperimentContext[Any])
T = TypeVar("T")
#: the config type of one call
Config = TypeVar("Config", bound=ExperimentConfig)


def prepare_context(config: Config, rundir: RunDir, images: ImageDataset | None = None) -> ExperimentContext[Config]:
    """Seed, pick the device, load (or train and cache) the model and the ``config.n`` test images
    (of ``images`` when given, else of ``config.dataset``)."""
    with rundir.passes.phase("setup"):
        device = pick_device(config.device)
        torch.manual_seed(config.seed)
        data = test_images(config, rundir, images)
        model = on_every_rank(lambda: load_checked_model(config, data, device))  # one rank's failure stops all
        identity = run_identity(config, model, data)
        bind_run(rundir, identity)
        attach_model_work(rundir, config, identity, device)
    if not rundir.has_results():  # a resumed run has less left to do than any forecast would say
        with rundir.passes.phase("forecast"):
            said = announce(experiment_of(config), config, model, data.head(config.batch_size).images().to(device),
                            rundir.model_work.stored_count() if rundir.model_work is not None else 0)
        rundir.forecast = None if said is None else said.record()
    rundir.passes.watch(model)
    rundir.passes.images = len(data)
    return ExperimentContext(config, rundir, model, data, device, list(batch_slices(len(data), config.batch_size)))


def experiment_of(config: ExperimentConfig) -> str:
    """The name of the experiment whose settings ``config`` is ('' when none is registered for its type)."""
    return next((name for name, experiment in experiments().items() if type(config) is experiment.config_cls), "")


def run_identity(config: ExperimentConfig, model: nn.Module, data: ImageDataset) -> dict[str, Any]:
    """What a run's stages belong to: the checksums of the model's weights, its code and the images, and what the
    model was built from (:func:`~advspatial.models.provenance.model_provenance`: package versions, the files its
    factory read, the modules its build imported) (:func:`bind_run`)."""
    from ..models.provenance import model_provenance

    return {"model_sha256": state_checksum(model), "model_code_sha256": code_checksum(model, config.model),
            "images_sha256": data.checksum(), PROVENANCE: model_provenance(model)}


#: the key of ``run.json`` that holds what the model was built from (compared entry by entry on a resume)
PROVENANCE = "model_provenance"

#: what each checksum of :func:`run_identity` is of, for the message when a resumed run finds another
IDENTITY_WHAT = {"model_sha256": "model weights", "model_code_sha256": "model code",
                 "images_sha256": "images (their content, labels or selection changed)"}


def bind_run(rundir: RunDir, identity: Mapping[str, Any]) -> None:
    """Tie ``rundir`` to :func:`run_identity` (refused in one line when a resumed run finds other checksums, other
    package versions, or other content of a file or module the model's build read)."""
    from ..models.provenance import provenance_changes

    for key, checksum in identity.items():
        if key == PROVENANCE:
            rundir.bind_details(key, checksum, functools.partial(provenance_changes, current=checksum),
                                "packages or model inputs")
        else:
            rundir.bind(key, checksum, IDENTITY_WHAT[key])


def attach_model_work(rundir: RunDir, config: ExperimentConfig, identity: Mapping[str, Any],
                      device: torch.device) -> None:
    """Give ``rundir`` the model cache's store of this model's model-only stages (:mod:`advspatial.model_work`),
    unless ``config.reuse_model_work`` is off or ``$ADVSPATIAL_MODEL_WORK`` is ``off``."""
    root = model_work_root()
    if not config.reuse_model_work or root is None:
        rundir.model_work = None
        return
    model = {key: identity[key] for key in MODEL_IDENTITY}
    model["packages"] = dict(identity.get(PROVENANCE, {}).get("packages", {}))
    rundir.model_work = ModelWorkStore(root, model, device.type)


def load_checked_model(config: ExperimentConfig, data: ImageDataset, device: torch.device) -> nn.Module:
    """The model ``config`` names (trained and cached when it is a registered name without weights), in eval
    mode on ``device``, checked against ``data`` by one forward pass (:func:`check_model_fits_data`)."""
    from ..model_cache import resolve_model

    model = resolve_model(config.dataset, config.model, arch=config.arch or None, seed=config.model_seed,
                          device=device, progress=config.progress, weights=config.weights or None,
                          num_classes=data.num_classes, image_shape=data.image_shape).eval()
    check_model_fits_data(model, data, device, config.model)
    note_foreign_image_size(config.model, config.dataset, config.image_size)
    return model


def test_images(config: ExperimentConfig, rundir: RunDir | None = None,
                full: ImageDataset | None = None) -> ImageDataset:
    """The ``config.n`` test images the experiment works on (``config.subset``, seeded by ``config.seed``),
    drawn from ``full`` (default: the test split of ``config.dataset``).

    The chosen dataset indices (the images' global ids) are written to
    ``subset.csv`` in the run directory, so the sample can be reproduced and audited.
    """
    if full is None:
        full = load_dataset(config.dataset, "test", **config.dataset_options())
    data = select(full, config.n, config.subset, config.seed)
    if rundir is not None:
        lines = ["index,label"] + [f"{int(i)},{int(y)}" for i, y in zip(data.ids, data.labels, strict=True)]
        atomic_write_text(rundir.path / "subset.csv", "\n".join(lines) + "\n")
    return data


def train_images(config: ExperimentConfig, n: int, exclude: torch.Tensor | None = None) -> ImageDataset:
    """``n`` training images, class-stratified (seed ``config.seed``), for priors and statistics of a defence.

    A folder dataset without separate ``train/`` and ``test/`` folders has one
    image set for both splits: the images in ``exclude`` (the global ids of the
    test images being evaluated) are then left out, so a prior never sees them.
    """
    full = load_dataset(config.dataset, "train", **config.dataset_options())
    if exclude is not None and shared_splits(config.dataset):
        keep = ~torch.isin(full.ids, exclude.cpu())
        if not bool(keep.any()):
            raise ConfigError(f"{config.dataset} has no training images beside the {len(exclude)} test images; "
                              "use a smaller n or a folder with train/ and test/")
        full = full.subset(torch.nonzero(keep).flatten())
    return select(full, n, "stratified", config.seed)


def shared_splits(dataset: str) -> bool:
    """True when the dataset's train and test splits are the same images (a folder without train/ and test/,
    an ``arrays:`` file, in-memory images without a training set)."""
    if dataset.startswith("arrays:"):
        return True
    if dataset.startswith("memory:"):
        return not has_own_training_set(dataset)
    if not dataset.startswith("imagefolder:"):
        return False
    root = Path(dataset.split(":", 1)[1]).expanduser()
    return split_root(root, "train") == split_root(root, "test")


def check_model_fits_data(model: nn.Module, data: ImageDataset, device: torch.device, spec: str = "") -> None:
    """One forward pass on one image: the model takes the images, returns finite (N, K) logits, K > every label;
    then every later output of the model is checked the same way (:func:`advspatial.models.outputs.guard_outputs`:
    the batch size, K, a floating dtype, finite values, a gradient where the caller needs one).

    Turns shape and class-count mismatches into one clear ModelError before any work, and a model that goes
    wrong later (NaN after the first image) into one clear ModelError where it happens.
    """
    x = data.images(slice(0, 1)).to(device)
    try:
        with torch.no_grad():
            logits = model(x)
    except Exception as exc:  # the model's own error: wrong channels, size...
        raise ModelError(f"the model cannot take {data.name} images of shape {tuple(x.shape[1:])}: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    logits = check_logits(logits, spec, batch=1)
    top = int(data.labels.max())
    if top >= logits.shape[1]:
        remedy = ("give --class-map (model output index, folder name) so labels are the model's indices"
                  if data.name == "imagefolder" else f"labels must be the model's output indices, 0 to "
                  f"{logits.shape[1] - 1}")
        raise ModelError(f"the model has {logits.shape[1]} outputs but the data has label {top} "
                         f"({data.num_classes} classes); {remedy}")
    if logits.shape[1] != data.num_classes and data.name == "imagefolder":
        # folder labels are folder indices, not model outputs: a prediction would name a class of the model
        # as if it were the folder of the same index
        raise ModelError(f"the model has {logits.shape[1]} outputs but the data has {data.num_classes} classes "
                         f"({data.name}); its predictions would name classes the data does not have - for a folder "
                         "dataset give --class-map (model output index, folder name) with one line per output")
    guard_outputs(model, spec, int(logits.shape[1]))
