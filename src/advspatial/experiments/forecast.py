"""What a run will cost, said before its first stage: a reference run's classifier work scaled to this run's n,
priced at this model's measured cost per call on this machine.

Why: a measurement of several minutes should not start silent. A run's time is its classifier calls and the images
they carry (:mod:`advspatial.passes`); what changes between models is the price of a call. So the forecast takes the
work of the experiment's reference runs (:mod:`.cost_references`: per stage group, forward and backward images and
calls in each reference run on the default model, followed between their n; :func:`~.stage_work.counts_at`),
prices it with a call of this model timed here at one image and at the run's batch (:func:`measure_price`: a fixed
cost per call plus a cost per image, forward and backward), adds the framework's own CPU per call and the time
outside the stages as the reference runs measured them, and names the stage group that dominates.

What it follows beyond n: the settings that cap a stage's images, repeat the run's work or set an attack's
iterations (the experiment's ``sized_by``, ``repeated_by`` and ``steps_by``: ``spatial``'s ``adaptive_n``,
``localized-training``'s ensemble, gate and training seeds, ``perceptual``'s steps, which a preset sets), priced at
the run's own values (:func:`stage_scales`), and the explainers a run gates, where the reference runs gated each of
them (:func:`explainer_settings`). Work the ledger does not count is priced apart by the experiment (its
``priced_apart``: ``pse``'s pixel-group pairs, the one-pixel search of ``spatial`` and ``maps``, the models'
training of ``localized-training``), timed on this model. What it cannot know: how many images an attack leaves
standing on this model (an attack that succeeds sooner makes fewer passes), any other setting away from its default
(the forecast then says it is for the default settings), and other work on the machine. It is an estimate to a
factor of about two, not a budget; an experiment without a reference gets none.

Example::

    >>> from torch import nn
    >>> import torch
    >>> price = measure_price(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), torch.rand(8, 1, 28, 28), batch=8)
    >>> forecast("spatial", 500, price).seconds > 0
    True
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..distributed import world
from ..errors import AdvspatialError
from ..maps.heads import default_importance_method, has_gap_linear_head
from ..models.hooks import frozen_eval
from ..progress import note
from ..statistics.wording import how_many, listed
from .cost_references import (
    NON_MODEL_SECONDS_PER_CALL,
    OUTSIDE_STAGES_SECONDS,
    REFERENCE_PANEL,
    REFERENCE_ROI,
    REFERENCE_STEPS,
    REFERENCES,
)
from .registry import Experiment, experiments
from .stage_work import (
    StageWork, counts_at, follow, iteration_count, iteration_setting, sized_images, sized_setting, unsized,
)

#: the part of a run each first part of a stage key belongs to, in the forecast's sentence (the shares are summed
#: by part)
GROUP_NAMES = {"adaptive": "the adaptive evaluation", "baselines": "the adaptive evaluation",
               "gate": "the faithfulness gates", "attack": "the attacks", "maps": "the attacks' maps",
               "defence": "the defence columns", "sweep": "the defence sweep", "prior-classes": "the class prior",
               "panel": "the explainer panel", "calibration": "the budget calibration",
               "curve": "the success-rate curve", "random": "the random-change control",
               "locality": "the locality checks", "propagation": "the per-layer propagation maps",
               "roi": "the RoI's maps", "cam": "the class activation maps", "clean-pass": "the clean pass",
               "geometry": "the perturbations' geometry", "cam-true": "the class activation maps",
               "cam-target": "the class activation maps", "pse": "the promotion-suppression measurement",
               "stability": "the typing's stability checks", "units": "the unit ranking",
               "masking": "the unit-masking curve", "dissection": "the dissection",
               "importance": "the importance maps' shift", "finetune": "the training masks"}


@dataclass(frozen=True)
class CallPrice:
    """Seconds of one classifier call of ``b`` images on this machine: ``forward_fixed + forward_per_image * b``
    forward; a gradient sent back adds ``backward_fixed + backward_per_image * b``."""

    forward_fixed: float
    forward_per_image: float
    backward_fixed: float
    backward_per_image: float


@dataclass(frozen=True)
class Explainers:
    """The explainers a run gates: its RoI's (``roi``) and its panel's others (``panel``)."""

    roi: str
    panel: tuple[str, ...] = ()


@dataclass(frozen=True)
class Forecast:
    """A run's estimated seconds on this machine and the part of the run (:data:`GROUP_NAMES`: the adaptive
    evaluation, the faithfulness gates, ...) that takes the largest share of them."""

    seconds: float
    dominant: str
    dominant_share: float
    #: stages of this model's earlier runs in the model cache (:mod:`advspatial.model_work`): the forecast prices
    #: every stage, a run reads those whose inputs match
    cached_stages: int = 0
    #: explainers the run gates that the reference runs did not (:func:`unpriced_explainers`): their gates are
    #: priced as a gradient explainer's
    unpriced: tuple[str, ...] = ()
    #: the run's settings away from their defaults that the forecast does not follow (:func:`differing_settings`):
    #: their work is priced at the defaults'
    differing: tuple[str, ...] = ()

    def record(self) -> dict[str, object]:
        """What the run keeps in metrics.json: the seconds, the dominant part and its share, and the sentence said."""
        return {"seconds": round(self.seconds, 1), "dominant": self.dominant,
                "dominant_share": round(self.dominant_share, 3), "sentence": self.sentence()}

    def sentence(self) -> str:
        """One line for the terminal, e.g. "about 7 minutes on this machine (the adaptive evaluation about 45%)"."""
        minutes = self.seconds / 60
        span = "under a minute" if minutes < 1 else f"about {minutes:.0f} minute{'s' if minutes >= 1.5 else ''}"
        scope = f"; for the default settings: yours differ in {self._differing()}" if self.differing else ""
        cached = "" if not self.cached_stages else (
            f"; at most: the model cache holds {how_many(self.cached_stages, 'stage')} of "
            "this model's earlier runs, read instead of computed where their images and settings match")
        return (f"{span} on this machine ({self.dominant} about {self.dominant_share:.0%}; an estimate from a "
                f"reference run's work priced at this model's measured cost per call{scope}{cached}"
                f"{self._unpriced()})")

    def _differing(self) -> str:
        """The differing settings by name, at most :data:`NAMED_SETTINGS` of them ("a, b and 2 more")."""
        shown = list(self.differing[:NAMED_SETTINGS])
        if len(self.differing) > NAMED_SETTINGS:
            shown.append(f"{len(self.differing) - NAMED_SETTINGS} more")
        return listed(shown)

    def _unpriced(self) -> str:
        if not self.unpriced:
            return ""
        names = listed(self.unpriced)
        gates = "the gate of" if len(self.unpriced) == 1 else "the gates of"
        return (f"; {gates} {names} priced as a gradient explainer's, which the reference runs gated: one that makes "
                "many passes per map (occlusion, IG, SmoothGrad) costs more")


#: the differing settings the sentence names before it counts the rest
NAMED_SETTINGS = 3


#: timed calls of each probe, the fastest kept: with 3, eight probes of ResNet-20 one after another (the other core
#: busy) forecast its n = 500 `spatial` run at 3,284 to 4,345 s (1.32x apart), with 7 at 3,126 to 3,606 (1.15x),
#: each probe 1.4 s and 2.6 s (benchmarks/README.md, "`pse` states its cost")
PROBE_REPEATS = 7


def measure_price(model: nn.Module, images: torch.Tensor, batch: int, repeats: int = PROBE_REPEATS) -> CallPrice:
    """Time ``model`` on one image and on ``batch`` images (the first of ``images``, repeated when fewer), forward
    and forward + backward, each the fastest of ``repeats`` after a warm-up (the least disturbed by other work);
    fit a fixed and a per-image cost."""
    batch = max(2, batch)
    large = images[torch.arange(batch) % len(images)]
    with frozen_eval(model):
        forward = [fastest_seconds(functools.partial(_forward, model, x), repeats) for x in (large[:1], large)]
        both = [fastest_seconds(functools.partial(_forward_backward, model, x), repeats) for x in (large[:1], large)]
    forward_fixed, forward_per = _line(forward, batch)
    both_fixed, both_per = _line(both, batch)
    return CallPrice(forward_fixed, forward_per, max(0.0, both_fixed - forward_fixed),
                     max(0.0, both_per - forward_per))


def _forward(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        model(x)


def _forward_backward(model: nn.Module, x: torch.Tensor) -> None:
    x = x.detach().requires_grad_(True)
    torch.autograd.grad(model(x).sum(), x)


def fastest_seconds(call: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``call`` after an untimed one (the least disturbed by other work;
    the device waited for at both ends)."""
    call()  # warm-up: first-call allocations and kernel choices
    times = []
    for _ in range(repeats):
        _wait_for_device()
        started = time.perf_counter()
        call()
        _wait_for_device()
        times.append(time.perf_counter() - started)
    return min(times)


def _wait_for_device() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _line(seconds: list[float], batch: int) -> tuple[float, float]:
    """(fixed, per image) through the times at 1 and ``batch`` images (neither below 0)."""
    per_image = max(0.0, (seconds[1] - seconds[0]) / (batch - 1))
    return max(0.0, seconds[0] - per_image), per_image


def forecast(experiment: str, n: int, price: CallPrice, explainers: Explainers | None = None,
             apart: Mapping[str, float] | None = None, config: Any = None) -> Forecast | None:
    """The estimated seconds of ``experiment`` on ``n`` images at ``price`` (gating ``explainers``; None: those of
    the reference runs), plus ``apart``: seconds of named parts the reference does not count (the experiment's
    ``priced_apart``); the stages a setting sizes or repeats priced at ``config``'s (None: the experiment's
    defaults; :func:`stage_scales`); None without a reference."""
    reference = reference_work(experiment, explainers)
    if reference is None:
        return None
    scales = stage_scales(experiment, reference, n, config)
    by_group: dict[str, float] = dict(apart or {})
    for stage, work in reference.items():
        first = stage.split("/")[0]
        group = GROUP_NAMES.get(first, first)
        by_group[group] = by_group.get(group, 0.0) + _seconds(
            counts_at(stage, work, n), price, NON_MODEL_SECONDS_PER_CALL.get(experiment, 0.0), scales[stage])
    dominant = max(by_group, key=lambda g: by_group[g])
    total = sum(by_group.values()) + follow(OUTSIDE_STAGES_SECONDS.get(experiment, ((0, 0.0),)), n)[0]
    return Forecast(total, dominant, by_group[dominant] / total if total else 0.0)


@dataclass(frozen=True)
class Scale:
    """What a stage group's reference counts are multiplied by for the run forecast: its images and its calls."""

    images: float = 1.0
    calls: float = 1.0

    def times(self, share: float) -> Scale:
        """Both scaled by ``share`` (a repeated stage's share of the run's repeats)."""
        return Scale(self.images * share, self.calls * share)


def stage_scales(experiment: str, groups: Mapping[str, object], n: int, config: Any = None) -> dict[str, Scale]:
    """Per stage group of the reference, what its counts are multiplied by for a run of ``config`` on ``n`` images
    (None: the experiment's defaults). A group a setting sizes (:func:`~.stage_work.sized_setting`) holds
    images per image and calls per batch: priced at ``min(n, setting)`` images in batches of the run's
    ``batch_size``. A group that repeats the run's work (the experiment's ``repeated_by``: ``localized-training``'s
    other training seeds) at the run's repeats beyond the first over the reference's. A group whose work follows an
    attack's iterations (the experiment's ``steps_by``) at the product of the run's iterations over the reference
    runs' (:data:`~.cost_references.REFERENCE_STEPS`). Every other group as counted."""
    registered = experiments().get(experiment)
    settings: Any = config if config is not None else (registered.config_cls() if registered is not None else None)
    scales = {}
    for group in groups:
        setting = sized_setting(group)
        if setting is None:
            scales[group] = Scale()
            continue
        # a cap of None: every image (spatial's --eval full)
        images, batches = sized_images(n, getattr(settings, setting), settings.batch_size)
        scales[group] = Scale(float(images), float(batches))
    for pattern, setting in (registered.repeated_by if registered is not None else {}).items():
        repeats = {group: match.group(0) for group in groups if (match := re.search(pattern, group))}
        if repeats:
            share = (int(getattr(settings, setting)) - 1) / len(set(repeats.values()))
            scales.update({group: scales[group].times(share) for group in repeats})
    reference_steps = REFERENCE_STEPS.get(experiment, {})
    for pattern, names in (registered.steps_by if registered is not None else {}).items():
        if not set(names) <= set(reference_steps):
            continue  # a reference fitted before its steps were recorded: counted as it is
        ratio = math.prod(iteration_count(name, functools.partial(getattr, settings)) / reference_steps[name]
                          for name in names)
        scales.update({group: scales[group].times(ratio) for group in groups
                       if re.search(pattern, unsized(group))})
    return scales


def reference_work(experiment: str, explainers: Explainers | None = None) -> dict[str, StageWork] | None:
    """The reference runs' work per stage group, with its explainer gates and panel maps as this run's: the
    reference RoI's gate becomes this run's RoI gate, a panel explainer's gate (and its maps of the attacks'
    examples, ``panel/NAME``) is the reference's of the same explainer (the mean of the reference's panel explainers'
    for one it did not have; its RoI's gate when it had no other), and those of explainers this run does not have
    are left out; a gate's comparisons and its randomization checks (sized by ``randomization_images``) each by
    itself. None without a reference."""
    reference = REFERENCES.get(experiment)
    if reference is None or explainers is None:
        return reference
    roi, panel = REFERENCE_ROI[experiment], REFERENCE_PANEL[experiment]
    explained = {f"{kind}/{name}" for kind in ("gate", "panel") for name in (roi, *panel)}
    work = {group: w for group, w in reference.items() if unsized(group) not in explained}
    # each part of an explainer's groups by itself: its maps, its gate, its gate's sized randomization checks
    parts = sorted({(unsized(group).split("/")[0], group[len(unsized(group)):]) for group in reference
                    if unsized(group) in explained})
    for kind, sized in parts:
        key = f"{kind}/{{}}{sized}".format  # key("gradcam"): "gate/gradcam~randomization_images"
        own_roi = reference.get(key(roi)) if kind == "gate" else None
        if own_roi is not None:
            work[key(explainers.roi)] = own_roi
        own = {name: reference[key(name)] for name in panel if name != roi and key(name) in reference}
        unseen = mean_work(list(own.values())) if own else own_roi
        for name in explainers.panel:
            if (priced := own.get(name, unseen)) is not None:
                work[key(name)] = priced
    return work


def mean_work(works: list[StageWork]) -> StageWork:
    """The mean of ``works`` (stage groups of the same reference runs), count by count at each run's n."""
    runs = [[point[0] for point in work.points] for work in works]
    if any(ns != runs[0] for ns in runs):
        raise ValueError(f"stage groups of different reference runs (n = {runs}) have no mean")
    return StageWork(tuple(
        (points[0][0], *(statistics.fmean(point[i] for point in points) for i in range(1, len(points[0]))))
        for points in zip(*(work.points for work in works), strict=True)))


def _seconds(counts: tuple[float, float, float, float], price: CallPrice, non_model: float,
             scale: Scale = Scale()) -> float:
    """Seconds of a stage group's ``counts`` (forward and backward images and calls, :func:`~.stage_work.counts_at`)
    multiplied by ``scale``, at ``price`` and ``non_model`` seconds of the framework's own per call."""
    forward, backward, calls, backward_calls = counts
    forward, backward, calls, backward_calls = (forward * scale.images, backward * scale.images,
                                                calls * scale.calls, backward_calls * scale.calls)
    return (calls * price.forward_fixed + forward * price.forward_per_image
            + backward_calls * price.backward_fixed + backward * price.backward_per_image
            + (calls + backward_calls) * non_model)


#: two explainers that give one map on a GAP + linear head (the run gates it once)
CAM_TWINS = frozenset({"gradcam", "hirescam"})

#: the largest batch the price is measured at (a call's cost per image is flat beyond it on a CPU), for 32x32
#: images; larger images get fewer (the same pixels, at least 2: a 224-px call costs what its images cost)
PROBE_BATCH = 64

#: settings that say where a run's work comes from or goes, not how much there is of it
NOT_WORK = frozenset({"n", "out", "model", "weights", "arch", "model_seed", "dataset", "subset", "image_size", "fit",
                      "crop_fraction", "class_map", "seed", "device", "progress", "preset", "batch_size",
                      "smoke_test"})


def announce(experiment: str, config: Any, model: nn.Module, images: torch.Tensor,
             cached_stages: int = 0) -> Forecast | None:
    """Print the run's forecast (one line on stderr, the main process only) before its first stage; nothing (and no
    probe) for a smoke test, a run without progress output or an experiment without a reference. ``cached_stages``:
    the model cache's stages of this model (:attr:`Forecast.cached_stages`). Returns what was said."""
    if not will_announce(experiment, config):
        return None
    batch = probe_batch(int(getattr(config, "batch_size", PROBE_BATCH)), *images.shape[2:])
    price = measure_price(model, images, batch)
    registered = experiments().get(experiment)
    priced_apart = registered.priced_apart if registered is not None else None
    apart = priced_apart(config, model, images, price) if priced_apart is not None else None
    explainers = gated_explainers(config, model, images)
    result = forecast(experiment, int(config.n), price, explainers, apart, config)
    if result is not None:
        followed = frozenset(followed_settings(registered)) if registered is not None else frozenset()
        followed |= explainer_settings(experiment, explainers)
        result = dataclasses.replace(result, cached_stages=cached_stages,
                                     unpriced=unpriced_explainers(experiment, explainers),
                                     differing=differing_settings(config, followed))
        note(f"advspatial: {experiment} on {int(config.n)} images: {result.sentence()}")
    return result


def will_announce(experiment: str, config: Any) -> bool:
    """Whether :func:`announce` says anything for ``config``: not for a smoke test, a run without progress output,
    an experiment without a reference, or a process but the main one (so a caller can skip preparing its probe)."""
    return (not getattr(config, "smoke_test", False) and bool(getattr(config, "progress", True))
            and experiment in REFERENCES and world().is_main)


def probe_batch(batch_size: int, height: int, width: int) -> int:
    """The batch the price is measured at: the run's, at most :data:`PROBE_BATCH` 32x32 images' pixels, at least 2."""
    return max(2, min(batch_size, PROBE_BATCH, PROBE_BATCH * 32 * 32 // max(1, height * width)))


def differing_settings(config: Any, followed: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """The settings of ``config``, in its fields' order, that differ from its class's defaults under its own preset
    (a preset's budgets are not the user's choice), leaving out :data:`NOT_WORK`, ``followed`` (those the forecast
    prices as they are set: :func:`followed_settings`) and those the experiment sets itself (its ``CLI_HIDDEN``:
    ``maps`` makes its first attack run on every image the panel's)."""
    cls = type(config)
    given, plain = (dataclasses.asdict(c) for c in (config, cls()))
    preset = str(given.get("preset", "auto"))
    defaults = {**plain, **(cls.preset_values(preset, given) if preset != "auto" else {})}
    ignored = NOT_WORK | followed | getattr(cls, "CLI_HIDDEN", frozenset())
    return tuple(name for name in given if name not in ignored and given[name] != defaults[name])


def followed_settings(registered: Experiment) -> set[str]:
    """The settings a registered experiment's forecast follows beyond n: those that size or repeat its stages, and
    the iterations its reference recorded (:data:`~.cost_references.REFERENCE_STEPS`)."""
    recorded = REFERENCE_STEPS.get(registered.name, {})
    steps = {iteration_setting(name) for names in registered.steps_by.values() for name in names if name in recorded}
    return {*registered.sized_by.values(), *registered.repeated_by.values(), *steps}


#: the settings that choose a run's explainers (its RoI's and its panel's)
EXPLAINER_SETTINGS = frozenset({"importance", "panel"})


def explainer_settings(experiment: str, explainers: Explainers | None) -> frozenset[str]:
    """:data:`EXPLAINER_SETTINGS` when the forecast prices a run's ``explainers`` (:func:`reference_work` gives each
    the work of its role in the reference runs; one they did not gate, the sentence names:
    :func:`unpriced_explainers`); nothing without explainers or a reference."""
    return EXPLAINER_SETTINGS if explainers is not None and experiment in REFERENCE_ROI else frozenset()


def unpriced_explainers(experiment: str, explainers: Explainers | None) -> tuple[str, ...]:
    """The explainers of ``explainers`` the experiment's reference runs did not gate, in the run's order: their gates
    are priced as the reference's gradient explainers' (occlusion's and IG's cost about 100x that)."""
    if explainers is None or experiment not in REFERENCE_ROI:
        return ()
    measured = {REFERENCE_ROI[experiment], *REFERENCE_PANEL[experiment]}
    return tuple(name for name in dict.fromkeys((explainers.roi, *explainers.panel)) if name not in measured)


def gated_explainers(config: Any, model: nn.Module, images: torch.Tensor) -> Explainers | None:
    """The explainers this run gates (its RoI's and its panel's), for an experiment with a panel; None otherwise.
    ``importance="auto"`` is resolved as the run resolves it; on a GAP + linear head Grad-CAM and HiResCAM are one
    map, and the run gates it once."""
    if not hasattr(config, "panel") or not hasattr(config, "importance"):
        return None
    probe = images[:2]
    try:
        roi = config.importance if config.importance != "auto" else default_importance_method(model, probe)[0]
        panel = [name for name in dict.fromkeys(config.panel) if name != roi]
        if {roi, *panel} >= CAM_TWINS and has_gap_linear_head(model, probe):
            panel = [name for name in panel if name not in CAM_TWINS]
    except AdvspatialError:  # the run itself will say what is wrong with the model; the forecast uses the reference's
        return None
    return Explainers(roi, tuple(panel))
