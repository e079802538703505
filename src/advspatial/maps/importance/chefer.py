"""Gradient-weighted attention relevance of a vision transformer (Chefer, Gur & Wolf 2021): ``chefer``.

The class-specific counterpart of attention rollout ("Generic Attention-model Explainability for Interpreting
Bi-Modal and Encoder-Decoder Transformers", ICCV 2021, its rule for self-attention). Each block's attention
probabilities A (N, heads, T, T) are weighted by their gradient for the class score z_c, element by element, and
only positive contributions are kept, averaged over the heads: ``Ā = mean_h ReLU(dz_c/dA ⊙ A)``. The relevance of
the tokens starts as the identity (each token is relevant to itself) and accumulates block by block, first block
first: ``R <- R + Ā R``. The map is the class token's row of R over the patch tokens (for a head that averages
the patch tokens, the mean of their rows), on the patch grid, upsampled bilinearly to the image.

It needs the attention probabilities in the autograd graph (one forward and one backward pass), which vit-tiny,
a Hugging Face ViT loaded through ``hf:PATH`` (eager attention) and a timm ViT (its explicit attention path) give.

Examples:
    >>> import torch
    >>> from advspatial.maps import importance_map
    >>> from advspatial.models import build_model
    >>> vit = build_model("vit-tiny", in_channels=3, num_classes=10, input_size=32).eval()
    >>> importance_map("chefer", vit, torch.rand(2, 3, 32, 32), target=3).shape
    torch.Size([2, 32, 32])
"""

from __future__ import annotations

from typing import Any

from collections.abc import Sequence

import torch
from torch import nn

from ...models.hooks import frozen_eval
from ...models.tokens import recorded_attention, require_layout
from .._common import Target, check_classes, upsample
from ._registry import importance_map, register_importance_method
from ._tokens import read_row


def relevance_rule(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """(N, T, T) relevance ``R`` after every block (first block first): ``R <- R + mean_h ReLU(G ⊙ A) R`` from
    ``R = I``."""
    first = attentions[0]
    result = torch.eye(first.shape[-1], dtype=first.dtype, device=first.device).expand(first.shape[0], -1, -1)
    for attention, gradient in zip(attentions, gradients, strict=True):
        weighted = (gradient * attention).clamp_min(0).mean(dim=1)
        result = result + weighted @ result
    return result


def chefer(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
           **options: Any) -> torch.Tensor:
    """Gradient-weighted attention relevance of a vision transformer (Chefer et al. 2021), (N,H,W) >= 0.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> from advspatial.models.vit import vit_tiny
        >>> from advspatial.maps import chefer
        >>> vit = vit_tiny(in_channels=1, input_size=28).eval()   # patch 4: a 7 x 7 token grid
        >>> roi_map = chefer(vit, images)
        >>> roi_map.shape, bool((roi_map >= 0).all())
        (torch.Size([12, 28, 28]), True)
    """
    return importance_map("chefer", model, x, target=target, y=y, **options)


@register_importance_method("chefer", function=chefer)
def chefer_map(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Gradient-weighted attention relevance of a vision transformer (Chefer et al. 2021), class-specific.

    Every block's attention weighted by its gradient for the class, positive part, heads averaged, accumulated
    from the identity (see the module doc).
    """
    with frozen_eval(model):
        layout = require_layout(model, x, "chefer")
        with recorded_attention(model, layout, "chefer") as probs, torch.enable_grad():
            logits = model(x.detach().clone().requires_grad_(True))
        check_classes(classes, logits)
        grads = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), probs, allow_unused=True)
    gradients = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(probs, grads, strict=True)]
    scores = read_row(relevance_rule([p.detach() for p in probs], gradients), layout)
    return upsample(scores.clamp_min(0), tuple(x.shape[2:]))
