"""The exact promotion–suppression pairs by incremental evaluation (:mod:`advspatial.models.patch`).

Each (image, group) pair of :func:`~advspatial.analysis.pse.promotion_suppression`'s exact method is the image
with one ``block × block`` square changed: on a CPU the logits of such an image come cheaper from the change alone,
followed through the model's graph only where it reaches (:class:`~advspatial.models.patch.graph.GraphPatchForward`:
EfficientNet-Lite0 at 224 px 6.8× faster than a full pass per candidate, ResNet-20 1.9×, ``benchmarks/
bench_incremental.py``), than from a forward pass each. The logits equal the full pass's up to the order of float
summation (about 1e-5), so a group's suppression and promotion do too. A GPU runs whole batches faster than the
cone's many small kernels, so ``incremental="auto"`` takes it on a CPU only; a model the evaluator cannot follow,
superpixel groups and the partial squares at an edge take full passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..models.patch.graph import GraphPatchForward, try_graph_patch_forward
from ..runtime import batch_slices

#: the incremental choices of :func:`~advspatial.analysis.pse.promotion_suppression`
INCREMENTAL = (True, False, "auto")
#: floats of the largest activation one incremental call holds across its pairs (a CPU's cache-sized batch)
WORKING_FLOATS = 1 << 21


def check_incremental(incremental: bool | str) -> None:
    if incremental not in INCREMENTAL:
        raise ConfigError(f"incremental={incremental!r} is not valid; valid: 'auto', True, False")


@dataclass
class BlockEvaluator:
    """Logits of ``outer`` images with one whole square group replaced by ``inner``'s values there."""

    patch_forward: GraphPatchForward
    block: int
    top: torch.Tensor     # (G,) each group's first row
    left: torch.Tensor    # (G,) each group's first column
    whole: torch.Tensor   # (G,) bool: the group is a whole block x block square (not cut by an edge)

    @classmethod
    def build(cls, model: nn.Module, outer: torch.Tensor, block: int,
              incremental: bool | str) -> BlockEvaluator | None:
        """The evaluator for the (N,C,H,W) ``outer`` images, or None where full passes are used (``incremental``
        off, ``"auto"`` off a CPU, or a model the evaluator cannot follow)."""
        check_incremental(incremental)
        wanted = outer.device.type == "cpu" if incremental == "auto" else bool(incremental)
        if not wanted:
            return None
        patch_forward = try_graph_patch_forward(model, outer, (block, block))
        if patch_forward is None:
            return None
        h, w = outer.shape[2:]
        per_row = -(-w // block)
        group = torch.arange(-(-h // block) * per_row, device=outer.device)
        top, left = group // per_row * block, group % per_row * block
        return cls(patch_forward, block, top, left, (top + block <= h) & (left + block <= w))

    def logits(self, inner: torch.Tensor, image: torch.Tensor, group: torch.Tensor, rows: int) -> torch.Tensor:
        """(P, K) logits of the pairs (``image``, ``group``), every group whole, in calls of about ``rows``
        pairs or as many as :data:`WORKING_FLOATS` hold."""
        per_call = max(int(rows), WORKING_FLOATS // max(1, self.patch_forward.working_set))
        parts = []
        for sl in batch_slices(int(image.numel()), per_call):
            i, top, left = image[sl], self.top[group[sl]], self.left[group[sl]]
            rows_idx = top[:, None] + torch.arange(self.block, device=top.device)
            cols_idx = left[:, None] + torch.arange(self.block, device=left.device)
            patch = inner[i[:, None, None, None], torch.arange(inner.shape[1], device=i.device)[None, :, None, None],
                          rows_idx[:, None, :, None], cols_idx[:, None, None, :]]
            parts.append(self.patch_forward(i, top, left, patch))
        return torch.cat(parts) if parts else inner.new_zeros(0, 0)
