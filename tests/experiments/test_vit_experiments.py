"""Every registered experiment on a vision transformer: it runs to the end, or refuses in one line before any
stage is computed; and a study of vit-tiny beside a Hugging Face ViT.

The same contract runs as tests/experiments/test_contract.py (each experiment's registry-line settings, one
process, synthetic quadrant images), with a small ViT trained on them for a few seconds in place of the CNN: the
Hugging Face ViT (a folder written by save_pretrained from a small config, loaded through ``hf:PATH``) for the
experiments that attack and explain (analyze, maps, spatial), advspatial's own ViT for the others. The study loads
both by their specs (``vit-tiny --weights FILE``, ``hf:PATH``). The modules' tests share their fixtures on one
worker (xdist group).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import run_contract, synthetic_images
from torch import nn
from vit_helpers import tiny_vit

import advspatial
from advspatial.errors import AdvspatialError
from advspatial.experiments import experiments

#: experiments that refuse a vision transformer, with a word their one-line reason must contain
REFUSED = {"pse": "unit-layer"}
#: experiments run on the Hugging Face ViT (the others on advspatial's own)
ON_HUGGING_FACE = ("analyze", "maps", "spatial")
pytestmark = pytest.mark.xdist_group("vit-experiments")


@pytest.fixture(scope="module")
def vit_setting() -> dict[str, Any]:
    """A 2-block ViT (4x4 patches of 7 px) learnt on the synthetic quadrant images."""
    train = synthetic_images(400, seed=1)
    model = learnt(tiny_vit(channels=1, classes=4, size=28, patch=7, dim=24), train, lambda m, x: m(x), steps=150)
    test = synthetic_images(40, seed=2)
    with torch.no_grad():
        accuracy = float((model(test[0]).argmax(1) == test[1]).float().mean())
    assert accuracy > 0.9, f"the synthetic task is learnt (accuracy {accuracy:.2f})"
    return {"model": model, "data": test, "train_data": train}


@pytest.mark.parametrize("name", sorted(experiments()))
def test_experiment_on_a_vit(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    vit_setting = request.getfixturevalue("hf_setting" if name in ON_HUGGING_FACE else "vit_setting")
    out = tmp_path / name
    if name in REFUSED:
        with pytest.raises(AdvspatialError) as refused:
            run_contract(name, vit_setting, out)
        message = str(refused.value)
        assert "\n" not in message and REFUSED[name] in message and "transformer" in message, message
        assert not (out / "stages").exists() or not any((out / "stages").rglob("*.pt")), "no stage before refusing"
        return
    run_contract(name, vit_setting, out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "report.html").is_file() and metrics["model_passes"]["forward"] > 0
    roi = json.dumps(metrics)
    if name in ("maps", "spatial", "perceptual"):
        assert "chefer" in roi, f"{name}: the RoI explainer of a ViT is the gradient-weighted relevance"


# -- a Hugging Face ViT folder, loaded by its spec -------------------------------------------------

@pytest.fixture(scope="module")
def hf_setting(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A Hugging Face ViT (4x4 patches of 7 px, 2 blocks) learnt on the quadrant images, saved with
    save_pretrained and loaded back through ``hf:PATH``; vit-tiny's weights learnt on them beside it."""
    transformers = pytest.importorskip("transformers")
    from advspatial.models import build_model, load_model

    train = synthetic_images(400, seed=1)
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=24,
                                    num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, num_labels=4)
    hf = learnt(transformers.ViTForImageClassification(config), train, lambda m, x: m(pixel_values=x).logits)
    folder = tmp_path_factory.mktemp("hf") / "vit"
    hf.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        '{"do_normalize": false, "do_rescale": true, "rescale_factor": 0.00392156862745098, '
        '"size": {"height": 28, "width": 28}, "image_processor_type": "ViTImageProcessor"}')
    tiny = learnt(build_model("vit-tiny", in_channels=1, num_classes=4, input_size=28), train, lambda m, x: m(x),
                  steps=40)
    torch.save(tiny.state_dict(), folder.parent / "vit-tiny.pt")
    return {"model": load_model(f"hf:{folder}"), "data": synthetic_images(40, seed=2), "train_data": train,
            "spec": f"hf:{folder}", "vit_tiny_weights": str(folder.parent / "vit-tiny.pt")}


def learnt(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], logits: Any, steps: int = 100) -> Any:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        index = torch.randint(0, len(train[1]), (32,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(logits(model, train[0][index]), train[1][index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_a_study_of_vit_tiny_and_a_hugging_face_vit(hf_setting: dict[str, Any], tmp_path: Path) -> None:
    models = [{"model": "vit-tiny", "weights": hf_setting["vit_tiny_weights"], "label": "vit-tiny"},
              {"model": hf_setting["spec"], "label": "hf-vit"}]
    result = advspatial.study(models, data=hf_setting["data"], out=tmp_path / "study", quick=True, n=8,
                              attacks=["fgsm"], panel=["gradcam"], gate_n=8, randomization_images=2, batch_size=8,
                              progress=False)
    for label in ("vit-tiny", "hf-vit"):
        metrics = json.loads((tmp_path / "study" / "models" / label / "metrics.json").read_text())
        assert metrics["roi"]["method"] == "chefer", label
    assert (tmp_path / "study" / "report.html").is_file() and result.findings is not None
