"""The transformer explainers against references: Captum's Grad-CAM and gradient x activation on the token grid,
hand-computed rollout and relevance on models whose attention is set by hand; and the choice of ``auto``.

pytorch-grad-cam, the usual ViT reference, imports torchvision (a CUDA build here, which breaks beside CPU torch),
so Captum's layer methods read the patch tokens through a module that shows them as a (N, D, h, w) grid.
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam, LayerGradientXActivation
from helpers import GapNet
from torch import nn
from vit_helpers import SdpaViT, hf_vit_folder, tiny_vit

from advspatial.errors import ModelError
from advspatial.maps import importance_map
from advspatial.maps.heads import default_importance_method
from advspatial.maps.importance.chefer import relevance_rule
from advspatial.maps.importance.rollout import attention_rollout
from advspatial.models.tokens import token_layout
from advspatial.models.vit import Attention, VisionTransformer

TRANSFORMER_METHODS = ("token-gradcam", "token-hirescam", "rollout", "chefer")


class GridTap(nn.Module):
    """Identity on the tokens that passes the patch tokens through ``grid``, an identity module whose output is
    them on their (N, D, h, w) grid: where Captum's layer methods read them."""

    def __init__(self, prefix: int, side: int) -> None:
        super().__init__()
        self.prefix, self.side, self.grid = prefix, side, nn.Identity()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, _, d = tokens.shape
        grid = self.grid(tokens[:, self.prefix:].reshape(n, self.side, self.side, d).permute(0, 3, 1, 2))
        return torch.cat([tokens[:, :self.prefix], grid.flatten(2).transpose(1, 2)], dim=1)


def tapped(vit: VisionTransformer) -> tuple[VisionTransformer, nn.Module]:
    """The same ViT (shared weights) with its token CAM layer followed by a :class:`GridTap`."""
    last = vit.blocks[-1]
    last.norm1 = nn.Sequential(last.norm1, GridTap(1, vit.input_size // vit.patch))  # type: ignore[assignment]
    return vit, last.norm1[1].grid  # type: ignore[index]


@pytest.mark.parametrize(("method", "captum"), [("token-gradcam", "gradcam"), ("token-hirescam", "gradxact")])
def test_token_cams_equal_captums_layer_methods_on_the_token_grid(method: str, captum: str) -> None:
    x, classes = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 4, 9])
    ours = importance_map(method, tiny_vit(), x, target=classes)
    model, grid = tapped(tiny_vit())
    if captum == "gradcam":
        attr = LayerGradCam(model, grid).attribute(x, target=classes, relu_attributions=True)
    else:  # HiResCAM = the channel sum of gradient x activation, rectified
        attr = LayerGradientXActivation(model, grid).attribute(x, target=classes).sum(1, keepdim=True).clamp_min(0)
    reference = LayerAttribution.interpolate(attr.detach(), (16, 16), "bilinear")[:, 0].clamp_min(0)
    assert float(reference.max()) > 0
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-4)


def test_gradcam_and_hirescam_on_a_vit_read_its_tokens() -> None:
    x = torch.rand(2, 3, 16, 16)
    for cnn_name, token_name in (("gradcam", "token-gradcam"), ("hirescam", "token-hirescam")):
        assert torch.equal(importance_map(cnn_name, tiny_vit(), x), importance_map(token_name, tiny_vit(), x))


def test_the_last_blocks_output_would_give_an_all_zero_map() -> None:
    """Why the token CAM layer is the last block's first LayerNorm on a class-token head."""
    x = torch.rand(2, 3, 16, 16)
    assert float(importance_map("token-gradcam", tiny_vit(), x, layer="blocks.1").max()) == 0
    assert float(importance_map("token-gradcam", tiny_vit(), x).max()) > 0


def with_attention(vit: VisionTransformer, attention: list[torch.Tensor]) -> VisionTransformer:
    """``vit`` whose blocks use the given (T, T) attention probabilities (hooks replace the softmax's output)."""
    for block, probs in zip(vit.blocks, attention, strict=True):
        block.attn.weights.register_forward_hook(
            lambda _m, _i, out, p=probs: p.expand(out.shape[0], out.shape[1], -1, -1).clone())
    return vit


def test_rollout_equals_the_hand_computed_product() -> None:
    """Two blocks, a class token and 2x2 patches (T = 5). Block 1 attends uniformly, block 2's class token reads
    patch 1 only. With the residual, Ã1 = 0.5/5 + 0.5 I and Ã2's class row is (0.5, 0.5, 0, 0, 0), so the class
    row of Ã2 Ã1 is 0.5 (0.6, 0.1, 0.1, 0.1, 0.1) + 0.5 (0.1, 0.6, 0.1, 0.1, 0.1) = (0.35, 0.35, 0.1, 0.1, 0.1)."""
    uniform = torch.full((5, 5), 0.2)
    reads_first = torch.eye(5)
    reads_first[0] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])
    vit = with_attention(tiny_vit(size=8, heads=1), [uniform, reads_first])
    maps = importance_map("rollout", vit, torch.rand(2, 3, 8, 8))
    expected = torch.tensor([[0.35, 0.1], [0.1, 0.1]])
    reference = nn.functional.interpolate(expected[None, None], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(maps, reference[0].expand(2, 8, 8), atol=1e-6, rtol=1e-6)
    fused = attention_rollout([uniform[None, None], reads_first[None, None]])
    torch.testing.assert_close(fused[0, 0], torch.tensor([0.35, 0.35, 0.1, 0.1, 0.1]))


def test_rollout_is_the_same_for_every_class() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(importance_map("rollout", tiny_vit(), x, target=0), importance_map("rollout", tiny_vit(), x,
                                                                                          target=7))


class OneBlockViT(nn.Module):
    """Patch embedding, class token, one attention block with its residual, a linear head on the class token:
    no LayerNorm and no MLP, so the class score is linear in the attention probabilities."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.pos = nn.Parameter(torch.randn(1, 5, 8))
        self.blocks = nn.ModuleList([Residual(Attention(8, heads))])
        self.head = nn.Linear(8, 4)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(len(x), -1, -1), t], 1) + self.pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks[0](self.tokens(x))[:, 0])


class Residual(nn.Module):
    def __init__(self, attn: Attention) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t + self.attn(t)


@pytest.mark.parametrize("heads", [1, 2])
def test_relevance_equals_the_hand_derived_gradient_times_attention(heads: int) -> None:
    """z_c = w_c . (x_0 + W_o concat_h(sum_j A^h_0j v^h_j) + b_o): dz_c/dA^h_0j = (w_c W_o)^h . v^h_j and every
    other row's gradient is 0. From R = I one block gives R = I + mean_h ReLU(G ⊙ A), so the class token's row over
    the patches is mean_h ReLU(A^h_0j (w_c W_o)^h . v^h_j), computed here from the weights without autograd."""
    model = OneBlockViT(heads).eval()
    x, classes = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([1, 3])
    attn = model.blocks[0].attn
    with torch.no_grad():
        t = model.tokens(x)
        q, k, v = attn.qkv(t).reshape(2, 5, 3, heads, 8 // heads).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-2, -1) * (8 // heads) ** -0.5).softmax(-1)  # (N, heads, T, T)
        wc = model.head.weight[classes] @ attn.proj.weight  # (N, 8): w_c W_o
        g = torch.einsum("nhd,nhjd->nhj", wc.reshape(2, heads, 8 // heads), v)  # dz_c / dA_0j per head
        expected = (a[:, :, 0] * g).clamp_min(0).mean(1)[:, 1:].reshape(2, 1, 2, 2)
    maps = importance_map("chefer", model, x, target=classes)
    reference = nn.functional.interpolate(expected, size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    assert float(reference.max()) > 0
    torch.testing.assert_close(maps, reference, atol=1e-6, rtol=1e-5)


def test_relevance_rule_accumulates_block_by_block() -> None:
    """R <- R + Ā R from R = I: two blocks with Ā1 = E01 (token 0 reads token 1) and Ā2 = E12 give
    R = (I + E12)(I + E01) = I + E01 + E12 (E12 E01 = 0): token 0's row is (1, 1, 0)."""
    a1 = torch.zeros(1, 1, 3, 3)
    a1[0, 0, 0, 1] = 1.0
    a2 = torch.zeros(1, 1, 3, 3)
    a2[0, 0, 1, 2] = 1.0
    relevance = relevance_rule([a1, a2], [torch.ones_like(a1), torch.ones_like(a2)])
    torch.testing.assert_close(relevance[0], torch.eye(3) + a1[0, 0] + a2[0, 0])


def test_auto_picks_relevance_on_a_vit_and_says_why() -> None:
    method, why = default_importance_method(tiny_vit(), torch.rand(1, 3, 16, 16))
    assert method == "chefer" and "vision transformer" in why and "4x4 patch tokens" in why


def test_auto_picks_token_hirescam_when_attention_is_fused() -> None:
    method, why = default_importance_method(SdpaViT(), torch.rand(1, 3, 16, 16))
    assert method == "token-hirescam" and "cannot be read" in why
    with pytest.raises(ModelError, match="does not hand them out"):
        importance_map("rollout", SdpaViT(), torch.rand(1, 3, 16, 16))
    assert importance_map("auto", SdpaViT(), torch.rand(2, 3, 16, 16)).shape == (2, 16, 16)


@pytest.mark.parametrize("method", TRANSFORMER_METHODS)
def test_transformer_explainers_refuse_a_cnn_in_one_line(method: str) -> None:
    with pytest.raises(ModelError, match="explains vision transformers") as error:
        importance_map(method, GapNet(), torch.rand(1, 3, 14, 14))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("method", ["gradcam++", "cam"])
def test_cnn_only_cams_refuse_a_vit_in_one_line(method: str) -> None:
    with pytest.raises(ModelError, match="vision transformer.*token-gradcam") as error:
        importance_map(method, tiny_vit(), torch.rand(1, 3, 16, 16))
    assert "\n" not in str(error.value)


def test_hugging_face_vit_maps(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from advspatial.models import load_model

    model = load_model(f"hf:{hf_vit_folder(tmp_path / 'vit')}")
    x = torch.rand(2, 3, 16, 16)
    assert default_importance_method(model, x)[0] == "chefer"
    assert token_layout(model, x) is not None
    for method in TRANSFORMER_METHODS:
        maps = importance_map(method, model, x)
        assert maps.shape == (2, 16, 16) and float(maps.min()) >= 0 and float(maps.max()) > 0, method
