"""The Python entry points: run an experiment on your model object and your tensors, from a notebook.

::

    import advspatial
    result = advspatial.run("spatial", model=net, data=(images, labels), preset="cifar10", n=200)
    result.claims          # one dict per claim: subject, effect with its CI, verdict, gates
    result.report          # Path of report.html

    result = advspatial.analyze(net, clean=x, adv=x_adv, labels=y, source="torchattacks")

Both write the same run directory as ``advspatial run`` (config.yaml,
metrics.json, per_image.csv, report.html, figures/) and go through the same
validation, stage caching and resume. A model object and in-memory images are
named in config.yaml by their checksums (``object:Net-3f2a...``,
``memory:images-9c1e...``): the same objects resume a run, others are refused.

The examples in the docstrings take ``model`` and ``other_model`` (classifiers on images in [0,1]), ``images`` and
``labels`` as given; the test suite runs them with small CNNs and twelve 28x28 images, in a temporary directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import ConfigError

if TYPE_CHECKING:
    from .studies.run import StudyResult


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or another KeyboardInterrupt) stopped :func:`run`, :func:`analyze` or :func:`study`. The stages
    finished so far are saved in the run directory, and the message says how to complete the work: the same call
    with ``resume=True``. A KeyboardInterrupt still, so code that catches those keeps working; raised without the
    interrupted frames (the traceback is one line of yours and one of advspatial's)."""


def interrupted(what: str, out: str | Path) -> Interrupted:
    """The :class:`Interrupted` to raise for a KeyboardInterrupt (``raise interrupted(...) from None``): its message
    ends with how to complete the ``what`` ("run", "study") kept in ``out``, as the CLI prints ``--resume``."""
    return Interrupted(f"advspatial: aborted; complete the {what} with: the same call and resume=True "
                       f"(out={str(out)!r}); its finished stages are kept")


@dataclass
class RunResult:
    """What a run returns: the experiment, its metrics and per-image rows, the summary text, the run directory.

    Attributes:
        experiment: the experiment's registered name.
        metrics: the content of ``metrics.json``.
        rows: the rows of ``per_image.csv`` (one dict per image, or per image and attack).
        summary: the text ``advspatial run`` prints.
        rundir: the run directory.
        config: the resolved, validated settings (an experiment config dataclass).
    """

    experiment: str
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: str
    rundir: Path
    config: Any

    @property
    def report(self) -> Path:
        """The HTML report."""
        return self.rundir / "report.html"

    @property
    def claims(self) -> list[dict[str, Any]]:
        """Every claim with its effect, confidence interval, correction, gates and verdict ([] if none)."""
        return list(self.metrics.get("claims", []))

    def __repr__(self) -> str:
        return (f"RunResult({self.experiment!r}, {len(self.rows)} rows, {len(self.claims)} claims, "
                f"rundir={str(self.rundir)!r})")


def run(
    experiment: str = "spatial",
    model: nn.Module | str | None = None,
    data: Any = None,
    *,
    train_data: Any = None,
    config: str | Path | None = None,
    quick: bool = False,
    resume: bool = False,
    **settings: Any,
) -> RunResult:
    """Run (or, with ``resume=True``, complete) ``experiment`` and return its results.

    Args:
        experiment: a registered name (``advspatial list experiments``).
        model: an ``nn.Module`` taking images in [0,1] (wrap normalization into it), or a model spec string.
        data: an :class:`~advspatial.data.ImageDataset`, a pair ``(images, labels)`` of tensors or arrays
            (images (N,C,H,W) or (N,H,W,C), uint8 or float in [0,1]), or a dataset spec string.
        train_data: separate training images for the experiments that use them (the defence's prior,
            localized fine-tuning); without them training images are drawn from ``data``, never the
            evaluated ones.
        config: a YAML file of settings (``settings`` override it).
        quick: the experiment's CI-sized preset.
        resume: complete the run in ``out`` (same settings, same objects). Ctrl-C raises :class:`Interrupted`
            (a KeyboardInterrupt) whose message says so; the stages already finished are reused.
        **settings: any setting of the experiment (``advspatial run EXPERIMENT --help``), e.g. ``n=200``,
            ``preset="cifar10"``, ``out="runs/mine"``, ``progress=False``.

    With in-memory images and no ``preset``, the preset follows the image shape
    (:func:`~advspatial.experiments.presets.preset_for_shape`): 3x32x32 -> cifar10, 3-channel >= 128 px ->
    imagenet, else none (the Fashion-MNIST defaults); the resolved preset is in ``result.config.preset``.

    A script started by ``torchrun`` shares the run among its processes (every process calls ``run`` with
    the same arguments and gets the same result; rank 0 writes the files): see docs/scale-out.md.

    Examples:
        A smoke test (``quick=True``: it checks that the pipeline runs and decides nothing) of the ``maps``
        measurement on your model and images; leave out ``quick`` and give a few hundred images for verdicts.

        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> import advspatial
        >>> result = advspatial.run("maps", model=model, data=(images, labels), attacks=["pgd"], quick=True, n=12,
        ...                         out="runs/example", progress=False)
        >>> len(result.rows), result.report.name          # one row per image and attack; report.html
        (12, 'report.html')
        >>> claim = result.claims[0]                      # each claim: an effect with its CI, gates and a verdict
        >>> sorted(claim["effect"])
        ['high', 'low', 'mean', 'n']
    """
    from .distributed import init_from_environment, world
    from .experiments import get_experiment, resolve_config, run_experiment
    from .progress import heartbeat

    init_from_environment()

    spec = get_experiment(experiment)
    values = dict(settings)
    if model is not None:
        values["model"] = model_spec(model)
    if data is not None:
        values["dataset"] = dataset_spec_of(data, train_data, values)
    elif train_data is not None:
        raise ConfigError("train_data needs data (the test images) too")
    if resume and not values.get("out"):
        raise ConfigError("resume=True needs out= (the run directory to complete)")
    resolved = resolve_config(spec, str(config) if config else None, values, quick)
    out = resolved.out or f"runs/{experiment}"
    try:  # a step that prints nothing for 30 s (no bar of its own) gets a "still working" line
        with heartbeat(f"{experiment}: {out}", enabled=world().is_main and bool(getattr(resolved, "progress", True))):
            result, rundir = run_experiment(experiment, resolved, resume=resume)
    except KeyboardInterrupt:
        raise interrupted("run", out) from None
    return RunResult(experiment, result.metrics, result.per_image, result.summary, rundir.path, resolved)


def analyze(
    model: nn.Module | str,
    clean: Any,
    adv: Any,
    labels: Any = None,
    *,
    source: str = "external",
    quick: bool = False,
    resume: bool = False,
    **settings: Any,
) -> RunResult:
    """The RoI/RoA measurement of adversarial examples made elsewhere (the ``analyze`` experiment).

    Args:
        model: the model the examples are analysed on (an ``nn.Module`` or a spec string).
        clean, adv: the clean and adversarial images, in the same order: tensors or arrays
            ((N,C,H,W) or (N,H,W,C), uint8 or float in [0,1]), or paths (``.pt``, ``.npy``, ``.npz``, or
            folders of image files with the same names).
        labels: the true labels (tensor, array or a file path); None: from the clean file if it has them,
            else the model's clean predictions (then every image counts as correct).
        source: the library or method that made the examples, shown in the report.
        **settings: settings of the measurement (``advspatial run analyze --help``), e.g. ``norm="l2"``,
            ``preset="cifar10"``, ``out="runs/analyze"``.

    Examples:
        Adversarial examples made by any code, measured without running an attack:

        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> import advspatial
        >>> from advspatial.attacks import PGD
        >>> x_adv = PGD(model, eps=0.1, steps=10)(images, labels)   # or torchattacks, ART, your own code
        >>> result = advspatial.analyze(model, clean=images, adv=x_adv, labels=labels, source="PGD", quick=True,
        ...                             out="runs/analyze-example", progress=False)
        >>> result.experiment, len(result.rows)
        ('analyze', 12)
    """
    values: dict[str, Any] = {"source": source, **settings}
    clean_spec, labels_setting = _images_spec(clean, labels)
    values["clean"] = clean_spec
    values["adv"] = _images_spec(adv, None)[0]
    if labels_setting is not None:
        values["labels"] = labels_setting
    if not isinstance(clean, (str, Path)):
        values.setdefault("preset", _preset_of(torch.as_tensor(_first(clean))))
    return run("analyze", model=model, quick=quick, resume=resume, **values)


# -- naming objects --------------------------------------------------------------------------

def study(
    models: Any,
    data: Any = None,
    *,
    out: str | Path = "runs/study",
    quick: bool = False,
    resume: bool = False,
    **settings: Any,
) -> StudyResult:
    """Measure the RoI/RoA co-location on several models over the same images and compare them
    (``advspatial study``): per model its own ``maps`` run under ``out/models/LABEL``, then a random-effects
    meta-analysis, paired contrasts, a meta-regression and the agreement between models (docs/study.md).

    Args:
        models: a mapping ``{label: model}`` or a list of models; each an ``nn.Module`` taking images in [0,1], a
            spec string, or a mapping with ``model`` and optional ``label``, ``weights``, ``arch``, ``preset``,
            ``image_size``, ``covariates``. At least 2.
        data: the images, as for :func:`run` (default: the ``dataset`` setting).
        out: the study's directory; ``resume=True`` completes it (a finished model is never recomputed), also
            after Ctrl-C (:class:`Interrupted`).
        quick: CI-sized settings (a smoke test: its verdicts decide nothing).
        **settings: any setting of the ``maps`` experiment shared by every model, e.g. ``n=200``, ``attacks=["pgd"]``.

    Examples:
        Two models on the same images (a smoke test here; leave out ``quick`` for verdicts):

        >>> import torch
        >>> from advspatial.models import build_model
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # any nn.Module
        ...                       nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # taking images
        ...                       nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()  # in [0,1]; untrained here
        >>> other_model = build_model("smallcnn").eval()
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> labels = model(images).argmax(1)              # (N,) labels: here the model's own predictions
        >>> import advspatial
        >>> result = advspatial.study({"a": model, "b": other_model}, data=(images, labels), attacks=["pgd"],
        ...                           quick=True, n=12, out="runs/study-example", progress=False)
        >>> sorted(result.findings.models)
        ['a', 'b']
    """
    from .distributed import init_from_environment
    from .studies.models import parse_models
    from .studies.run import run_study
    from .studies.running import Study

    init_from_environment()
    if not isinstance(models, dict | list | tuple):
        raise ConfigError(f"models is a {type(models).__name__}; valid: a mapping {{label: model}} or a list of models "
                          "(modules, spec strings or mappings)")
    entries = ([{"model": model_spec(m), "label": label} for label, m in models.items()] if isinstance(models, dict)
               else [m if isinstance(m, (str, dict)) else {"model": model_spec(m), "label": type(m).__name__.lower()
                                                           + f"-{i}"} for i, m in enumerate(models)])
    entries = [{**e, "model": model_spec(e["model"])} if isinstance(e, dict) and "model" in e else e for e in entries]
    values = dict(settings)
    if data is not None:
        values["dataset"] = dataset_spec_of(data, None, values)
    plan = Study(parse_models(entries), values, str(out), quick)
    try:
        return run_study(plan, resume=resume)
    except KeyboardInterrupt:
        raise interrupted("study", out) from None


def model_spec(model: nn.Module | str) -> str:
    """A spec string for ``model``: itself when a string, else the in-memory object's ``object:NAME``."""
    from .models import register_model_object

    if isinstance(model, (str, Path)):
        return str(model)
    return register_model_object(model)


def dataset_spec_of(data: Any, train_data: Any, values: dict[str, Any]) -> str:
    """A dataset spec for ``data`` (a string stays as it is); sets the preset from the image shape when unset."""
    from .data import as_image_dataset, register_dataset_object

    if isinstance(data, (str, Path)):
        return str(data)
    images = as_image_dataset(data)
    values.setdefault("preset", _preset_of(images.images(slice(0, 1))))
    return register_dataset_object(images, train_data)


def _images_spec(images: Any, labels: Any) -> tuple[str, str | None]:
    """(clean/adv setting, labels setting) for ``analyze``: paths stay paths, tensors are held in memory."""
    from .data import register_dataset_object
    from .data.tensors import to_image_tensor, to_label_tensor

    if isinstance(images, (str, Path)):
        return str(images), None if labels is None else _labels_setting(labels)
    pixels = to_image_tensor(images, "images")
    if labels is None:
        return register_dataset_object((pixels, torch.zeros(len(pixels), dtype=torch.int64))), "predicted"
    if isinstance(labels, (str, Path)):
        return register_dataset_object((pixels, torch.zeros(len(pixels), dtype=torch.int64))), str(labels)
    return register_dataset_object((pixels, to_label_tensor(labels, len(pixels), "labels"))), ""


def _labels_setting(labels: Any) -> str:
    if isinstance(labels, (str, Path)):
        return str(labels)
    raise ConfigError("with clean images given as a path, give labels as a path too (or put them in the clean file)")


def _first(images: Any) -> Any:
    return images[:1]


def _preset_of(image: torch.Tensor) -> str:
    from .data.tensors import to_image_tensor
    from .experiments.presets import preset_for_shape

    return preset_for_shape(tuple(to_image_tensor(image, "images").shape[1:]))
