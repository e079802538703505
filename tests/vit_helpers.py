"""Small vision transformers for the tests (importable as ``vit_helpers``: tests/ is on pytest's pythonpath).

``tiny_vit`` is advspatial's own architecture at test size; ``hf_vit_folder`` writes a Hugging Face ViT folder from
a small config (nothing is downloaded); ``SdpaViT`` hands out no attention probabilities (fused attention), as a
model loaded with SDPA does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from advspatial.models.vit import VisionTransformer


def tiny_vit(channels: int = 3, classes: int = 10, size: int = 16, patch: int = 4, depth: int = 2, heads: int = 2,
             dim: int = 16, seed: int = 0) -> VisionTransformer:
    """advspatial's ViT at test size (eval mode, seeded)."""
    torch.manual_seed(seed)
    return VisionTransformer(channels, classes, size, patch=patch, dim=dim, depth=depth, heads=heads).eval()


def hf_vit_folder(folder: Path, size: int = 16, patch: int = 4, classes: int = 10, channels: int = 3,
                  seed: int = 0, processor: bool = True) -> Path:
    """A Hugging Face ViT classifier saved with ``save_pretrained`` (a 2-block config; skips without transformers)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.ViTConfig(image_size=size, patch_size=patch, num_channels=channels, hidden_size=16,
                                    num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                    num_labels=classes)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    if processor:
        (folder / "preprocessor_config.json").write_text(
            '{"do_normalize": true, "do_rescale": true, "rescale_factor": 0.00392156862745098, "do_resize": true, '
            f'"image_mean": {[0.5, 0.4, 0.3][:channels]}, "image_std": {[0.2, 0.25, 0.3][:channels]}, '
            f'"size": {{"height": {size}, "width": {size}}}, "image_processor_type": "ViTImageProcessor"}}')
    return folder


class SdpaViT(nn.Module):
    """A ViT whose attention runs fused (``scaled_dot_product_attention``): no module hands out its probabilities."""

    def __init__(self, size: int = 16, patch: int = 4, dim: int = 16, classes: int = 10) -> None:
        super().__init__()
        torch.manual_seed(0)
        side = size // patch
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 1 + side * side, dim) * 0.02)
        self.blocks = nn.ModuleList(SdpaBlock(dim) for _ in range(2))
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(x), -1, -1), t], 1) + self.pos
        for block in self.blocks:
            t = block(t)
        return self.head(t[:, 0])


class SdpaBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm(t)).chunk(3, dim=-1)
        return t + self.out(nn.functional.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0])
