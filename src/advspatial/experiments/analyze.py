"""Experiment ``analyze``: the RoI/RoA measurement of adversarial examples made elsewhere.

Researchers already hold adversarial examples from torchattacks, ART,
AutoAttack or their own code. This experiment takes them as they are - clean
images, adversarial images, optionally labels - and runs what the spatial
experiment runs on its own attacks, without the defence: the faithfulness gate
of the RoI, importance and attack maps, regions, the four-part segregation,
the nulls and the verdicts, into the same run directory and report.

The examples enter as an :class:`ExternalExamples` "attack" that returns the
given adversarial image of each sample id, so every downstream step (success,
norms, completeness-checked contribution maps, statistics) is the spatial
experiment's own. Inputs are files (``.pt``, ``.npy``, ``.npz`` or two folders
of image files with the same names; see :mod:`advspatial.data.tensors`) or
tensors handed over from Python (``advspatial.analyze``). A resumed run checks
that the inputs are the same bytes (their SHA-256 is kept in the run directory).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..attacks import Attack
from ..data import ImageDataset, load_dataset
from ..data.tensors import class_names_for, image_files, read_images, read_labels
from ..errors import ConfigError, ShapeError, unknown_name
from ..report.html import Section, Table
from ..rundir import RunDir
from ..runtime import pick_device
from .context import load_checked_model
from .measurement.config import GatedConfig
from .measurement.config import MeasurementConfig
from .measurement.findings import MeasurementFindings
from .measurement.run import measure
from .measurement.sections import claims_lines, compact_claims_lines, measurement_limits_section, measurement_sections
from .registry import register_experiment
from .results import Rendered, RunFindings
from .settings import setting

NORM_CHOICES = ("auto", "linf", "l2", "l0")
LABELS_PREDICTED = "predicted"
#: L-inf examples share a budget: at least this share of the images reach the largest L-inf distance of all
SHARED_BUDGET_SHARE = 0.9
#: a sparse (L0) example changes at most this share of the pixel positions of every image
SPARSE_SHARE = 0.01


@dataclass
class AnalyzeConfig(MeasurementConfig):
    """Settings of ``analyze``: the spatial experiment's measurement settings plus where the examples are."""

    dataset: str = setting("", "set from clean: arrays:PATH or memory:NAME")
    model: str = setting("", "the model the examples are analysed on (required): a spec as for advspatial run "
                         "(FILE.py:factory, a zoo name, a state-dict file with --arch...)")
    clean: str = setting("", "clean images: .pt/.npy/.npz file, a folder of image files, or memory:NAME (Python)")
    adv: str = setting("", "adversarial images of the same images, in the same order (same formats; a folder "
                           "must hold the same file names as the clean one)")
    labels: str = setting("", "labels file (.pt/.npy/.npz/text), '' = from the clean file, or 'predicted' (the "
                              "model's clean predictions: then every image counts as correct)")
    source: str = setting("external", "what made the examples, in free text (e.g. 'torchattacks PGD 8/255'), "
                                      "shown as given in the report; its files and figures use it with every "
                                      "character other than letters, digits and ._+=- made '-'")
    norm: str = setting("auto", "threat model of the examples: auto (inferred; see the report), linf, l2 or l0")
    n: int = setting(1_000_000, "number of example pairs analysed (default: all)")
    subset: str = setting("first", "which n pairs: first, stratified (equal share per class, seeded), random")
    onepixel_n: int = setting(1_000_000, "pairs analysed when the examples are sparse (L0): all by default")

    #: set from the inputs (dataset, attacks) or unused without an attack run: not CLI options
    CLI_HIDDEN: ClassVar[frozenset[str]] = frozenset({
        "dataset", "attacks", "defence_attack", "eps_l2", "steps", "cw_steps", "cw_search_steps", "onepixel_popsize",
        "onepixel_steps", "onepixel_n", "class_map", "image_size", "fit", "crop_fraction"})
    QUICK = {"batch_size": 12, "contribution_steps": 8, "permutations": 200, "gate_n": 24, "gate_steps": 5,
             "randomization_images": 4, "randomization_samples": 4, "panel": ["gradcam"], "panel_fractions": [0.1, 0.3],
             "figure_images": 3}

    @property
    def attack_name(self) -> str:
        """The examples' name in stage files, figures and tables: ``source`` (free text, shown as given where the
        examples are described) with every run of characters other than letters, digits and ``._+=-`` made one
        ``-`` (no path separator, no ``$`` of matplotlib's math markup)."""
        return re.sub(r"[^A-Za-z0-9._+=-]+", "-", self.source).strip("-")

    def validate(self) -> None:
        if not self.clean or not self.adv:
            raise ConfigError("analyze needs --clean and --adv (the clean and adversarial images)")
        if self.norm not in NORM_CHOICES:
            raise unknown_name("norm", self.norm, NORM_CHOICES)
        if not self.attack_name:
            raise ConfigError(f"source={self.source!r} names nothing; give what made the examples, e.g. "
                              "'torchattacks PGD 8/255'")
        for what, spec in (("clean", self.clean), ("adv", self.adv)):
            if not spec.startswith("memory:") and not Path(spec).expanduser().exists():
                raise ConfigError(f"{what} file or folder not found: {spec}")
        if self.labels not in ("", LABELS_PREDICTED) and not Path(self.labels).expanduser().is_file():
            raise ConfigError(f"labels file not found: {self.labels}")
        if not self.model:  # a default model would be trained on the analysed images themselves
            raise ConfigError("analyze needs --model (the model the examples are analysed on; from Python: "
                              "advspatial.analyze(model, ...))")
        self.attacks = [self.attack_name]
        self.defence_attack = self.attack_name
        self.dataset = self.clean if self.clean.startswith("memory:") else f"arrays:{self.clean}"
        GatedConfig.validate(self)
        self.validate_measurement()


# -- the examples as an attack ---------------------------------------------------------------

class ExternalExamples(Attack):
    """Adversarial examples made elsewhere, served by sample id as if an attack had made them.

    ``run(x, y, sample_ids=ids)`` returns ``adversarial[ids]``; the base class
    then computes success, predictions and norms as for any attack. ``norm`` is
    the examples' threat model; queries are not known and count 0.
    """

    supports_targeted = False

    def __init__(self, model: nn.Module, adversarial: torch.Tensor, name: str = "external", norm: str = "linf") -> None:
        super().__init__(model)
        self.adversarial = adversarial
        self.name = name  # type: ignore[misc]  # an instance's own name and norm
        self.norm = norm  # type: ignore[misc]

    def perturb(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, target: torch.Tensor | None,
                sample_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.adversarial[sample_ids].to(x.device, x.dtype), torch.zeros(len(x), dtype=torch.int64)


def infer_norm(clean: torch.Tensor, adversarial: torch.Tensor) -> tuple[str, str]:
    """The threat model the examples were made under, and the rule's reading, in words.

    l0 when every image changes at most 1% of its pixel positions; else linf when at least 90% of the images
    reach the largest L-inf distance of all within 1% (a shared L-inf budget: a random start alone puts some
    value at the bound, so even early-stopped L-inf attacks reach it); else l2 (fixed-budget and minimal L2
    attacks alike).
    """
    delta = (adversarial - clean).flatten(1)
    if not len(delta):
        return "linf", "no examples"
    changed = (adversarial != clean).any(dim=1).flatten(1).float().mean(1)
    if float(changed.max()) <= SPARSE_SHARE:
        return "l0", (f"every image changes at most {SPARSE_SHARE:.0%} of its pixel positions "
                      f"(max {float(changed.max()):.2%})")
    linf = delta.abs().amax(1)
    at_budget = float((linf >= 0.99 * linf.max()).float().mean())
    if at_budget >= SHARED_BUDGET_SHARE:
        return "linf", (f"{at_budget:.0%} of the images reach the largest L-inf distance {float(linf.max()):.4g} "
                        f"(>= {SHARED_BUDGET_SHARE:.0%}: a shared L-inf budget)")
    return "l2", (f"only {at_budget:.0%} of the images reach the largest L-inf distance "
                  f"(< {SHARED_BUDGET_SHARE:.0%}: no shared L-inf budget)")


# -- reading the inputs ----------------------------------------------------------------------

@dataclass
class Examples:
    """Clean and adversarial images (N,C,H,W) in [0,1], labels or None, and the SHA-256 of each input."""

    clean: torch.Tensor
    adversarial: torch.Tensor
    labels: torch.Tensor | None
    checksums: dict[str, str]


def read_examples(config: AnalyzeConfig) -> Examples:
    """The inputs ``config`` names, checked to pair up (same shape, same file names for folders)."""
    clean, clean_labels = _read(config.clean)
    adversarial, _ = _read(config.adv)
    if adversarial.shape != clean.shape:
        raise ShapeError(f"adversarial images {tuple(adversarial.shape)} do not match the clean ones "
                         f"{tuple(clean.shape)}")
    _check_same_names(config.clean, config.adv)
    labels = clean_labels
    if config.labels == LABELS_PREDICTED:
        labels = None
    elif config.labels:
        labels = read_labels(config.labels, len(clean))
    checksums = {what: _checksum(spec) for what, spec in (("clean", config.clean), ("adv", config.adv),
                                                           ("labels", config.labels))
                 if spec and spec != LABELS_PREDICTED}
    return Examples(clean, adversarial, labels, checksums)


def _read(spec: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    if spec.startswith("memory:"):
        data = load_dataset(spec)
        return data.images(), data.labels
    return read_images(spec)


def _check_same_names(clean: str, adv: str) -> None:
    """Two folders pair their images by file name: the same names, or a one-line error naming the first difference."""
    a, b = Path(clean).expanduser(), Path(adv).expanduser()
    if not (a.is_dir() and b.is_dir()):
        return
    names_a, names_b = [p.name for p in image_files(a)], [p.name for p in image_files(b)]
    if names_a != names_b:
        only = sorted(set(names_a) ^ set(names_b))
        raise ConfigError(f"{clean} and {adv} must hold the same file names; differing: "
                          f"{', '.join(only[:3]) or 'order'}")


def _checksum(spec: str) -> str:
    """SHA-256 of a file, of a folder's image files (names and bytes), or of in-memory images."""
    digest = hashlib.sha256()
    if spec.startswith("memory:"):
        return spec.split("-")[-1]  # the name carries the checksum of the pixels and labels
    path = Path(spec).expanduser()
    for file in image_files(path) if path.is_dir() else [path]:
        digest.update(file.name.encode() + b";")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def example_images(config: AnalyzeConfig, examples: Examples, model: nn.Module | None) -> tuple[ImageDataset, str]:
    """The clean images as a dataset with their labels, and where the labels came from, in words."""
    labels, origin = examples.labels, "given"
    if labels is None:
        assert model is not None
        device = next(iter(model.parameters()), torch.empty(0)).device
        with torch.no_grad():
            labels = torch.cat([model(examples.clean[i:i + 256].to(device)).argmax(1).cpu()
                                for i in range(0, len(examples.clean), 256)])
        origin = "the model's clean predictions (no labels given): every image counts as correct"
    name = config.clean if config.clean.startswith("memory:") else f"arrays:{Path(config.clean).name}"
    return ImageDataset(name, examples.clean, labels, class_names=class_names_for(labels)), origin


# -- the experiment -------------------------------------------------------------------------

@dataclass
class ExamplesInfo:
    """Where the examples came from: the maker, their threat model and why, the labels' origin, the number of
    pairs and the SHA-256 of each input."""

    source: str
    norm: str
    norm_reason: str
    labels: str
    pairs: int
    sha256: dict[str, str]


@dataclass
class AnalyzeFindings(MeasurementFindings):
    """The measurement's findings of the given examples, and where the examples came from."""

    examples: ExamplesInfo | None = None


def render(config: AnalyzeConfig, findings: AnalyzeFindings, figures: Path) -> Rendered:
    """The summary and the report: the measurement's sections with the examples' own after the gate, and the
    limits of examples made elsewhere."""
    info = findings.examples
    assert info is not None, "an analyze run records its examples"
    sections = measurement_sections(config, findings, figures)
    sections.insert(2, source_section(info))
    sections.append(measurement_limits_section(config, findings, external=True))
    pairs = findings.attacks[config.attack_name].images
    summary = "\n".join([f"{config.source}: {pairs} example pairs, threat model {info.norm} ({info.norm_reason})",
                         *compact_claims_lines(findings)])
    return Rendered(summary, sections, "\n".join(claims_lines(findings)))


@register_experiment("analyze", AnalyzeConfig,
                     "RoI vs RoA of adversarial examples made elsewhere (torchattacks, ART, your own code): "
                     "the gate, maps, nulls and verdicts without running an attack",
                     findings=AnalyzeFindings, render=render, contract={"batch_size": 4})
def run_analyze(config: AnalyzeConfig, rundir: RunDir) -> RunFindings:
    examples = read_examples(config)
    check_inputs(rundir, examples)
    model = None
    if examples.labels is None:
        probe = ImageDataset("probe", examples.clean[:1], torch.zeros(1, dtype=torch.int64), ("0",))
        model = load_checked_model(config, probe, pick_device(config.device))
    images, labels_origin = example_images(config, examples, model)
    norm, why = (config.norm, "given") if config.norm != "auto" else infer_norm(examples.clean, examples.adversarial)
    serve: dict[str, Callable[[nn.Module], Attack]] = {
        config.attack_name: lambda model: ExternalExamples(model, examples.adversarial, config.attack_name, norm)}
    measured = measure(config, rundir, images, serve)
    info = ExamplesInfo(config.source, norm, why, labels_origin, len(examples.clean), examples.checksums)
    findings = measured.findings(AnalyzeFindings, examples=info)
    return RunFindings(findings, measured.rows)


def check_inputs(rundir: RunDir, examples: Examples) -> None:
    """A resumed run must analyse the same inputs its stages were computed from."""
    recorded = rundir.cached("analyze/inputs", lambda: dict(examples.checksums))
    if recorded != examples.checksums:
        changed = sorted(k for k in examples.checksums if recorded.get(k) != examples.checksums[k])
        raise ConfigError(f"{rundir.path} analysed other inputs ({', '.join(changed)} changed since); "
                          "start a new run (--out)")


def source_section(info: ExamplesInfo) -> Section:
    """Where the examples came from, the threat model and the labels, stated before any result."""
    rows: list[list[Any]] = [
        ["made by", info.source], ["example pairs", info.pairs], ["threat model", f"{info.norm} ({info.norm_reason})"],
        ["labels", info.labels], *[[f"sha256 of {k}", v[:16]] for k, v in info.sha256.items()]]
    return Section("The examples", [
        "These adversarial examples were made outside advspatial; it ran no attack. Success, predictions and "
        "norms are recomputed with the model analysed here, so an example made on another model counts as a "
        "transfer example."], tables=[Table("Inputs", ["", ""], rows)])
