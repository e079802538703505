"""What every attack's rows of one batch compare with, made once per batch for all the attacks.

An attack's per-image rows compare its maps with the batch's clean RoI and keep, for the statistics, the images'
foreground shares and model-free reference maps. None of these depends on the attack: they are the images' and the
clean importance maps' own. Made per attack, a run of six attacks decoded each of its images six times and cut the
same RoIs six times (at n = 2,000 on CIFAR-10 JPEGs, 12,000 decodes). :class:`SharedBatches` makes them once per
batch and hands them to every attack, within a byte budget: at 224 px without a common scale a batch's reference
maps are large, and a batch past the budget is made again for each attack, as before. Values made again are the
same values, so the budget changes no result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ...regions import Binarized, binarize
from ...regions.overlap import average_ranks
from .config import MeasurementConfig

#: bytes of batches held for the later attacks (CIFAR-10 at 32 px: about 25 KB an image, so 10,000 images fit)
SHARED_BYTES = 256 * 2**20


@dataclass(frozen=True)
class CleanRegion:
    """What each attack map of a batch is compared with: the importance maps at the statistics' scale, their RoI and
    their average ranks (Spearman's), made once for all of the batch's attack maps."""

    importance: torch.Tensor
    roi: Binarized
    rank: torch.Tensor

    @staticmethod
    def of(imp: torch.Tensor, ids: torch.Tensor, config: MeasurementConfig) -> CleanRegion:
        """The RoI (the ``fraction`` of largest values, ties keyed by ``ids``) and the ranks of maps ``imp``."""
        return CleanRegion(imp, binarize(imp, fraction=config.fraction, seed=config.seed, sample_ids=ids),
                           average_ranks(imp.flatten(1)))


@dataclass(frozen=True)
class BatchImages:
    """One batch's attack-independent side of the rows: ``composition`` (N,) the images' foreground shares,
    ``references`` {name: (N,H,W)} their model-free reference maps at the statistics' scale, ``clean`` the RoI."""

    composition: torch.Tensor
    references: dict[str, torch.Tensor]
    clean: CleanRegion

    def nbytes(self) -> int:
        """The bytes of every tensor held."""
        tensors = [self.composition, *self.references.values(), self.clean.importance, self.clean.rank,
                   *(getattr(self.clean.roi, f.name) for f in dataclasses.fields(self.clean.roi))]
        return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


@dataclass
class SharedBatches:
    """:class:`BatchImages` by batch (its first and past-the-last image), made by the first attack to ask and held
    while they fit in ``budget`` bytes.

    Example::

        >>> shared = SharedBatches(budget=0)  # holds nothing: every batch is made anew
        >>> shared.held
        {}
    """

    budget: int = SHARED_BYTES
    held: dict[tuple[int, int], BatchImages] = field(default_factory=dict)
    used: int = 0

    def get(self, sl: slice, make: Callable[[], BatchImages]) -> BatchImages:
        """The batch ``sl``'s values: held ones, else ``make()`` (held when they fit)."""
        key = (sl.start, sl.stop)
        if key in self.held:
            return self.held[key]
        value = make()
        size = value.nbytes()
        if self.used + size <= self.budget:
            self.held[key] = value
            self.used += size
        return value
