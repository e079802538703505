"""Attention rollout (Abnar & Zuidema 2020): ``rollout``, how much of each patch flows into the token the head reads.

Each block mixes the tokens by its attention probabilities A (N, heads, T, T), and its residual connection keeps
each token's own value: with the heads fused (their mean by default), the block's mixing is modelled as
``0.5 A + 0.5 I`` (rows renormalized to sum to 1), and the mixing of the whole stack is the product of the blocks',
last block on the left: ``R = Ã_L ... Ã_2 Ã_1``. Row ``i`` of R says how much of each input token ends up in
token ``i`` after the last block. The map is the row of the class token (the token a class-token head reads; for
a head that averages the patch tokens, the mean of their rows), over the patch tokens, on the patch grid, upsampled
bilinearly to the image.

Rollout uses no gradient and no class: the map is the same for every class (it says where the model reads, not
what in it speaks for a class). The gradient-weighted relevance (``chefer``,
:mod:`advspatial.maps.importance.chefer`) is its class-specific counterpart.

Examples:
    >>> import torch
    >>> from advspatial.maps.importance.rollout import attention_rollout
    >>> uniform = torch.full((1, 1, 3, 3), 1 / 3)              # one block, one head, 3 tokens
    >>> attention_rollout([uniform])[0, 0]                     # 0.5 * 1/3 + 0.5 * [1, 0, 0]
    tensor([0.6667, 0.1667, 0.1667])
"""

from __future__ import annotations

from typing import Any

from collections.abc import Sequence

import torch
from torch import nn

from ...errors import ConfigError
from ...models.hooks import frozen_eval
from ...models.tokens import recorded_attention, require_layout
from .._common import Target, check_classes, upsample
from ._registry import importance_map, register_importance_method
from ._tokens import read_row

#: how the heads of a block are fused into one mixing matrix
HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(attention: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """(N, heads, T, T) -> (N, T, T): the heads' mean, maximum or minimum."""
    if how == "mean":
        return attention.mean(dim=1)
    if how == "max":
        return attention.amax(dim=1)
    if how == "min":
        return attention.amin(dim=1)
    raise ConfigError(f"head_fusion={how!r} is not valid; valid: {', '.join(HEAD_FUSIONS)}")


def attention_rollout(attentions: Sequence[torch.Tensor], head_fusion: str = "mean") -> torch.Tensor:
    """(N, T, T) rollout ``Ã_L ... Ã_1`` of the blocks' attention probabilities (first block first), with
    ``Ã = (fused A + I) / 2``, rows renormalized."""
    first = attentions[0]
    eye = torch.eye(first.shape[-1], dtype=first.dtype, device=first.device)
    result = eye.expand(first.shape[0], -1, -1)
    for attention in attentions:
        mixed = (fuse_heads(attention, head_fusion) + eye) / 2
        result = (mixed / mixed.sum(dim=-1, keepdim=True)) @ result
    return result


def rollout(model: nn.Module, x: torch.Tensor, target: Target = "pred", y: torch.Tensor | None = None,
            **options: Any) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) of a vision transformer, class-agnostic, (N,H,W) >= 0.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> images = torch.rand(12, 1, 28, 28)            # (N,C,H,W) in [0,1]
        >>> from advspatial.models.vit import vit_tiny
        >>> from advspatial.maps import rollout
        >>> vit = vit_tiny(in_channels=1, input_size=28).eval()   # patch 4: a 7 x 7 token grid
        >>> roi_map = rollout(vit, images)
        >>> roi_map.shape, bool((roi_map >= 0).all())
        (torch.Size([12, 28, 28]), True)
    """
    return importance_map("rollout", model, x, target=target, y=y, **options)


@register_importance_method("rollout", function=rollout)
def rollout_map(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) of a vision transformer: class-agnostic, from its attention alone.

    ``head_fusion``: mean (the paper's), max or min over each block's heads. The map is the same for every class.
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ConfigError(f"head_fusion={head_fusion!r} is not valid; valid: {', '.join(HEAD_FUSIONS)}")
    with frozen_eval(model):
        layout = require_layout(model, x, "rollout")
        with recorded_attention(model, layout, "rollout") as probs, torch.no_grad():
            logits = model(x)
        check_classes(classes, logits)
    scores = read_row(attention_rollout([p.detach() for p in probs], head_fusion), layout)
    return upsample(scores.clamp_min(0), tuple(x.shape[2:]))
