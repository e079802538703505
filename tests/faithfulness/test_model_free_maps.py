"""On real models: no model-free map passes the faithfulness gate (it cannot change when the weights are destroyed),
and the positive control, faithful by construction, beats location and scatter on its measure.

Fashion-MNIST (a small CNN trained in seconds on 4,000 images) and the pretrained CIFAR-10 ResNet-20 on its test
JPEGs (skipped with a reason where ``../shared/data`` is absent). Deletion measures only (zero and blur fills), on
the first correctly classified images: the restricted attack is tested on synthetic models in test_gate.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from advspatial.faithfulness.controls import control_regions, occlusion_control
from advspatial.faithfulness.deletion import deletion_columns, gate_regions
from advspatial.faithfulness.gate import summarize_gate
from advspatial.faithfulness.randomization import model_randomization_check
from advspatial.regions.references import REFERENCE_MAPS, LayoutSums, reference_maps

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CIFAR_JPEG = SHARED / "cifar10-test-jpeg"
RESNET20 = SHARED / "cifar10-resnet" / "resnet20-12fca82f.th"
FILLS = ("zero", "blur")   # zero is the cheap fill; blur creates no edges, so scatter is judged too


def resnet20() -> nn.Module:
    from advspatial.models import Normalized
    from advspatial.models.cifar_resnet import cifar_resnet

    net = cifar_resnet(20)
    state = torch.load(RESNET20, map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    return Normalized(net, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).eval()


def cifar_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from advspatial.data import load_dataset
    from advspatial.data.subset import select

    data = select(load_dataset(f"imagefolder:{CIFAR_JPEG}", "test"), n, "stratified", 0)
    return data.images(slice(0, len(data))), data.labels


def correct_images(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return x[keep][:n], y[keep][:n], torch.arange(len(x))[keep][:n]


def model_free_maps(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every reference map of the gate built without the model: the layouts are those of the image's intensity."""
    intensity = reference_maps(x, names=("intensity",))["intensity"]
    sums = LayoutSums()
    sums.add(intensity, y)
    class_layout, dataset_layout = sums.leave_one_out(intensity, y)
    return reference_maps(x, {"class-layout": class_layout, "dataset-layout": dataset_layout}, REFERENCE_MAPS)


def check_every_model_free_map_fails(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> None:
    for name, fixed in model_free_maps(x, y).items():
        fixed = fixed.nan_to_num(0.0) + 1e-6 * torch.rand(fixed.shape, generator=torch.Generator().manual_seed(1))
        regions = gate_regions(fixed, 0.2, 0, ids, blur_control=False)
        cols = deletion_columns(model, x, y, regions, fills=FILLS, sample_ids=ids)
        rows = model_randomization_check(model, x[:8], lambda m, z, f=fixed: f[:8], seed=0, max_steps=2)
        gate = summarize_gate(cols, y, randomization=rows)
        assert gate.status == "failed", (name, gate.reason)
        assert "fails randomization: cascade |Spearman| after every layer 1.00" in gate.reason, name


def check_the_control_beats_location_and_scatter(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                                                 ids: torch.Tensor) -> None:
    occlusion = occlusion_control(model, x, y, sample_ids=ids)
    regions = control_regions({"deletion": occlusion}, 0.2, 0, ids)["deletion"]
    cols = deletion_columns(model, x, y, regions, fills=FILLS, sample_ids=ids)
    gate = summarize_gate(cols, y, randomization=[{"spearman": 0.0}])
    assert set(gate.control) == {"location", "scatter"}
    for name, row in gate.control.items():
        assert set(row.decisions) == {f"deletion:{f}" for f in FILLS if name == "location" or f == "blur"}
        # faithful by construction to the blur fill it occludes with
        assert row.decisions["deletion:blur"].outcome == "beats", (name, row.decisions["deletion:blur"].estimate)


def test_on_fashion_mnist_no_model_free_map_passes_and_the_control_does(trained_tiny_cnn, fmnist_test_subset):
    x, y = fmnist_test_subset
    x, y, ids = correct_images(trained_tiny_cnn, x, y, 60)
    check_every_model_free_map_fails(trained_tiny_cnn, x, y, ids)
    check_the_control_beats_location_and_scatter(trained_tiny_cnn, x, y, ids)


@pytest.mark.skipif(not (CIFAR_JPEG.is_dir() and RESNET20.is_file()),
                    reason=f"shared CIFAR-10 JPEGs / ResNet-20 weights not found under {SHARED}")
def test_on_the_cifar10_resnet20_no_model_free_map_passes_and_the_control_does():
    model = resnet20()
    x, y = cifar_images(50)
    x, y, ids = correct_images(model, x, y, 32)
    check_every_model_free_map_fails(model, x, y, ids)
    check_the_control_beats_location_and_scatter(model, x, y, ids)
