"""What the measurement's reference runs do not count, priced on this model: the one-pixel attack's search.

Why apart: the search scores ``onepixel_popsize`` candidates per image and generation, on a CPU by incremental
evaluation (:class:`~advspatial.attacks.onepixel.OnePixel`, ``incremental="auto"``: calls of single layers that the
pass ledger does not count, :mod:`advspatial.passes`), so a reference run's ledger holds two calls of it whatever the
model, and its CPU went into the framework's price per call. A candidate costs about 0.05 ms on the default model
and about 1 ms on the CIFAR-10 ResNet-20 (one thread; benchmarks/README.md): on the README's quick start the search
was 30 of the run's 174 seconds, which the forecast did not see. This module counts the candidates from the settings
(:func:`onepixel_queries`) and times them on this model (:func:`seconds_per_query`), so that the forecast
(:mod:`advspatial.experiments.forecast`) adds them to the reference's counted work (:func:`onepixel_seconds`, the
``spatial`` and ``maps`` experiments' ``priced_apart``).

Example::

    >>> from advspatial.experiments.maps import MapsConfig
    >>> round(onepixel_queries(MapsConfig(n=60)))  # 60 images x 100 candidates x 31 generations x QUERY_SHARE
    98580
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import torch
from torch import nn

from ...attacks.onepixel import OnePixel
from ...errors import AdvspatialError
from ...models.hooks import frozen_eval
from ..forecast import GROUP_NAMES, CallPrice, fastest_seconds

#: the stage groups of the search (whose CPU outside the model is its candidates', in a reference run)
ONEPIXEL_STAGES = ("attack/onepixel",)
#: the share of its ``popsize x (steps + 1)`` candidates the search scores on an image, on average: it stops at an
#: image's first success, which the forecast cannot know. Measured: 0.90 and 0.78 on the default model (``maps``,
#: n = 60 and 500), 0.59, 0.59 and 0.31 on the CIFAR-10 ResNet-20 (``spatial`` n = 500, ``maps`` n = 60 stratified,
#: the README's quick start's first 60 test images); the geometric mean of the extremes, so that it is at most 1.7x
#: off either way on these
QUERY_SHARE = 0.53
#: the probe's images, the two populations whose difference it times (candidates = images x difference) and the
#: timings of each, the fastest kept. Six probes of ResNet-20 on two threads (2026-11-29, benchmarks/README.md,
#: "The one-pixel search's price probe"): populations 8 and 72 at 3 timings gave 0.44-0.60 ms a candidate idle
#: (1.38x apart) and 0.61-1.63 with the other core busy (2.69x); 8 and 264 at 2 timings 0.47-0.51 (1.09x) and
#: 1.08-1.35 (1.25x), for 2.0 s of probe idle instead of 1.2; a search of 100 or 400 candidates an image measured
#: 0.40-0.45 idle
PROBE_IMAGES = 4
PROBE_POPULATIONS = (8, 264)
PROBE_REPEATS = 2


def onepixel_queries(config: Any) -> float:
    """The candidates a run of ``config`` scores in the one-pixel search: on ``min(n, onepixel_n)`` images, each
    generation's population and the initial one, :data:`QUERY_SHARE` of them; none without the attack."""
    if "onepixel" not in config.attacks:
        return 0.0
    images = min(int(config.n), int(config.onepixel_n))
    return images * config.onepixel_popsize * (config.onepixel_steps + 1) * QUERY_SHARE


def seconds_per_query(model: nn.Module, images: torch.Tensor, seed: int = 0,
                      repeats: int = PROBE_REPEATS) -> float:
    """Seconds of one candidate of the search on this machine: the attack's initial population (no generation) on
    :data:`PROBE_IMAGES` of ``images`` at the two :data:`PROBE_POPULATIONS`, each the fastest of ``repeats`` after a
    warm-up, the difference per candidate (the evaluator's build and the clean pass cancel out). The attack scores
    candidates as a run does: incrementally on a CPU where the model allows, by full passes elsewhere.

    It times a copy of ``model``: the incremental evaluator keeps what it builds per model object
    (:mod:`advspatial.models.patch.cache`), and a structure built here, before the run watches its model, would be
    the one the run's search finds, so that its ledger (passes, host reads) would depend on whether it was forecast."""
    x = images[:PROBE_IMAGES]
    probe = copy.deepcopy(model)
    with frozen_eval(probe), torch.no_grad():
        y = probe(x).argmax(1)
    small, large = (fastest_seconds(functools.partial(OnePixel(probe, popsize=p, maxiter=0, seed=seed).run, x, y),
                                    repeats) for p in PROBE_POPULATIONS)
    return max(0.0, large - small) / ((PROBE_POPULATIONS[1] - PROBE_POPULATIONS[0]) * len(x))


def onepixel_seconds(config: Any, model: nn.Module, images: torch.Tensor, price: CallPrice) -> dict[str, float]:
    """The forecast's part that the reference does not count: :func:`onepixel_queries` priced by
    :func:`search_seconds`. ``price`` is not needed: the candidates are timed as the run scores them."""
    return search_seconds(onepixel_queries(config), model, images, int(config.seed))


def search_seconds(queries: float, model: nn.Module, images: torch.Tensor, seed: int) -> dict[str, float]:
    """``queries`` candidates of a one-pixel search at :func:`seconds_per_query` on ``model``, in the attacks' part
    of the run; nothing for none, or where the attack cannot run on the model (the run itself says why)."""
    if not queries:
        return {}
    try:
        seconds = seconds_per_query(model, images, seed)
    except AdvspatialError:  # the run itself will say what is wrong with the model; the forecast leaves it out
        return {}
    return {GROUP_NAMES["attack"]: queries * seconds}
