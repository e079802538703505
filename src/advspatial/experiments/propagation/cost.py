"""What ``propagation``'s forecast follows beyond n: its k-pixel attacks' iterations, and the one-pixel search that
its reference runs do not count, priced on this model.

Why: the k-pixel attacks are differential evolutions of ``popsize`` candidates per image over ``maxiter``
generations and the initial population, so their work follows ``popsize x (maxiter + 1)`` (:data:`ATTACK_STEPS`, the
registry's ``steps_by``): the literature's 400 x 75 is 14.5 times the default 100 x 20, which a forecast at the
defaults' work said was "about 3 minutes". The one-pixel attack (k = 1) scores its candidates incrementally on a CPU,
through calls the pass ledger does not count (:mod:`advspatial.passes`), as the measurement's one-pixel attack does:
it is priced apart (:func:`search_seconds_of`, the registry's ``priced_apart``) at the measurement's candidate
count rule and probe (:mod:`..measurement.onepixel_cost`).

Example::

    >>> from advspatial.experiments.propagation.config import PropagationConfig
    >>> round(search_queries(PropagationConfig(n=100)))  # 100 images x 100 candidates x 21 generations x QUERY_SHARE
    111300
    >>> search_queries(PropagationConfig(n=100, pixels_list=[3, 5]))  # no one-pixel attack: full passes, counted
    0.0
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..forecast import CallPrice
from ..measurement.onepixel_cost import QUERY_SHARE, search_seconds

#: the stages whose work follows the k-pixel attacks' iterations (the registry's ``steps_by``)
ATTACK_STEPS = {r"^attack/k\d+$": ("popsize", "maxiter+1")}
#: the stage group of the one-pixel search, whose CPU outside the model is its candidates' (a reference run's)
SEARCH_STAGES = ("attack/k1",)


def search_queries(config: Any) -> float:
    """The candidates the one-pixel attack of a run of ``config`` scores: on every image, each generation's
    population and the initial one, :data:`~..measurement.onepixel_cost.QUERY_SHARE` of them (it stops at an image's
    first success); none without k = 1 among ``pixels_list``."""
    if 1 not in config.pixels_list:
        return 0.0
    return int(config.n) * config.popsize * (config.maxiter + 1) * QUERY_SHARE


def search_seconds_of(config: Any, model: nn.Module, images: torch.Tensor, price: CallPrice) -> dict[str, float]:
    """The forecast's part that the reference does not count: :func:`search_queries` timed on ``model``
    (:func:`~..measurement.onepixel_cost.search_seconds`); ``price`` is not needed."""
    return search_seconds(search_queries(config), model, images, int(config.seed))
