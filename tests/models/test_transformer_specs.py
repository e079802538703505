"""Transformer checkpoints on disk as model specs: ``hf:PATH`` (a Hugging Face folder made here from a small
config, nothing downloaded) and ``timm:NAME --weights FILE`` (timm cannot be imported beside this machine's CPU
torch: its wheel needs torchvision, whose wheel is a CUDA build, so a stand-in module plays timm), and the bad
input of either: one line, exit 2."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli
from PIL import Image
from torch import nn
from vit_helpers import hf_vit_folder

from advspatial.errors import ModelError
from advspatial.models import Normalized, load_model, parse_model_spec
from advspatial.models.spec import model_input
from advspatial.models.tokens import token_layout
from advspatial.models.vit import Block

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    return hf_vit_folder(tmp_path_factory.mktemp("hf") / "vit")


def image_folder(root: Path, size: int, classes: int = 2, per_class: int = 2) -> Path:
    """A class-folder dataset of random RGB PNGs."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


def test_hf_folder_gives_the_models_logits_on_its_processors_normalization(hf_folder: Path) -> None:
    model = load_model(f"hf:{hf_folder}")
    assert isinstance(model, Normalized) and not model.training
    assert model.mean.flatten().tolist() == pytest.approx([0.5, 0.4, 0.3])
    reference = transformers.ViTForImageClassification.from_pretrained(hf_folder, local_files_only=True).eval()
    x = torch.rand(3, 3, 16, 16)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(pixel_values=(x - mean) / std).logits, atol=1e-5, rtol=1e-5)
    assert model_input(f"hf:{hf_folder}") == (16, 1.0)


def test_hf_layout_reads_its_eager_attention(hf_folder: Path) -> None:
    layout = token_layout(load_model(f"hf:{hf_folder}"), torch.rand(1, 3, 16, 16))
    assert layout is not None and layout.grid == (4, 4) and layout.prefix == 1 and len(layout.blocks) == 2
    assert all(s.index == 1 for s in layout.attention) and layout.cam_layer.endswith("1.layernorm_before")


@pytest.mark.parametrize(("remove", "says"), [("config.json", "no config.json"),
                                              ("model.safetensors", "no weights"),
                                              ("preprocessor_config.json", "no preprocessor_config.json")])
def test_an_incomplete_folder_is_one_line(tmp_path: Path, remove: str, says: str) -> None:
    folder = hf_vit_folder(tmp_path / "vit")
    (folder / remove).unlink()
    with pytest.raises(ModelError, match=says) as error:
        parse_model_spec(f"hf:{folder}")
    assert "\n" not in str(error.value)


def test_hf_spec_errors(tmp_path: Path, hf_folder: Path) -> None:
    with pytest.raises(ModelError, match="names no folder"):
        parse_model_spec("hf:")
    with pytest.raises(ModelError, match="no such folder"):
        parse_model_spec(f"hf:{tmp_path / 'missing'}")
    weights = tmp_path / "w.pt"
    torch.save({}, weights)
    with pytest.raises(ModelError, match="holds its own weights"):
        parse_model_spec(f"hf:{hf_folder}", weights=str(weights))


def test_cli_refuses_images_the_position_embeddings_do_not_fit(tmp_path: Path, hf_folder: Path, capsys) -> None:
    data = image_folder(tmp_path / "images", 32)
    code, _, err = run_cli(capsys, "evaluate", "--dataset", f"imagefolder:{data}", "--model", f"hf:{hf_folder}",
                           "--image-size", "32", "--class-map", str(class_map(tmp_path)), "--no-progress")
    assert code == 2 and err.count("\n") == 1 and "32" in err and "16" in err, err
    code, out, err = run_cli(capsys, "evaluate", "--dataset", f"imagefolder:{data}", "--model", f"hf:{hf_folder}",
                             "--class-map", str(class_map(tmp_path)), "--no-progress")
    assert code == 0 and "accuracy" in out, err  # at the processor's own size (16) the same images are taken


def class_map(tmp_path: Path) -> Path:
    """The two class folders as the first two of the model's 10 outputs."""
    path = tmp_path / "classes.tsv"
    path.write_text("".join(f"{i}\tclass{i}\n" if i < 2 else f"{i}\tother{i}\n" for i in range(10)))
    return path


@pytest.mark.parametrize("returns", ["{'logits': logits}", "(logits, logits)"])
def test_cli_refuses_a_model_returning_a_dict_or_a_tuple(tmp_path: Path, capsys, returns: str) -> None:
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(3 * 8 * 8, 2)\n"
        "    def forward(self, x):\n"
        "        logits = self.fc(x.flatten(1))\n"
        f"        return {returns}\n"
        "def make():\n"
        "    return Net()\n")
    data = image_folder(tmp_path / "images", 8)
    code, _, err = run_cli(capsys, "evaluate", "--dataset", f"imagefolder:{data}", "--model",
                           f"{tmp_path / 'net.py'}:make", "--image-size", "8", "--no-progress")
    kind = "dict" if returns.startswith("{") else "tuple"
    assert code == 2 and err.count("\n") == 1 and f"returned {kind}" in err and "tensor of logits" in err, err


# -- timm, played by a stand-in module -----------------------------------------------------

class TimmAttention(nn.Module):
    """timm's attention in outline: fused by default, its probabilities through ``attn_drop`` on the explicit path."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.fused_attn = heads, True
        self.qkv, self.attn_drop, self.proj = nn.Linear(dim, 3 * dim), nn.Dropout(0.0), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.fused_attn:
            out = nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            out = self.attn_drop((q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(-1)) @ v
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class TimmViT(nn.Module):
    """A timm-shaped ViT: ``patch_embed.proj``, class token, ``blocks`` (Sequential), ``pretrained_cfg``."""

    pretrained_cfg = {"mean": (0.1, 0.2, 0.3), "std": (0.5, 0.5, 0.5)}

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, 16, 4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 16))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, 16) * 0.02)
        blocks = [Block(16, 2, 2.0) for _ in range(2)]
        for block in blocks:
            block.attn = TimmAttention(16, 2)  # type: ignore[assignment]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(len(x), -1, -1), t], 1) + self.pos_embed
        return self.head(self.blocks(t)[:, 0])


@pytest.fixture
def fake_timm(monkeypatch):  # type: ignore[no-untyped-def]
    calls: list[dict] = []

    def create_model(name: str, pretrained: bool = False) -> nn.Module:
        calls.append({"name": name, "pretrained": pretrained})
        torch.manual_seed(1)
        return TimmViT()

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    return calls


def test_timm_needs_local_weights() -> None:
    with pytest.raises(ModelError, match="needs --weights FILE.*never downloads"):
        parse_model_spec("timm:vit_tiny_patch16_224")


def test_timm_loads_local_weights_with_its_own_normalization(fake_timm: list, tmp_path: Path) -> None:
    torch.manual_seed(5)
    trained = TimmViT()
    torch.save(trained.state_dict(), tmp_path / "vit.pt")
    model = load_model("timm:vit_small", weights=str(tmp_path / "vit.pt"))
    assert fake_timm == [{"name": "vit_small", "pretrained": False}]
    assert isinstance(model, Normalized) and model.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert torch.equal(model.model.pos_embed, trained.pos_embed)
    layout = token_layout(model, torch.rand(1, 3, 16, 16))
    assert layout is not None and [s.module for s in layout.attention] == [
        "model.blocks.0.attn.attn_drop", "model.blocks.1.attn.attn_drop"]
    assert all(m.fused_attn for m in model.modules() if isinstance(m, TimmAttention))


def test_timm_weights_for_another_resolution_are_one_line(fake_timm: list, tmp_path: Path) -> None:
    state = TimmViT().state_dict()
    state["pos_embed"] = torch.zeros(1, 65, 16)  # 8x8 patches + class token: trained at 32 px
    torch.save(state, tmp_path / "vit32.pt")
    with pytest.raises(ModelError, match=r"pos_embed \[1, 65, 16\] vs \[1, 17, 16\]") as error:
        load_model("timm:vit_small", weights=str(tmp_path / "vit32.pt"))
    assert "\n" not in str(error.value) and "position embeddings" in str(error.value)


def test_a_study_labels_an_hf_folder_by_its_name() -> None:
    from advspatial.studies.models import default_label

    assert default_label("hf:checkpoints/vit-cifar10") == "vit-cifar10"
