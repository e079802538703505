"""What the transformer methods share: a token layer's patch tokens and their gradient on the patch grid (the token
CAMs), and the read-out of a token-to-token score matrix at the token the head reads (rollout, chefer).

A transformer layer outputs a token sequence (N, T, D), not a feature map. As pytorch-grad-cam's
``reshape_transform`` does for ViTs, the class and register tokens are dropped and the patch tokens are put back
on their grid, (N, D, h, w): the D embedding channels play the part of a CNN's feature maps, and the CAM formulas
apply unchanged (Grad-CAM: ``ReLU(sum_k mean_ij(dz_c/dA_k) A_k)``; HiResCAM: ``ReLU(sum_k dz_c/dA_k * A_k)``),
then the (h, w) map is upsampled bilinearly (``align_corners=False``) to the image, as for the CAM family.

The layer (:class:`~advspatial.models.tokens.TokenLayout` ``cam_layer``, or ``layer=``): for a head that reads the
class token, the first LayerNorm of the last block. The last block's own output does not do: its patch tokens do
not reach the logits, their gradient is zero and so is the map (the "zero gradients on ViT layers" that
pytorch-grad-cam users meet). For a head that averages the patch tokens, the last block's output.

Examples:
    >>> import torch
    >>> from advspatial.maps import importance_map
    >>> from advspatial.models import build_model
    >>> vit = build_model("vit-tiny", in_channels=3, num_classes=10, input_size=32).eval()
    >>> importance_map("token-hirescam", vit, torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 32, 32])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ...errors import ModelError
from ...models.hooks import forward_hooks, frozen_eval, module_by_name
from ...models.tokens import TokenLayout, require_layout, token_output
from .._common import check_classes


def token_gradients(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str | None,
                    method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, dz_c/dA): the patch tokens of the token layer on their grid (N, D, h, w) and their gradient for each
    image's class, from one forward and one backward pass (the model frozen in eval mode)."""
    with frozen_eval(model):
        layout = require_layout(model, x, method)
        name = layer or layout.cam_layer
        module = module_by_name(model, name)
        captured: list[object] = []

        def factory(_name: str) -> Callable[..., None]:
            return lambda _m, _i, out: captured.append(out)

        with forward_hooks({name: module}, factory), torch.enable_grad():
            logits = model(x.detach().clone().requires_grad_(True))
        check_classes(classes, logits)
        if not captured:
            raise ModelError(f"layer {name!r} did not run in the forward pass")
        tokens = token_output(captured[0], layout, name)
        (grads,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), tokens, allow_unused=True)
    grads = torch.zeros_like(tokens) if grads is None else grads
    return layout.patch_grid(tokens.detach()), layout.patch_grid(grads.detach())


def read_row(relevance: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """(N, T, T) token-to-token scores -> (N, 1, h, w): the row of the token the head reads (the class token's;
    the mean of the patch tokens' rows for an averaging head), over the patch tokens, on the patch grid."""
    p = layout.prefix
    row = relevance[:, 0] if layout.pooling == "token" and p else relevance[:, p:].mean(dim=1)
    return row[:, p:].reshape(row.shape[0], 1, *layout.grid)
