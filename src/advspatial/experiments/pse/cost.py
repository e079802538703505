"""What ``pse``'s reference runs do not count, priced on this model: the exact method's (image, group) pairs.

Why apart: every pair is the image with one pixel group changed, so their number grows with the groups of an image
(12,544 2x2 squares at 224 px against the default model's 196), and on a CPU they go by incremental evaluation
(:mod:`~advspatial.analysis.pse_incremental`), calls of single layers that the pass ledger does not count
(:mod:`advspatial.passes`). A reference run on the default model therefore says nothing of them; this module counts
them from the settings (:func:`pair_counts`, per square side: a pair's cost grows with its square) and times a
call of them on this model at each side (:func:`seconds_per_pair`), so that the forecast
(:mod:`advspatial.experiments.forecast`) adds them to the reference's counted work (:func:`pair_seconds`).

Example::

    >>> from advspatial.experiments.pse import PSEConfig
    >>> counts = pair_counts(PSEConfig(n=10), 28, 28)  # 2x2 squares, and 4x4 for the typing's stability
    >>> sorted(counts), round(counts[2])  # 4 variants x (2 + 3 draws x 0.79) x 10 images x 196 groups
    ([2, 4], 34261)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...analysis.pse_incremental import BlockEvaluator
from ...models.hooks import frozen_eval
from ...runtime import scaled_batch
from ..forecast import PROBE_REPEATS, CallPrice, fastest_seconds
from .config import PSEConfig
from .stability import group_spec

#: the part of a run :func:`pair_seconds` prices, as the forecast's sentence names it
PAIRS = "the promotion-suppression pairs"
#: the first parts of the stage keys that evaluate pairs (whose CPU outside the model is theirs, in a reference run)
PAIR_STAGES = ("pse", "stability")
#: the share of the images that the control and the stability are measured on (those classified correctly whose
#: attack succeeds): 0.785, 0.7875 and 0.78 of the attacked images in the reference runs at n = 50, 100 and 200
#: (four variants each); a model that classifies fewer correctly, or resists more, makes fewer of these pairs
SUCCESSFUL_SHARE = 0.79


def square_groups(height: int, width: int, side: int) -> int:
    """The ``side x side`` squares that tile an image (the partial ones at its edges included)."""
    return math.ceil(height / side) * math.ceil(width / side)


def pair_counts(config: PSEConfig, height: int, width: int) -> dict[int, float]:
    """Per square side, the (image, group) pairs a run of ``config`` evaluates on images of ``height x width``: per
    attack variant the isolated and the leave-one-out measurement on every image, each of the control's draws on
    the :data:`SUCCESSFUL_SHARE` of them, and the typing's stability over other square groups on that share of the
    first ``stability_images`` (every group counted, a perturbed one or not). Superpixel groups go through whole
    forward passes, which the reference counts; the first-order method makes no pairs (empty)."""
    if config.pse_method != "exact":
        return {}
    variants = len(config.attacks) * len(config.modes)
    measured = (2 + config.control_draws * SUCCESSFUL_SHARE) * config.n
    counts = {config.block: variants * measured * square_groups(height, width, config.block)}
    stable = variants * SUCCESSFUL_SHARE * min(config.n, config.stability_images)
    for side in (group_spec(spec) for spec in config.stability_groups):
        if side:
            counts[side] = counts.get(side, 0.0) + stable * square_groups(height, width, side)
    return counts


def seconds_per_pair(model: nn.Module, images: torch.Tensor, config: PSEConfig, price: CallPrice, side: int,
                     repeats: int = PROBE_REPEATS) -> float:
    """Seconds of one pair of ``side x side`` squares on this machine: where the run evaluates pairs incrementally
    (a CPU, a model the evaluator follows), a call of as many pairs as the run puts in one (every group of as many of
    ``images`` as that takes), timed (the fastest of ``repeats`` after a warm-up); elsewhere a forward pass's share
    of a call of that many images at ``price``."""
    height, width = images.shape[2:]
    rows = scaled_batch(config.pair_batch, height, width)
    groups = square_groups(height, width, side)
    x = images[:max(1, min(len(images), math.ceil(rows / groups)))]
    with frozen_eval(model), torch.no_grad():
        blocks = BlockEvaluator.build(model, x, side, "auto")
        if blocks is None:
            return price.forward_fixed / rows + price.forward_per_image
        pairs = torch.arange(min(rows, len(x) * groups), device=x.device)
        inner = (x + 0.01).clamp(0.0, 1.0)
        call = lambda: blocks.logits(inner, pairs // groups, pairs % groups, rows)  # noqa: E731
        return fastest_seconds(call, repeats) / len(pairs)


def pair_seconds(config: PSEConfig, model: nn.Module, images: torch.Tensor, price: CallPrice) -> dict[str, float]:
    """The forecast's part that the reference does not count (:data:`PAIRS`): :func:`pair_counts` at each side's
    :func:`seconds_per_pair`; nothing for a run that makes none."""
    counts = pair_counts(config, *images.shape[2:])
    if not counts:
        return {}
    return {PAIRS: sum(count * seconds_per_pair(model, images, config, price, side) for side, count in counts.items())}
