"""APGD-T (Croce & Hein 2020): Auto-PGD on the targeted DLR loss, towards each of the top wrong classes in turn.

The targeted variant of :class:`~advspatial.attacks.apgd.APGD`: the same steps and schedule, with its own runs (one
per target class and restart) and the clean logits it needs to choose the classes.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ..errors import check_range
from .apgd import APGD
from .base import register_attack


@register_attack("apgdt", "Targeted Auto-PGD on the targeted DLR loss; untargeted: over the top wrong classes")
class APGDT(APGD):
    """APGD-T: targeted DLR. With ``target=`` an ordinary targeted APGD; without, for ``k = 1 .. n_target_classes``
    (capped at classes - 1) a targeted run towards the k-th highest-scoring wrong class on the clean image,
    ``n_restarts`` runs each (seed ``seed + (k-1)*n_restarts + r``), on the images still correctly classified.

    Args: as :class:`APGD`, plus ``n_target_classes >= 1``; the loss defaults to ``dlr`` (any targeted APGD loss works).

    Examples:
        >>> import torch
        >>> from advspatial import attacks, models
        >>> _ = torch.manual_seed(0)
        >>> model, images = models.build_model("lenet5").eval(), torch.rand(12, 1, 28, 28)  # images in [0,1]
        >>> labels = model(images).argmax(1)   # untrained here: its own predictions are the labels
        >>> attacks.APGDT(model, eps=8 / 255, steps=5, n_target_classes=2)(images, labels).shape
        torch.Size([12, 1, 28, 28])
    """

    name = "apgdt"

    def __init__(
        self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, n_restarts: int = 1,
        n_target_classes: int = 9, loss: str = "dlr", rho: float = 0.75, eot_iter: int = 1,
        early_stop: bool = True, seed: int = 0,
    ) -> None:
        super().__init__(model, eps, steps, n_restarts, loss, rho, eot_iter, early_stop, seed)
        check_range("n_target_classes", n_target_classes, 1, None)
        self.n_target_classes = int(n_target_classes)

    def needs_clean_logits(self, target: torch.Tensor | None) -> bool:
        """Untargeted APGD-T also needs x's logits to choose its target classes."""
        return self.early_stop or target is None

    def runs(
        self, y: torch.Tensor, target: torch.Tensor | None, clean_logits: torch.Tensor | None
    ) -> Iterator[tuple[int, torch.Tensor | None]]:
        if target is not None:
            yield from super().runs(y, target, clean_logits)
            return
        assert clean_logits is not None
        wrong = clean_logits.scatter(1, y[:, None], float("-inf"))
        order = wrong.argsort(dim=1, descending=True, stable=True)
        for k in range(min(self.n_target_classes, clean_logits.shape[1] - 1)):
            for r in range(self.n_restarts):
                yield self.seed + k * self.n_restarts + r, order[:, k]


__all__ = ["APGDT"]
