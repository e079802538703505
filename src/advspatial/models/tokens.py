"""The token structure of a vision transformer, read off the model itself: what the transformer explainers need.

A CNN declares its Grad-CAM layer (``cam_layer``) or has one found (the last 4-D feature map). A vision
transformer's layers output token sequences (N, T, D) instead, and its explainers need to know how to read them:
which tokens are patches and on which grid (the class and register tokens come first and are dropped), which layer
a token Grad-CAM reads, and which modules hand out the attention probabilities that attention rollout and the
gradient-weighted relevance combine. :func:`token_layout` finds all of it from the structure, the same way for
``vit-tiny``, a Hugging Face ViT (``hf:PATH``) and a timm ViT (``timm:NAME``):

* the **patch embedding**: a ``Conv2d`` whose kernel equals its stride (> 1), without padding; its output
  (N, D, h, w) gives the patch grid (h, w). A model without one is not a transformer here (no forward pass is
  spent on it, so a CNN's runs are untouched);
* the **blocks**: the children of the ``ModuleList``/``Sequential`` with the most children that all output a token
  sequence (N, T, D) with ``T = prefix + h*w`` (a tuple output counts by its first element);
* the **attention probabilities** of each block: the output of a module inside it (a tensor, or an element of a
  tuple, as Hugging Face's eager attention returns them) of shape (N, heads, T, T), non-negative, rows summing
  to 1. timm's fused attention is switched to its explicit path while they are read (:func:`explicit_attention`);
* the **pooling**: ``"token"`` when the logits do not depend on the patch tokens of the last block's output (the
  head reads the class token: their gradient is exactly zero), else ``"mean"``; and the **token CAM layer**: for a
  class-token head the first token layer inside the last block (its first LayerNorm, the layer pytorch-grad-cam's
  documentation points to), since the last block's patch tokens get no gradient there, else the last block.

The probe is one forward and backward pass of one image through ``model.forward`` (the model's own forward hooks,
such as a run's pass counter, do not see it: it reads the structure, it is not a pass of the analysis), in eval
mode with parameters frozen; the layout is remembered per model and image shape.

Examples:
    >>> import torch
    >>> from advspatial.models import build_model
    >>> from advspatial.models.tokens import token_layout
    >>> vit = build_model("vit-tiny", in_channels=3, num_classes=10, input_size=32)
    >>> layout = token_layout(vit, torch.rand(1, 3, 32, 32))
    >>> layout.grid, layout.prefix, layout.cam_layer, layout.pooling
    ((8, 8), 1, 'blocks.3.norm1', 'token')
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ModelError
from .hooks import forward_hooks, frozen_eval

#: at most this many class and register tokens before the patch tokens
MAX_PREFIX = 16
#: the flag by which timm's attention modules choose their fused path
FUSED_FLAG = "fused_attn"


@dataclass(frozen=True)
class AttentionSource:
    """Where a block's attention probabilities come out: module ``module``'s output, or element ``index`` of it."""

    module: str
    index: int | None


@dataclass(frozen=True)
class TokenLayout:
    """The token structure of a vision transformer (see the module doc).

    Attributes:
        grid: (h, w) of the patch tokens.
        prefix: the class and register tokens before the patch tokens.
        blocks: the transformer blocks' module names, in forward order.
        attention: each block's :class:`AttentionSource`, or () when the probabilities cannot be read.
        cam_layer: the token layer a token Grad-CAM reads.
        pooling: ``"token"`` (the head reads the class token) or ``"mean"`` (it reads the patch tokens).
    """

    grid: tuple[int, int]
    prefix: int
    blocks: tuple[str, ...]
    attention: tuple[AttentionSource, ...]
    cam_layer: str
    pooling: str

    @property
    def tokens(self) -> int:
        """T, the length of the token sequence."""
        return self.prefix + self.grid[0] * self.grid[1]

    def patch_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T, D) tokens -> (N, D, h, w): the patch tokens on their grid (class and register tokens dropped)."""
        n, _, d = tokens.shape
        return tokens[:, self.prefix:].reshape(n, *self.grid, d).permute(0, 3, 1, 2)


_LAYOUTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], TokenLayout | None]] = (
    weakref.WeakKeyDictionary())


def patch_embedding(model: nn.Module) -> str | None:
    """The name of the first ``Conv2d`` with kernel = stride > 1 and no padding (a patch embedding), or None."""
    for name, module in model.named_modules():
        if (isinstance(module, nn.Conv2d) and module.kernel_size == module.stride and min(module.stride) > 1
                and module.padding in ((0, 0), "valid")):
            return name
    return None


def is_transformer(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether :func:`token_layout` finds a vision transformer (without a forward pass for a model that has no
    patch embedding)."""
    return token_layout(model, x) is not None


def token_layout(model: nn.Module, x: torch.Tensor) -> TokenLayout | None:
    """The model's :class:`TokenLayout` for images shaped like ``x``, or None when it is not a vision transformer."""
    if patch_embedding(model) is None:
        return None
    key = tuple(x.shape[1:])
    known = _LAYOUTS.setdefault(model, {})
    if key not in known:
        known[key] = _probe(model, x[:1].detach())
    return known[key]


def first_tensor(output: object) -> torch.Tensor | None:
    """A module's output, or the first element of a tuple/list output, when it is a tensor."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    return output if isinstance(output, torch.Tensor) else None


def is_attention(value: object, tokens: int | None = None) -> bool:
    """Whether ``value`` looks like attention probabilities: (N, heads, T, T), >= 0, rows summing to 1."""
    if not isinstance(value, torch.Tensor) or value.ndim != 4 or value.shape[-1] != value.shape[-2]:
        return False
    if tokens is not None and value.shape[-1] != tokens:
        return False
    v = value.detach().float()
    return bool((v >= 0).all()) and torch.allclose(v.sum(-1), torch.ones(()), atol=1e-4)


def attention_source(name: str, output: object, tokens: int) -> AttentionSource | None:
    """Where attention probabilities over ``tokens`` tokens are in module ``name``'s output, or None."""
    if is_attention(output, tokens):
        return AttentionSource(name, None)
    if isinstance(output, (tuple, list)):
        for i, value in enumerate(output):
            if is_attention(value, tokens):
                return AttentionSource(name, i)
    return None


def read_attention(source: AttentionSource, output: object) -> torch.Tensor:
    """The attention probabilities in a module's output, as :class:`AttentionSource` says where."""
    value = output if source.index is None else output[source.index]  # type: ignore[index]
    assert isinstance(value, torch.Tensor)
    return value


@contextlib.contextmanager
def explicit_attention(model: nn.Module) -> Iterator[None]:
    """Modules with a ``fused_attn`` flag (timm's attention) run their explicit path, which hands the attention
    probabilities to a module (``attn_drop``) where a hook reads them; the flags are restored afterwards."""
    flags = {m: bool(getattr(m, FUSED_FLAG)) for m in model.modules()
             if isinstance(getattr(m, FUSED_FLAG, None), bool)}
    try:
        for module in flags:
            setattr(module, FUSED_FLAG, False)
        yield
    finally:
        for module, flag in flags.items():
            setattr(module, FUSED_FLAG, flag)


def _probe(model: nn.Module, x: torch.Tensor) -> TokenLayout | None:
    """One forward and backward pass of one image: the layout, or None."""
    modules = {name: m for name, m in model.named_modules() if name}
    outputs: dict[str, object] = {}
    inputs: dict[str, object] = {}

    def factory(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[object, ...], out: object) -> None:
            if name not in outputs:  # a module run twice keeps its first call
                outputs[name], inputs[name] = out, args[0] if args else None

        return hook

    with frozen_eval(model), explicit_attention(model), torch.enable_grad(), forward_hooks(modules, factory):
        logits = first_tensor(model.forward(x.clone().requires_grad_(True)))
    embed = patch_embedding(model)
    grid_out = first_tensor(outputs.get(embed or ""))
    if logits is None or grid_out is None or grid_out.ndim != 4:
        return None
    grid = (int(grid_out.shape[2]), int(grid_out.shape[3]))
    blocks = _blocks(model, outputs, inputs, grid[0] * grid[1])
    if not blocks:
        return None
    last = first_tensor(outputs[blocks[-1]])
    assert last is not None
    prefix = int(last.shape[1]) - grid[0] * grid[1]
    pooling = _pooling(logits, last, prefix)
    return TokenLayout(grid, prefix, tuple(blocks), _attention(outputs, blocks, prefix + grid[0] * grid[1]),
                       _cam_layer(outputs, blocks, pooling, int(last.shape[1])), pooling)


def _blocks(model: nn.Module, outputs: dict[str, object], inputs: dict[str, object], patches: int) -> list[str]:
    """The children of the container with the most children that are all of one type and each map a token
    sequence to one of the same shape (residual blocks), one sequence length throughout."""
    best: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) <= len(best):
            continue
        if len({type(child) for child in module.children()}) != 1:
            continue
        children = [f"{name}.{child}" if name else child for child, _ in module.named_children()]
        shapes = {_token_shape(outputs.get(c), patches) for c in children}
        shapes |= {_token_shape(inputs.get(c), patches) for c in children}
        if len(shapes) == 1 and None not in shapes:
            best = children
    return best


def _token_shape(value: object, patches: int) -> tuple[int, ...] | None:
    """The shape of a token sequence (N, T, D) with T - patches in [0, MAX_PREFIX] (a tuple counts by its first
    element), else None."""
    t = first_tensor(value)
    if t is None or t.ndim != 3 or not 0 <= t.shape[1] - patches <= MAX_PREFIX:
        return None
    return tuple(t.shape)


def _pooling(logits: torch.Tensor, last: torch.Tensor, prefix: int) -> str:
    """``"token"`` when the patch tokens of the last block's output get no gradient from the logits, else ``"mean"``."""
    if not last.requires_grad:
        return "mean"
    (grad,) = torch.autograd.grad(logits.sum(), last, allow_unused=True)
    return "token" if grad is None or not bool(grad[:, prefix:].abs().sum() > 0) else "mean"


def _attention(outputs: dict[str, object], blocks: Sequence[str], tokens: int) -> tuple[AttentionSource, ...]:
    """Each block's first module (in completion order) that outputs attention probabilities; () if one has none."""
    found = []
    for block in blocks:
        inside = (attention_source(name, out, tokens) for name, out in outputs.items() if name.startswith(block + "."))
        source = next((s for s in inside if s is not None), None)
        if source is None:
            return ()
        found.append(source)
    return tuple(found)


def _cam_layer(outputs: dict[str, object], blocks: Sequence[str], pooling: str, tokens: int) -> str:
    """The last block, or for a class-token head the first token layer inside it (its first LayerNorm)."""
    if pooling == "token":
        inside = [name for name, out in outputs.items() if name.startswith(blocks[-1] + ".")
                  and isinstance(out, torch.Tensor) and out.ndim == 3 and out.shape[1] == tokens]
        if inside:
            return inside[0]
        if len(blocks) > 1:
            return blocks[-2]
    return blocks[-1]


def require_layout(model: nn.Module, x: torch.Tensor, method: str) -> TokenLayout:
    """:func:`token_layout`, or a one-line :class:`ModelError` saying that ``method`` needs a vision transformer."""
    layout = token_layout(model, x)
    if layout is None:
        raise ModelError(f"{method} explains vision transformers (a patch embedding and blocks of tokens), and this "
                         f"model has none; for a CNN use gradcam or hirescam (importance 'auto' picks by structure)")
    return layout


def token_output(output: object, layout: TokenLayout, name: str) -> torch.Tensor:
    """A token layer's output (N, T, D) (the first element of a tuple output); one line when it is none."""
    tokens = first_tensor(output)
    if tokens is None or tokens.ndim != 3 or tokens.shape[1] != layout.tokens:
        shape = None if tokens is None else tuple(tokens.shape)
        raise ModelError(f"layer {name!r} must output {layout.tokens} tokens (N, {layout.tokens}, D), got {shape}")
    return tokens


@contextlib.contextmanager
def recorded_attention(model: nn.Module, layout: TokenLayout, method: str) -> Iterator[list[torch.Tensor]]:
    """The attention probabilities (N, heads, T, T) of every block during the forward passes inside the block, in
    forward order and in the autograd graph; one line when the model hands out none (fused attention that cannot
    be switched off, or a Hugging Face model loaded with its SDPA attention)."""
    if not layout.attention:
        raise ModelError(f"{method} needs the attention probabilities of every block, and this model does not hand "
                         "them out (fused attention); use token-hirescam or token-gradcam, or load a Hugging Face "
                         "model through hf:PATH (eager attention)")
    modules = dict(model.named_modules())
    probs: list[torch.Tensor] = []
    sources = {s.module: s for s in layout.attention}

    def factory(name: str) -> Callable[..., None]:
        return lambda _m, _i, out: probs.append(read_attention(sources[name], out))

    with explicit_attention(model), forward_hooks({n: modules[n] for n in sources}, factory):
        yield probs
