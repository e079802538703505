"""A small vision transformer, registered as ``vit-tiny``: patch 4, 4 pre-norm blocks, a class token.

Why: the explainers and experiments need a transformer that trains on 2 CPU cores in minutes (Fashion-MNIST,
the CIFAR-10 JPEG folder) for tests and for the CNN-versus-ViT study; pretrained transformers come in through
``hf:PATH`` and ``timm:NAME --weights FILE`` (:mod:`advspatial.models.huggingface`, :mod:`.loading`).

Structure (Dosovitskiy et al. 2021, pre-norm as in timm and Hugging Face): a patch embedding (a convolution
with kernel = stride = ``patch``), a learned class token and learned position embeddings, ``depth`` blocks
``x + attn(norm1(x))``, ``x + mlp(norm2(x))``, a final LayerNorm, and a linear head on the class token. Each
attention module passes its softmax probabilities through :class:`AttentionWeights` (an identity module), so
attention rollout and the gradient-weighted relevance read them with a forward hook, as they read Hugging Face's
and timm's (:mod:`advspatial.models.tokens`). The model takes images in [0,1] (it learns its own input scale).

Examples:
    >>> import torch
    >>> from advspatial.models import build_model
    >>> vit = build_model("vit-tiny", in_channels=3, num_classes=10, input_size=32).eval()
    >>> vit(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from .registry import register_model


class AttentionWeights(nn.Identity):
    """The softmax attention probabilities (N, heads, T, T), as an identity module an explainer can hook."""


class Attention(nn.Module):
    """Multi-head self-attention with its probabilities exposed through :class:`AttentionWeights`."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.weights = AttentionWeights()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        probs = self.weights((q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1))
        return self.proj((probs @ v).transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """One pre-norm transformer block: attention, then an MLP, each with a residual connection."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT with a class token: ``(N, C, S, S)`` images in [0,1] -> logits, for one image side ``S`` only.

    ``input_size`` must be a multiple of ``patch`` (a :class:`ValueError`, which :func:`~.registry.build_model`
    turns into one line); an image of another size is a one-line :class:`~advspatial.errors.ModelError`, since
    the position embeddings are learned for one grid of patches.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32, patch: int = 4,
                 dim: int = 96, depth: int = 4, heads: int = 3, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if input_size % patch:
            raise ValueError(f"the image side {input_size} is not a multiple of the patch size {patch}")
        self.input_size, self.patch = input_size, patch
        side = input_size // patch
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + side * side, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            side = self.input_size // self.patch
            raise ModelError(f"this ViT takes {self.input_size}x{self.input_size} images (position embeddings for "
                             f"{side}x{side} patches of {self.patch} px), got {x.shape[-2]}x{x.shape[-1]}; resize "
                             f"the images (--image-size {self.input_size}) or train it at that size")
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens)[:, 0])


@register_model("vit-tiny", "vision transformer: patch 4, 4 blocks of width 96 (3 heads), class token; ~0.3M "
                            "parameters, trains on a CPU in minutes")
def vit_tiny(in_channels: int = 3, num_classes: int = 10, input_size: int = 32) -> VisionTransformer:
    """The registered small ViT (see the module doc)."""
    return VisionTransformer(in_channels, num_classes, input_size)
