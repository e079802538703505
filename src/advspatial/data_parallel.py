"""One model trained by every process of a ``torchrun`` launch: DistributedDataParallel over shards of each batch.

``advspatial train`` under ``torchrun`` calls :func:`advspatial.training.fit` with ``data_parallel=True`` in
every process. Every process draws the same global order of each epoch (a generator seeded by the config's
seed, the same in one process); of each global batch of ``batch_size`` images, rank ``r`` takes the positions
``r, r + W, r + 2W, ...`` (:class:`Shard`, ``W`` processes), so the global batch is the single-process batch
and each process computes ``batch_size / W`` of it. :class:`DataParallel` wraps the model in
:class:`~torch.nn.parallel.DistributedDataParallel`, which averages the gradients over the processes: one step
is the single-process step on the same batch up to the order of float summation (a process's mean loss is
weighted by its share when a last, partial batch does not split evenly).

What a training loss draws keeps its single-process value: the adversarial examples of a shard are made on
the shard (the per-batch attack seed comes from the global torch stream, which every process advances alike,
and each image's random start is keyed by its position in the *global* batch, :func:`current_shard`), and
``localized-random`` draws the random keys of the whole global batch and keeps its shard's rows.

What differs from one process (docs/scale-out.md gives the tolerance):

* **BatchNorm.** On CUDA every BatchNorm becomes a :class:`~torch.nn.SyncBatchNorm` for the training (the
  statistics of the global batch, as in one process) and is put back afterwards. PyTorch's SyncBatchNorm
  refuses CPU tensors, so on the CPU (gloo) each process normalizes by its shard's statistics, and the
  running statistics kept are rank 0's (DistributedDataParallel broadcasts them at every forward pass).
* **Dropout** draws its masks from the global stream at the shard's shape, not the global batch's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .distributed import World, world
from .errors import ConfigError
from .runtime import model_device

#: the fewest images a process may get of any batch (BatchNorm's batch statistics need 2)
MIN_SHARE = 2


@dataclass(frozen=True)
class Shard:
    """One process's images of a global batch: its positions in that batch."""

    positions: torch.Tensor  # (n,) int64: rank, rank + W, rank + 2W, ...
    size: int  # the global batch's size
    processes: int

    @property
    def weight(self) -> float:
        """The factor of this process's mean loss that makes the average over processes the global batch's mean."""
        return len(self.positions) * self.processes / self.size


def shard_of(current: World, size: int) -> Shard:
    """Rank ``current.rank``'s positions in a global batch of ``size``: every ``current.size``-th from its rank."""
    return Shard(torch.arange(current.rank, size, current.size), size, current.size)


def check_shards(current: World, images: int, batch_size: int) -> None:
    """:class:`ConfigError` unless ``batch_size`` divides among the processes and every process gets at least
    :data:`MIN_SHARE` images of every batch, the last, partial one included."""
    n = current.size
    if batch_size % n:
        raise ConfigError(f"batch_size={batch_size} does not divide among {n} processes; under torchrun the batch "
                          f"size is the global batch's, so give a multiple of {n}")
    smallest = images % batch_size or batch_size  # the last batch's
    if smallest // n < MIN_SHARE:
        raise ConfigError(f"with {images} training images and batch_size={batch_size} a batch has {smallest} images, "
                          f"fewer than {MIN_SHARE} for each of {n} processes; choose a batch size (or --train-limit) "
                          f"that leaves no batch smaller than {MIN_SHARE * n} images")


_CURRENT: Shard | None = None


@contextlib.contextmanager
def on_shard(shard: Shard | None) -> Iterator[None]:
    """Within the block :func:`current_shard` is ``shard`` (None: one process, nothing changes)."""
    global _CURRENT
    previous, _CURRENT = _CURRENT, shard
    try:
        yield
    finally:
        _CURRENT = previous


def current_shard() -> Shard | None:
    """The shard of the batch :func:`advspatial.training.fit` is computing the loss of, or None in one process.

    A training loss keys the randomness of each image by ``shard.positions`` (its position in the global
    batch), so that a shard's images get the numbers they get in one process."""
    return _CURRENT


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (the attacks of a training loss run on it), else
    ``model``."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def sync_batch_norms(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """Replace every BatchNorm below ``model`` by a SyncBatchNorm sharing its parameters and buffers (so an
    optimizer made before keeps working); returns ``(parent, name, original)`` for :func:`put_back`."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
                setattr(parent, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
                swapped.append((parent, name, child))
    return swapped


def put_back(swapped: list[tuple[nn.Module, str, nn.Module]]) -> None:
    """Undo :func:`sync_batch_norms`: the original modules, which hold the trained parameters and statistics."""
    for parent, name, original in swapped:
        setattr(parent, name, original)


class DataParallel:
    """A model wrapped for DistributedDataParallel training over the processes of the run, and its shards.

    Every process builds it alike (the wrapper starts from rank 0's parameters and buffers); :meth:`finish`
    leaves the same weights and buffers in every process and the model as it was built (no SyncBatchNorm).
    """

    def __init__(self, model: nn.Module, images: int, batch_size: int) -> None:
        self.world = world()
        check_shards(self.world, images, batch_size)
        device = model_device(model)
        self.swapped = sync_batch_norms(model) if device.type == "cuda" else []
        ids: list[int | torch.device] | None = [device] if device.type == "cuda" else None
        self.net: nn.Module = DistributedDataParallel(model, device_ids=ids)
        self.model = model

    def shard(self, size: int) -> Shard:
        """This process's shard of a global batch of ``size`` images."""
        return shard_of(self.world, size)

    @staticmethod
    def weighted(loss: torch.Tensor, shard: Shard) -> torch.Tensor:
        """``loss`` weighted by the shard's share (unchanged when the batch splits evenly)."""
        return loss if shard.weight == 1 else loss * shard.weight

    def global_loss(self, weighted: torch.Tensor) -> float:
        """The global batch's loss from every process's :meth:`weighted` loss (a collective)."""
        total = weighted.detach().clone()
        dist.all_reduce(total)
        return float(total) / self.world.size

    def finish(self) -> None:
        """Rank 0's buffers (BatchNorm statistics) in every process, the model's own modules back."""
        for buffer in self.model.buffers():
            dist.broadcast(buffer, 0)
        put_back(self.swapped)
        del self.net
