"""The deployable defence's class prior (METHODS §2): the mean attack map per predicted adversarial class, on
training images.

The training batches do not depend on each other (each image's attack and map are keyed by its id), so the batches
not saved yet are attacked and mapped as one run (each attack step one round, the model called a batch at a time,
:class:`~advspatial.stacked_runs.RowChunks`), at most :func:`~advspatial.stacked_runs.run_rows` images per run;
each batch is still saved as its own stage (:data:`PRIOR_PARTS`) with its share of the passes, so a resumed run, a
run of another n and the model cache read the same parts as before. A run with a batch lost is computed again
whole, so that a resumed run counts the passes a run in one go does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache, partial
from typing import Any

import torch

from ...data.base import ImageDataset
from ...maps import attack_map
from ...regions import MapAccumulator
from ...runtime import batch_slices
from ...stacked_runs import RowChunks, run_rows
from ..context import train_images
from ..measurement.config import contribution_kw
from ..measurement.stages import Context
from ..stage import AccumulatorStage, computed_jointly
from .config import SpatialConfig

#: the per-class sums of the deployable defence's prior per training batch (the prior is their mean, summed anew
#: from the parts on every run and resume, so their model passes always enter the run's count); a new name since
#: the parts keep the classes seen only (``prior-parts`` held dense (K,H,W) sums: 400 MB a batch on ImageNet)
PRIOR_PARTS = AccumulatorStage("prior-classes")
#: added to a training image's id to key its attack's randomness apart from the test images'
TRAIN_ID_OFFSET = 10_000_000


def class_prior(ctx: Context[SpatialConfig]) -> torch.Tensor:
    """(K,H,W) mean attack map per predicted adversarial class, on ``prior_n`` training images (METHODS §2).

    Indexed by the class predicted on the *attacked* training image, because at deployment the defence only sees
    the (possibly adversarial) input. One unit of work (under torchrun, one process makes it), computed by
    :func:`prior_parts`.
    """
    cfg = ctx.config
    train = train_images(cfg, cfg.prior_n, ctx.data.ids)
    slices = list(batch_slices(len(train), cfg.batch_size))
    total = MapAccumulator(train.num_classes, train.image_shape[1:])

    def merge(_: int, __: Any, parts: list[MapAccumulator]) -> None:
        for part in parts:
            total.merge(part)

    ctx.each_batch(lambda _, __: prior_parts(ctx, train, slices), desc="prior (training images)", slices=[slices],
                   then=merge)
    return torch.nan_to_num(total.means(), nan=0.0)


def prior_parts(ctx: Context[SpatialConfig], train: ImageDataset, slices: Sequence[slice]) -> list[MapAccumulator]:
    """Each training batch's attack maps summed per adversarial class: read back where saved (the run or the model
    cache); the batches are grouped into runs of at most :func:`~advspatial.stacked_runs.run_rows` images, and a run
    with a batch missing is computed whole (only the missing batches saved, each with its share of the run's
    passes: a resumed run counts what a run in one go does)."""
    cfg = ctx.config
    model = RowChunks(ctx.model, cfg.batch_size)  # a run of several batches calls the model a batch at a time
    attack = cfg.budgeted_attack(cfg.defence_attack, model)
    kw = contribution_kw(cfg) if cfg.attack_map == "contribution" else {}

    @cache
    def images(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        sl = slices[b]
        return train.images(sl).to(ctx.device), train.labels[sl].to(ctx.device)

    def inputs(b: int) -> dict[str, Any]:
        x, y = images(b)
        return {"x": x, "classes": y, "ids": train.ids[slices[b]], "attack": type(attack).__name__,
                "attack_settings": attack.params(), "map": cfg.attack_map, "map_settings": kw,
                "classes_total": train.num_classes}

    def joint(run: Sequence[int]) -> tuple[list[MapAccumulator], list[int]]:
        """The batches ``run`` attacked and mapped as one stack, split back per batch; with their image counts."""
        x, y = (torch.cat([images(b)[k] for b in run]) for k in (0, 1))
        ids = torch.cat([train.ids[slices[b]] for b in run])
        result = attack.run(x, y, sample_ids=ids + TRAIN_ID_OFFSET)
        amap = attack_map(cfg.attack_map, model, x, result.x_adv, y, **kw).map.cpu()
        sizes = [slices[b].stop - slices[b].start for b in run]
        return _per_batch(train, amap.split(sizes), result.adv_pred.cpu().split(sizes)), sizes

    parts = {b: part for b in range(len(slices))
             if (part := PRIOR_PARTS.stored(ctx.rundir, partial(inputs, b), b)) is not None}
    rows = run_rows(cfg.batch_size, torch.zeros(1, *train.image_shape, device=ctx.device), ctx.model)
    for run in _runs(range(len(slices)), slices, rows):
        missing = [b for b in run if b not in parts]
        if missing:  # the whole run again, so that each part saved takes the share a run in one go gives it
            parts.update(computed_jointly(
                ctx.rundir, run, partial(joint, run),
                lambda b, charged: PRIOR_PARTS.get_model_work(ctx.rundir, partial(inputs, b), charged, b), missing))
    return [parts[b] for b in range(len(slices))]


def _runs(batches: Iterable[int], slices: Sequence[slice], rows: int) -> list[list[int]]:
    """The batches grouped into runs of at most ``rows`` images (a batch larger than that alone)."""
    runs: list[list[int]] = []
    held = rows
    for b in batches:
        size = slices[b].stop - slices[b].start
        if held + size > rows:
            runs.append([])
            held = 0
        runs[-1].append(b)
        held += size
    return runs


def _per_batch(train: ImageDataset, maps: Sequence[torch.Tensor], predicted: Sequence[torch.Tensor]
               ) -> list[MapAccumulator]:
    """Each batch's attack maps summed per predicted adversarial class."""
    parts = []
    for batch_maps, batch_predicted in zip(maps, predicted, strict=True):
        part = MapAccumulator(train.num_classes, train.image_shape[1:])
        part.update(batch_maps, batch_predicted)
        parts.append(part)
    return parts
