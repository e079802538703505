"""APGD under several losses in one run (:class:`StackedAPGD`): a randomized defence's EOT attacks, APGD-CE and
APGD-DLR, each step one call over both losses' copies of the images (:func:`~.adaptive.eot_examples`).

Not a registered attack: what it returns is each loss's run (:meth:`StackedAPGD.candidates`), for the adaptive
evaluation's pick among candidates, not one example per image.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attacks.apgd import APGD, APGD_LOSSES, apgd_loss
from ..attacks.base import prepare_mask
from ..errors import ConfigError, ShapeError


class StackedAPGD(APGD):
    """APGD under several losses at once: ``len(losses)`` copies of the batch in one run, copy ``l`` ascending
    ``losses[l]``, so that each step is one call over every copy (on a device, the runs of APGD-CE and APGD-DLR
    in the rounds of one). :meth:`candidates` gives each loss's examples.

    Row for row these are the runs of one :class:`APGD` per loss: the same random start (keyed by the image's id
    and the restart), the same step schedule, the same per-image decisions, so on a deterministic model the same
    examples up to the float noise of a larger batch. A randomized model's draws are its next ones over the
    stacked batch (another stream than separate runs would see). Untargeted, L-inf.

    Examples:
        >>> import torch
        >>> from advspatial import models
        >>> from advspatial.defence.stacked_apgd import StackedAPGD
        >>> _ = torch.manual_seed(0)
        >>> model, images = models.build_model("lenet5").eval(), torch.rand(6, 1, 28, 28)  # images in [0,1]
        >>> labels = model(images).argmax(1)   # untrained here: its own predictions are the labels
        >>> ce, dlr = StackedAPGD(model, ("ce", "dlr"), eps=8 / 255, steps=5).candidates(images, labels)
        >>> ce.shape, dlr.shape
        (torch.Size([6, 1, 28, 28]), torch.Size([6, 1, 28, 28]))
    """

    name = "apgd-stacked"

    def __init__(self, model: nn.Module, losses: tuple[str, ...], eps: float = 8 / 255, steps: int = 100,
                 n_restarts: int = 1, rho: float = 0.75, eot_iter: int = 1, early_stop: bool = True,
                 seed: int = 0) -> None:
        if not losses or any(loss not in APGD_LOSSES for loss in losses):
            raise ConfigError(f"losses={losses!r} must name APGD losses; valid: {', '.join(APGD_LOSSES)}")
        super().__init__(model, eps, steps, n_restarts, losses[0], rho, eot_iter, early_stop, seed)
        self.losses = tuple(losses)
        self._copy_rows = 1

    def candidates(self, x: torch.Tensor, y: torch.Tensor, *, mask: torch.Tensor | None = None,
                   sample_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per loss, in ``losses``' order, the (N,C,H,W) examples of its run on ``x`` (labels ``y``)."""
        copies = len(self.losses)
        ids = torch.arange(x.shape[0]) if sample_ids is None else sample_ids
        full = prepare_mask(mask, x, check_values=False)  # (N,C,H,W): any shape a mask may take, per copy
        stacked = self(x.repeat(copies, 1, 1, 1), y.repeat(copies),
                       mask=None if full is None else full.repeat(copies, 1, 1, 1), sample_ids=ids.repeat(copies))
        return list(stacked.split(x.shape[0]))

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """APGD on the stacked batch: ``len(losses)`` copies of N images, one after another."""
        if x.shape[0] % len(self.losses):
            raise ShapeError(f"a stacked batch holds {len(self.losses)} copies of its images; got {x.shape[0]} "
                             "rows (use candidates(x, y))")
        self._copy_rows = max(1, x.shape[0] // len(self.losses))
        return super().perturb(x, y, mask, target, sample_ids)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
              idx: torch.Tensor) -> torch.Tensor:
        """Each row's own loss: row ``idx`` of the stacked batch belongs to copy ``idx // N``."""
        each = torch.stack([apgd_loss(logits, y, target, loss) for loss in self.losses])
        copy = (idx // self._copy_rows).to(logits.device)
        return each.gather(0, copy[None]).squeeze(0)
