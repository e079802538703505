"""APGD under several losses, and through several attacker's gradients, in one run (:class:`StackedAPGD`): a
randomized defence's EOT attacks, APGD-CE and APGD-DLR, each step one call over both losses' copies of the images
(:func:`~.adaptive.eot_examples`); a deterministic defence's, the same through BPDA and the local gradient, each
step one call over the four copies (:func:`~.adaptive.bank_examples`).

Not a registered attack: what it returns is each loss's run (:meth:`StackedAPGD.candidates`), for the adaptive
evaluation's pick among candidates, not one example per image.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attacks.apgd import APGD, APGD_LOSSES, apgd_loss
from ..attacks.base import call_keyed, keyed_ids, prepare_mask
from ..errors import ConfigError, ShapeError, check_range
from ..stacked_runs import in_chunks
from .transforms import check_backward


class StackedAPGD(APGD):
    """APGD under several losses at once: ``len(losses)`` copies of the batch in one run, copy ``l`` ascending
    ``losses[l]``, so that each step is one call over every copy (on a device, the runs of APGD-CE and APGD-DLR
    in the rounds of one). :meth:`candidates` gives each copy's examples. With ``backwards`` (a deterministic
    defence's attacker's gradients) there is a copy per gradient and loss, each row going through its own gradient
    (the defence's ``forward_backwards``); ``call_rows`` bounds the rows of one model call (the calls of one step
    stay one round).

    Row for row these are the runs of one :class:`APGD` per loss: the same random start (keyed by the image's id
    and the restart), the same step schedule, the same per-image decisions, so on a deterministic model the same
    examples up to the float noise of a larger batch. A randomized model's draws are its next ones over the
    stacked batch, keyed by each image's id (every copy of an image sees the same draw at a step), so an image's
    examples do not depend on the images attacked with it. Untargeted, L-inf.

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
                 seed: int = 0, *, backwards: tuple[str, ...] = (), call_rows: int | None = None) -> None:
        if not losses or any(loss not in APGD_LOSSES for loss in losses):
            raise ConfigError(f"losses={losses!r} must name APGD losses; valid: {', '.join(APGD_LOSSES)}")
        if backwards and not hasattr(model, "forward_backwards"):
            raise ConfigError("backwards= needs a defence with forward_backwards(x, identity) (a deterministic one)")
        if call_rows is not None:
            check_range("call_rows", call_rows, 1)
        super().__init__(model, eps, steps, n_restarts, losses[0], rho, eot_iter, early_stop, seed)
        self.losses = tuple(losses)
        self.backwards = tuple(check_backward(b) for b in backwards)
        self.call_rows = call_rows
        self._copy_rows = 1

    @property
    def copies(self) -> int:
        """Copies of the batch in one run: one per loss, per gradient when ``backwards`` are given."""
        return len(self.losses) * max(1, len(self.backwards))

    def candidates(self, x: torch.Tensor, y: torch.Tensor, *, mask: torch.Tensor | None = None,
                   sample_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per copy, the (N,C,H,W) examples of its run on ``x`` (labels ``y``): per loss in ``losses``' order,
        for each of ``backwards`` in turn when they are given (``(identity, ce), (identity, dlr), (local, ce),
        ...``)."""
        copies = self.copies
        ids = torch.arange(x.shape[0]) if sample_ids is None else sample_ids
        full = prepare_mask(mask, x, check_values=False)  # (N,C,H,W): any shape a mask may take, per copy
        stacked = self(x.repeat(copies, 1, 1, 1), y.repeat(copies),
                       mask=None if full is None else full.repeat(copies, 1, 1, 1), sample_ids=ids.repeat(copies))
        return list(stacked.split(x.shape[0]))

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
        target: torch.Tensor | None, sample_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """APGD on the stacked batch: :attr:`copies` copies of N images, one after another."""
        if x.shape[0] % self.copies:
            raise ShapeError(f"a stacked batch holds {self.copies} copies of its images; got {x.shape[0]} "
                             "rows (use candidates(x, y))")
        self._copy_rows = max(1, x.shape[0] // self.copies)
        return super().perturb(x, y, mask, target, sample_ids)

    @torch.no_grad()
    def copy_logits(self, examples: list[torch.Tensor]) -> torch.Tensor:
        """The logits of :meth:`candidates`' examples (one tensor per copy), each copy through its own gradient,
        stacked in copy order: one round, as a step's call."""
        self._copy_rows = max(1, examples[0].shape[0])
        stacked = torch.cat(examples)
        return self._forward(stacked, torch.arange(stacked.shape[0], device=stacked.device), None)

    def _forward(self, x: torch.Tensor, idx: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        """The logits of the stacked rows ``idx`` (sample ids ``ids``, every copy of an image with its image's),
        each through its copy's gradient when ``backwards`` are given, in calls of at most ``call_rows`` rows that
        make one round."""
        def part(sl: slice) -> torch.Tensor | None:
            return None if ids is None else ids[sl]

        if self.backwards:
            identity = torch.tensor([b == "identity" for b in self.backwards], device=x.device)
            rows = identity[(idx // self._copy_rows // len(self.losses)).to(x.device)]
            return in_chunks(lambda sl: self.model.forward_backwards(  # type: ignore[operator]
                x[sl], rows[sl], **keyed_ids(self.model, part(sl))), x.shape[0], self.call_rows)
        return in_chunks(lambda sl: call_keyed(self.model, x[sl], part(sl)), x.shape[0], self.call_rows)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
              idx: torch.Tensor) -> torch.Tensor:
        """Each row's own loss: row ``idx`` of the stacked batch belongs to copy ``idx // N``, whose loss is
        ``losses[copy % len(losses)]``."""
        each = torch.stack([apgd_loss(logits, y, target, loss) for loss in self.losses])
        copy = (idx // self._copy_rows % len(self.losses)).to(logits.device)
        return each.gather(0, copy[None]).squeeze(0)
