"""The head of a classifier, for the CAM family: its final linear layer and whether it sees a global average.

:func:`default_importance_method` picks the explainer by structure (METHODS.md
section 1): ``gradcam`` when the final ``nn.Linear`` receives the global average
of the Grad-CAM layer's feature map (GAP + linear head), else ``hirescam``; for a
vision transformer (:func:`advspatial.models.tokens.token_layout`) ``chefer``, the
gradient-weighted attention relevance, or ``token-hirescam`` where its attention
probabilities cannot be read.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ModelError
from ..models.hooks import forward_hooks, frozen_eval, resolve_layer
from ..models.tokens import TokenLayout, token_layout
from ..runtime import model_device
from ._common import check_images


def find_head(model: nn.Module, x: torch.Tensor, linear: str | nn.Module | None) -> tuple[str, nn.Linear]:
    """The final linear layer: ``linear`` if given, else the last ``nn.Linear`` run by forward."""
    if linear is not None:
        name, module = resolve_layer(model, x, linear)
        if not isinstance(module, nn.Linear):
            raise ModelError(f"CAM: layer {name!r} is {type(module).__name__}, not nn.Linear")
        return name, module
    order: list[str] = []
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}

    def factory(name: str) -> Callable[..., None]:
        return lambda *_: order.append(name)

    with forward_hooks(linears, factory), torch.no_grad():
        model(x[:1])
    if not order:
        raise ModelError("CAM needs a global-average-pooling + nn.Linear head; this model has no nn.Linear")
    return order[-1], linears[order[-1]]


def head_inputs(
    model: nn.Module, x: torch.Tensor, layer: str | nn.Module | None, linear: str | nn.Module | None
) -> tuple[str, str, nn.Linear, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(layer name, head name, head, logits, features of the layer, input of the head), one forward pass.

    The features are None when the layer does not output a (N,K,h,w) tensor.
    Runs under :func:`frozen_eval` and ``no_grad``.
    """
    with frozen_eval(model):
        name, module = resolve_layer(model, x, layer)
        head_name, head = find_head(model, x, linear)
        feats: dict[str, torch.Tensor] = {}
        head_in: dict[str, torch.Tensor] = {}

        def feats_hook(_m: nn.Module, _i: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                feats["x"] = output

        def head_hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], _o: object) -> None:
            head_in["x"] = inputs[0]

        with forward_hooks({name: module}, lambda _n: feats_hook):
            with forward_hooks({head_name: head}, lambda _n: head_hook), torch.no_grad():
                logits = model(x)
    out = feats.get("x")
    return name, head_name, head, logits, (out if out is not None and out.ndim == 4 else None), head_in["x"]


def receives_global_average(feats: torch.Tensor | None, head_in: torch.Tensor) -> bool:
    """True when ``head_in`` (N,K) equals the spatial mean of ``feats`` (N,K,h,w) (rtol 1e-4, atol 1e-5)."""
    if feats is None:
        return False
    pooled = feats.mean(dim=(2, 3))
    return head_in.shape == pooled.shape and torch.allclose(head_in, pooled, rtol=1e-4, atol=1e-5)


def has_gap_linear_head(
    model: nn.Module, x: torch.Tensor, layer: str | nn.Module | None = None, linear: str | nn.Module | None = None
) -> bool:
    """Whether the final ``nn.Linear`` receives the global average of the Grad-CAM layer's features.

    ``layer`` and ``linear`` are resolved as in :func:`~advspatial.maps.importance.cam.cam_map`. One forward pass
    on ``x`` (eval mode). False, not an error, when the model has no
    ``nn.Linear`` or the layer does not output a (N,K,h,w) map; a ``layer`` or
    ``linear`` that does not exist still raises.
    """
    check_images(x)
    x = x.detach().to(model_device(model))
    if linear is None and not any(isinstance(m, nn.Linear) for m in model.modules()):
        return False
    try:
        *_, feats, head_in = head_inputs(model, x, layer, linear)
    except ModelError:
        if linear is not None:
            raise
        return False  # no nn.Linear run by forward
    return receives_global_average(feats, head_in)


def default_importance_method(
    model: nn.Module, x: torch.Tensor, layer: str | nn.Module | None = None
) -> tuple[str, str]:
    """The explainer to use by structure: (method name, one-sentence reason).

    A vision transformer (:func:`~advspatial.models.tokens.token_layout`; a model without a patch embedding costs
    no pass to rule out) gets :func:`transformer_default`. Else ``"gradcam"`` when the final linear layer receives
    the global average of the Grad-CAM layer's feature map (GAP + linear head), else ``"hirescam"``
    (METHODS.md section 1). ``layer`` as for Grad-CAM (argument, ``cam_layer``,
    automatic). ``x``: a few representative images (one forward pass).

    Examples:
        >>> import torch
        >>> from advspatial.models import build_model
        >>> vit = build_model("vit-tiny", in_channels=3, num_classes=10, input_size=32)
        >>> default_importance_method(vit, torch.rand(1, 3, 32, 32))[0]
        'chefer'
    """
    layout = token_layout(model, x.detach().to(model_device(model)))
    if layout is not None:
        return transformer_default(layout)
    name, _ = resolve_layer(model, x.detach().to(model_device(model)), layer)
    if has_gap_linear_head(model, x, layer=layer):
        return "gradcam", (
            f"the final linear layer receives the global average of {name!r} (GAP + linear head), "
            "where Grad-CAM is exact (CAM up to a positive scale)"
        )
    return "hirescam", (
        f"the final linear layer does not receive the global average of {name!r} (flatten/FC head), so "
        "Grad-CAM would average away the position-specific weights and can point at empty background; "
        "HiResCAM keeps them"
    )


def transformer_default(layout: TokenLayout) -> tuple[str, str]:
    """(method, why) for a vision transformer: the gradient-weighted attention relevance where every block's
    attention probabilities can be read, else HiResCAM on the patch tokens."""
    grid = f"{layout.grid[0]}x{layout.grid[1]} patch tokens, {layout.prefix} class/register token(s), " \
           f"{len(layout.blocks)} blocks"
    if layout.attention:
        return "chefer", (
            f"a vision transformer ({grid}) whose attention probabilities can be read: the gradient-weighted "
            "attention relevance (Chefer et al. 2021) follows the class evidence through every block's attention, "
            "where attention rollout ignores the class and a token Grad-CAM sees one layer"
        )
    return "token-hirescam", (
        f"a vision transformer ({grid}) whose attention probabilities cannot be read (fused attention), so HiResCAM "
        f"on the patch tokens of {layout.cam_layer!r}, which keeps each patch's own gradient"
    )
