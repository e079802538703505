"""The registered ViT, the token layout read off a transformer, and the augmentation that trains it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from vit_helpers import SdpaViT, tiny_vit

from advspatial.data.augment import FlipCrop, draw_flip_crop, flip_crop
from advspatial.errors import ConfigError, ModelError
from advspatial.models import build_model, list_models
from advspatial.models.patch.forward import try_patch_forward
from advspatial.models.tokens import explicit_attention, is_transformer, token_layout


@pytest.mark.parametrize(("channels", "size", "grid"), [(1, 28, 7), (3, 32, 8)])
def test_vit_tiny_is_registered_and_takes_both_datasets(channels: int, size: int, grid: int) -> None:
    assert "vit-tiny" in list_models()
    vit = build_model("vit-tiny", in_channels=channels, num_classes=10, input_size=size).eval()
    with torch.no_grad():
        assert vit(torch.rand(2, channels, size, size)).shape == (2, 10)
    layout = token_layout(vit, torch.rand(1, channels, size, size))
    assert layout is not None and layout.grid == (grid, grid) and layout.prefix == 1
    assert layout.blocks == tuple(f"blocks.{i}" for i in range(4))
    assert [s.module for s in layout.attention] == [f"blocks.{i}.attn.weights" for i in range(4)]
    assert layout.cam_layer == "blocks.3.norm1" and layout.pooling == "token"


def test_a_side_the_patch_does_not_divide_is_one_line() -> None:
    with pytest.raises(ModelError, match="cannot build 'vit-tiny' for 3x30x30 inputs: .*not a multiple of the patch "
                                         "size 4") as error:
        build_model("vit-tiny", in_channels=3, num_classes=10, input_size=30)
    assert "\n" not in str(error.value)


def test_images_of_another_size_than_the_position_embeddings_are_one_line() -> None:
    vit = build_model("vit-tiny", in_channels=3, num_classes=10, input_size=32)
    with pytest.raises(ModelError, match=r"takes 32x32 images \(position embeddings for 8x8 patches of 4 px\), got "
                                         r"28x28") as error:
        vit(torch.rand(1, 3, 28, 28))
    assert "\n" not in str(error.value)


def test_a_cnn_is_no_transformer_and_costs_no_forward_pass() -> None:
    cnn = build_model("smallcnn")
    calls: list[int] = []
    cnn.register_forward_hook(lambda *_: calls.append(1))
    assert token_layout(cnn, torch.rand(1, 1, 28, 28)) is None and not is_transformer(cnn, torch.rand(1, 1, 28, 28))
    assert calls == []


def test_layout_probe_is_not_a_pass_of_the_model_and_leaves_it_as_it_was() -> None:
    vit = tiny_vit().train()
    calls: list[int] = []
    vit.register_forward_hook(lambda *_: calls.append(1))
    assert token_layout(vit, torch.rand(1, 3, 16, 16)) is not None
    assert calls == [] and vit.training and all(p.requires_grad for p in vit.parameters())


class MeanPooledViT(nn.Module):
    """vit-tiny's blocks without a class token, the head on the mean of the patch tokens."""

    def __init__(self) -> None:
        super().__init__()
        vit = tiny_vit()
        self.embed, self.blocks, self.head = vit.patch_embed, vit.blocks, nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(tokens.mean(1))


def test_a_mean_pooled_vit_has_no_prefix_and_its_cam_layer_is_the_last_block() -> None:
    layout = token_layout(MeanPooledViT(), torch.rand(1, 3, 16, 16))
    assert layout is not None and layout.prefix == 0 and layout.pooling == "mean" and layout.cam_layer == "blocks.1"


def test_fused_attention_has_no_readable_probabilities() -> None:
    layout = token_layout(SdpaViT(), torch.rand(1, 3, 16, 16))
    assert layout is not None and layout.attention == () and layout.blocks == ("blocks.0", "blocks.1")


def test_explicit_attention_switches_fused_flags_and_restores_them() -> None:
    vit = tiny_vit()
    vit.blocks[0].attn.fused_attn = True  # type: ignore[assignment]
    with explicit_attention(vit):
        assert vit.blocks[0].attn.fused_attn is False
    assert vit.blocks[0].attn.fused_attn is True


def test_patch_grid_drops_the_class_token_and_keeps_the_row_major_order() -> None:
    layout = token_layout(tiny_vit(), torch.rand(1, 3, 16, 16))
    assert layout is not None
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)
    grid = layout.patch_grid(tokens)
    assert grid.shape == (2, 3, 4, 4)
    assert torch.equal(grid[1, 2, 1, 3], tokens[1, 1 + 1 * 4 + 3, 2])


def test_the_one_pixel_evaluator_falls_back_to_full_passes_on_a_vit() -> None:
    """The ViT's forward checks its input size, which torch.fx cannot trace: no incremental evaluator, so the
    one-pixel attack runs full forward passes (its default when none is found)."""
    assert try_patch_forward(tiny_vit(), torch.rand(2, 3, 16, 16)) is None


def test_flip_crop_moves_pixels_of_the_image_only() -> None:
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    out = flip_crop(x, torch.tensor([True, False]), torch.tensor([[2, 2], [0, 4]]), pad=2)
    assert torch.equal(out[0], x[0].flip(-1))  # offset (pad, pad): the flipped image itself
    padded = nn.functional.pad(x[1:], (2, 2, 2, 2), mode="reflect")[0]
    assert torch.equal(out[1], padded[:, 0:6, 4:10])
    flips, offsets = draw_flip_crop(1000, 4, torch.Generator().manual_seed(0))
    assert 400 < int(flips.sum()) < 600 and int(offsets.min()) == 0 and int(offsets.max()) == 8


def test_flip_crop_of_a_shard_is_its_part_of_the_global_batch() -> None:
    class Shard:
        positions, size = torch.tensor([1, 3]), 4

    x = torch.rand(4, 3, 8, 8)
    whole = FlipCrop(seed=3)(x)
    assert torch.equal(FlipCrop(seed=3)(x[[1, 3]], Shard()), whole[[1, 3]])


def test_augmentation_is_checked_and_keeps_old_cache_keys() -> None:
    from advspatial.training import TrainConfig

    assert TrainConfig().key() == TrainConfig(augment="none").key() != TrainConfig(augment="flip-crop").key()
    # the default model's key: the one it had before the augment field existed, changed only by the training procedure
    # (one thread, deterministic kernels), so a model trained the old, thread-dependent way is not reused
    assert TrainConfig().stem() == "fashion-mnist-smallcnn-natural-s0-1c4ad7e590b6"
    with pytest.raises(ConfigError, match="valid: flip-crop, none"):
        TrainConfig(augment="mixup").validate()
    with pytest.raises(ConfigError, match="foreground masks"):
        TrainConfig(augment="flip-crop", mode="localized").validate()
