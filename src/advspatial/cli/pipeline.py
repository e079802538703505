"""Streaming an attack over a dataset, for ``advspatial attack``.

:func:`attack_dataset` runs an attack over a dataset batch by batch, with a
progress bar, optional masks, and (with a run directory) one saved stage per
batch, so an interrupted run resumes where it stopped with identical results:
each batch is attacked with ``sample_ids`` = the images' dataset indices; with a
run directory the batches are shared among the processes of a torchrun launch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..attacks import Attack, AttackResult
from ..data import ImageDataset
from ..distributed import map_batches
from ..progress import progress_bar
from ..rundir import RunDir
from ..runtime import batch_slices

MaskFn = Callable[[slice], "torch.Tensor | None"]


def attack_dataset(
    attack: Attack,
    data: ImageDataset,
    batch_size: int = 200,
    mask_fn: MaskFn | None = None,
    target_fn: Callable[[slice], torch.Tensor] | None = None,
    progress: bool = True,
    rundir: RunDir | None = None,
    stage: str | None = None,
    desc: str | None = None,
) -> AttackResult:
    """Attack every image of ``data``; results stay on the CPU, batches stream.

    With a run directory and a stage name each batch is a cached stage, and under
    torchrun the batches are shared among the processes
    (:func:`advspatial.distributed.map_batches`); without one, every batch is
    computed here.
    """
    slices = list(batch_slices(len(data), batch_size))
    cached = rundir is not None and bool(stage)

    def compute(sl: slice) -> dict[str, torch.Tensor | None]:
        x, y = data.images(sl), data.labels[sl]
        mask = mask_fn(sl) if mask_fn is not None else None
        target = target_fn(sl) if target_fn is not None else None
        result = attack.run(x, y, mask=mask, target=target, sample_ids=data.ids[sl])
        return _result_to_dict(result.to("cpu"))

    def batch(i: int, sl: slice) -> AttackResult:
        name = f"{stage}/batch-{i:05d}"
        payload: dict[str, Any] = (rundir.cached(name, lambda: compute(sl)) if cached and rundir is not None
                                   else compute(sl))
        try:
            return AttackResult(**payload)
        except TypeError as exc:  # a stage file with other content (not written by this stage)
            from ..errors import DataError

            where = rundir.stage_path(name) if cached and rundir is not None else name
            raise DataError(f"stage file {where} does not hold an attack result ({exc}); delete it and resume "
                            "to recompute it") from exc

    desc = desc or f"attack {attack.name}"
    if cached:
        parts = map_batches(batch, slices, desc=desc, progress=progress)
    else:
        parts = [batch(i, sl)
                 for i, sl in enumerate(progress_bar(slices, desc=desc, disable=not progress, unit="batch"))]
    return AttackResult.cat(parts)


def _result_to_dict(result: AttackResult) -> dict[str, torch.Tensor | None]:
    from dataclasses import fields

    return {f.name: getattr(result, f.name) for f in fields(result)}
