"""Importance maps: cross-checks against Captum, hand-computed Grad-CAM/CAM, hooks and state hygiene."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from helpers import TinyGAP
from torch import nn
from vit_helpers import tiny_vit

from advspatial.errors import ConfigError, ModelError, ShapeError
from advspatial.maps.heads import default_importance_method, has_gap_linear_head
from advspatial.maps import describe_importance_methods, importance_map, list_importance_methods
from advspatial.models.hooks import resolve_layer
from advspatial.maps.importance.cam import cam_map
from advspatial.models import Normalized, build_model

ALL = ["auto", "cam", "chefer", "gradcam", "gradcam++", "hirescam", "ig", "inputxgrad", "occlusion", "rollout",
       "saliency", "smoothgrad", "token-gradcam", "token-hirescam"]


def _no_hooks(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks and not m._backward_pre_hooks
        for m in model.modules()
    )


@pytest.fixture
def gap_model() -> TinyGAP:
    torch.manual_seed(3)
    return TinyGAP().eval()


def test_registry_lists_all_methods_and_rejects_unknown(tiny_cnn) -> None:
    assert list_importance_methods() == sorted(ALL)
    assert set(describe_importance_methods()) == set(ALL)
    assert describe_importance_methods()["hirescam"].startswith("HiResCAM")
    with pytest.raises(ConfigError, match="valid: .*gradcam"):
        importance_map("gradcamm", tiny_cnn(), torch.rand(1, 1, 28, 28))
    with pytest.raises(ConfigError, match="no parameter"):
        importance_map("saliency", tiny_cnn(), torch.rand(1, 1, 28, 28), steps=3)


@pytest.mark.parametrize("name", [n for n in ALL if n != "cam"])
def test_every_method_shape_nonnegative_and_hygiene(tiny_cnn, name: str) -> None:
    transformer = name in ("token-gradcam", "token-hirescam", "rollout", "chefer")  # they explain ViTs only
    model = (tiny_vit(channels=1, size=28, patch=7) if transformer else tiny_cnn()).train()  # back in training mode
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    kw = {"ig": {"steps": 4}, "occlusion": {"window": 7, "stride": 7}, "smoothgrad": {"samples": 4}}.get(name, {})
    out = importance_map(name, model, x, **kw)
    assert out.shape == (3, 28, 28) and out.dtype == torch.float32
    assert bool((out >= 0).all()) and bool(torch.isfinite(out).all()) and float(out.max()) > 0
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert _no_hooks(model)
    assert all(p.grad is None for p in model.parameters())


def test_hooks_released_when_forward_raises(tiny_cnn) -> None:
    model = tiny_cnn()

    def boom(*_: object) -> None:
        raise RuntimeError("boom")

    handle = model.fc.register_forward_pre_hook(boom)  # raises after the CAM layer has run
    try:
        for name in ("gradcam", "gradcam++", "hirescam", "saliency"):
            with pytest.raises(RuntimeError, match="boom"):
                importance_map(name, model, torch.rand(2, 1, 28, 28), target=0)
            assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    finally:
        handle.remove()
    assert _no_hooks(model)


def test_gradcam_equals_captum_layergradcam(trained_tiny_cnn, fmnist_test_subset) -> None:
    x, y = fmnist_test_subset
    x, y = x[:8], y[:8]
    for layer in ("features.4", "features.1", None):
        ours = importance_map("gradcam", trained_tiny_cnn, x, target="true", y=y, layer=layer)
        name, module = resolve_layer(trained_tiny_cnn, x, layer)
        ref = LayerGradCam(trained_tiny_cnn, module).attribute(x.clone().requires_grad_(True), target=y,
                                                                relu_attributions=True)
        ref = LayerAttribution.interpolate(ref.detach(), (28, 28), "bilinear")[:, 0]
        assert float(ours.abs().max()) > 0
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_gradcam_by_hand_after_activation(trained_tiny_cnn, fmnist_test_subset) -> None:
    """Grad-CAM of the rectified features.4 output written out with autograd and F.interpolate."""
    model = trained_tiny_cnn
    x = fmnist_test_subset[0][:6]
    feats = model.features[:5](x).detach().requires_grad_(True)
    logits = model.fc(torch.flatten(model.features[5](feats), 1))
    pred = logits.argmax(1)
    (g,) = torch.autograd.grad(logits.gather(1, pred[:, None]).sum(), feats)
    cam = (g.mean(dim=(2, 3), keepdim=True) * feats).sum(1, keepdim=True).clamp_min(0)
    ref = nn.functional.interpolate(cam.detach(), size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(importance_map("gradcam", model, x, layer="features.4"), ref, atol=1e-6, rtol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("pytorch_grad_cam") is None, reason="pytorch-grad-cam not installed")
def test_gradcam_equals_pytorch_grad_cam(trained_tiny_cnn, fmnist_test_subset) -> None:  # pragma: no cover
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except Exception as exc:  # it imports torchvision, which fails next to CPU torch here
        pytest.skip(f"pytorch-grad-cam not importable: {exc}")
    x = fmnist_test_subset[0][:4]
    model = trained_tiny_cnn
    pred = model(x).argmax(1)
    with GradCAM(model=model, target_layers=[model.features[4]]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in pred])
    ours = importance_map("gradcam", model, x, layer="features.4")
    ours = ours / ours.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)  # it min-max normalizes
    torch.testing.assert_close(ours, torch.as_tensor(ref, dtype=ours.dtype), atol=1e-5, rtol=1e-5)


def test_layer_resolution(tiny_cnn) -> None:
    model = tiny_cnn()
    x = torch.rand(1, 1, 28, 28)
    assert resolve_layer(model, x)[0] == "features.3"  # the declared cam_layer
    assert resolve_layer(Normalized(model, [0.5], [0.25]), x)[0] == "model.features.3"  # found inside a wrapper
    assert resolve_layer(model, x, model.features[4])[0] == "features.4"
    with pytest.raises(ConfigError, match="valid: .*features"):
        resolve_layer(model, x, "nope")

    class NoDecl(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = model.features  # last 4-D output with H*W > 1: the pooled 7x7 map
            self.fc = model.fc

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(self.body(z), 1))

    assert resolve_layer(NoDecl(), x)[0] == "body"


def test_targets(tiny_cnn) -> None:
    model = tiny_cnn()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    pred = model(x).argmax(1)
    by_pred = importance_map("saliency", model, x)
    torch.testing.assert_close(by_pred, importance_map("saliency", model, x, target=pred))
    y = (pred + 1) % 10
    torch.testing.assert_close(importance_map("saliency", model, x, target="true", y=y),
                               importance_map("saliency", model, x, target=y))
    three = importance_map("saliency", model, x, target=3)
    torch.testing.assert_close(three, importance_map("saliency", model, x, target=torch.full((4,), 3)))
    with pytest.raises(ConfigError, match="needs the labels"):
        importance_map("saliency", model, x, target="true")
    with pytest.raises(ConfigError, match=r"\[0, 9\]"):
        importance_map("gradcam", model, x, target=10)
    with pytest.raises(ShapeError):
        importance_map("saliency", model, x, target=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ShapeError):
        importance_map("saliency", model, x[0])


def test_batching_does_not_change_maps(tiny_cnn) -> None:
    model = tiny_cnn()
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    for name in ("gradcam", "gradcam++", "hirescam", "ig"):
        whole = importance_map(name, model, x, batch_size=64)
        torch.testing.assert_close(importance_map(name, model, x, batch_size=2), whole, atol=1e-6, rtol=1e-5)


def test_cam_by_hand_on_tiny_gap_model(gap_model: TinyGAP) -> None:
    x = torch.rand(3, 1, 10, 10, generator=torch.Generator().manual_seed(4))
    feats = gap_model.features(x)
    classes = torch.tensor([0, 2, 1])
    w = gap_model.fc.weight.detach()
    by_hand = torch.stack([(w[c][:, None, None] * feats[i]).sum(0) for i, c in enumerate(classes.tolist())])
    ours = cam_map(gap_model, x, classes)  # layer and head both found automatically
    torch.testing.assert_close(ours, by_hand.clamp_min(0).detach(), atol=1e-6, rtol=1e-5)


def test_cam_is_gradcam_up_to_positive_scale(gap_model: TinyGAP) -> None:
    """On GAP+linear nets, Grad-CAM weights are W_ck / (h w): CAM = (h w) * Grad-CAM."""
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    cam = importance_map("cam", gap_model, x)
    grad_cam = importance_map("gradcam", gap_model, x)
    assert float(cam.max()) > 0
    torch.testing.assert_close(cam, grad_cam * 144, atol=1e-5, rtol=1e-4)


def test_cam_on_builtin_gapnet_and_rejects_non_gap_head(tiny_cnn) -> None:
    torch.manual_seed(0)
    gapnet = build_model("gapnet").eval()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    cam = importance_map("cam", gapnet, x)
    grad_cam = importance_map("gradcam", gapnet, x)
    ratio = cam.flatten(1).sum(1) / grad_cam.flatten(1).sum(1)
    torch.testing.assert_close(ratio, torch.full_like(ratio, 14 * 14), rtol=1e-3, atol=0)
    with pytest.raises(ModelError, match="global average"):
        importance_map("cam", tiny_cnn(), x)
    with pytest.raises(ModelError, match="not nn.Linear"):
        importance_map("cam", gapnet, x, linear="pool")


def test_occlusion_finds_the_only_informative_pixel() -> None:
    """A 'model' whose class-0 score is the value of one pixel: occlusion marks exactly around it."""

    class OnePixel(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            v = z[:, 0, 5, 7]
            return torch.stack([v, -v], dim=1)

    x = torch.full((1, 1, 16, 16), 0.5)
    occ = importance_map("occlusion", OnePixel(), x, target=0, window=2, stride=1)
    assert occ.shape == (1, 16, 16)
    assert float(occ[0, 5, 7]) > 0 and float(occ.sum() - occ[0, 4:6, 6:8].sum() - occ[0, 5:7, 7:9].sum()) <= 1e-6
    sal = importance_map("saliency", OnePixel(), x, target=0)
    assert float(sal[0, 5, 7]) == 1.0 and float(sal.sum()) == 1.0


def test_smoothgrad_is_seeded_and_leaves_global_rng_alone(tiny_cnn) -> None:
    model = tiny_cnn()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    state = torch.get_rng_state()
    a = importance_map("smoothgrad", model, x, seed=1, samples=4)
    assert torch.equal(state, torch.get_rng_state())
    torch.testing.assert_close(a, importance_map("smoothgrad", model, x, seed=1, samples=4))
    assert not torch.allclose(a, importance_map("smoothgrad", model, x, seed=2, samples=4))
    with pytest.raises(ConfigError):
        importance_map("smoothgrad", model, x, sigma=-1.0)


def test_smoothgrad_noise_is_keyed_by_sample_id(tiny_cnn) -> None:
    """Image i's map depends on (seed, its sample id) only: any batch, any order, any batch_size."""
    model = tiny_cnn()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    ids = torch.tensor([11, 4, 907])
    maps = importance_map("smoothgrad", model, x, samples=4, sample_ids=ids)
    alone = torch.cat([importance_map("smoothgrad", model, x[i:i + 1], samples=4, sample_ids=ids[i:i + 1])
                       for i in range(3)])
    torch.testing.assert_close(maps, alone, atol=1e-6, rtol=1e-5)
    reverse = importance_map("smoothgrad", model, x.flip(0), samples=4, sample_ids=ids.flip(0), batch_size=2)
    torch.testing.assert_close(reverse.flip(0), maps, atol=1e-6, rtol=1e-5)
    # default ids are the positions; other ids are other noise
    torch.testing.assert_close(importance_map("smoothgrad", model, x, samples=4),
                               importance_map("smoothgrad", model, x, samples=4, sample_ids=torch.arange(3)))
    assert not torch.allclose(maps, importance_map("smoothgrad", model, x, samples=4))
    with pytest.raises(ShapeError, match="sample_ids must have shape"):
        importance_map("smoothgrad", model, x, sample_ids=torch.arange(2))
    # methods without noise ignore the ids
    torch.testing.assert_close(importance_map("saliency", model, x, sample_ids=ids),
                               importance_map("saliency", model, x))


@pytest.mark.parametrize("samples", [1, 5])
def test_smoothgrad_equals_captum_noise_tunnel_fed_the_same_noise(tiny_cnn, monkeypatch, samples: int) -> None:
    """Captum's NoiseTunnel(Saliency) smoothgrad with our per-image noise in place of its draw: the same map."""
    from captum.attr import NoiseTunnel, Saliency

    from advspatial.maps.importance.smoothgrad import smoothgrad_noise

    model = tiny_cnn(in_channels=3, size=16)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    classes, ids, sigma = torch.tensor([0, 3, 5, 9]), torch.tensor([2, 8, 1, 40]), 0.2
    ours = importance_map("smoothgrad", model, x, target=classes, samples=samples, sigma=sigma, seed=5,
                          sample_ids=ids)
    import advspatial.maps.importance.smoothgrad as smoothgrad

    monkeypatch.setattr(smoothgrad, "SMOOTHGRAD_BATCH", 1)  # one noisy copy per forward pass: the same map
    torch.testing.assert_close(importance_map("smoothgrad", model, x, target=classes, samples=samples, sigma=sigma,
                                              seed=5, sample_ids=ids), ours, atol=1e-6, rtol=1e-5)
    noise = smoothgrad_noise(tuple(x.shape), samples, 5, ids)  # (N, S, C, H, W)
    # Captum adds torch.normal(0, stdev) to input.repeat_interleave(S): row i*S + s is image i's s-th copy
    monkeypatch.setattr(torch, "normal", lambda mean, std: sigma * noise.reshape(-1, *x.shape[1:]))
    attr = NoiseTunnel(Saliency(model)).attribute(x.clone().requires_grad_(True), nt_type="smoothgrad",
                                                  nt_samples=samples, stdevs=sigma, target=classes, abs=False)
    torch.testing.assert_close(ours, attr.detach().abs().sum(1), atol=1e-6, rtol=1e-5)


# -- HiResCAM and the default explainer by head type --------------------------------------------

class TinyFlat(nn.Module):
    """conv-ReLU (A: 5 x 6 x 6) -> flatten -> linear: the position-specific head Grad-CAM gets wrong."""

    cam_layer = "act"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(5 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.act(self.conv(x)), 1))


def test_hirescam_is_cam_over_hw_on_gap_heads(gap_model: TinyGAP) -> None:
    """GAP + linear: dz_c/dA_kij = W_ck / (h w), so HiResCAM = CAM / (h w) before and after upsampling."""
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(8))
    hires = importance_map("hirescam", gap_model, x, target=torch.tensor([0, 1, 2, 0]))
    cam = importance_map("cam", gap_model, x, target=torch.tensor([0, 1, 2, 0]))
    assert float(hires.max()) > 0
    torch.testing.assert_close(hires, cam / 144, atol=1e-5, rtol=1e-5)

    torch.manual_seed(0)
    gapnet = build_model("gapnet").eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    feats = gapnet.features(x).detach()  # (3, 128, 14, 14)
    pred = gapnet(x).argmax(1)
    cam_small = torch.einsum("nk,nkhw->nhw", gapnet.fc.weight.detach()[pred], feats).clamp_min(0)[:, None]
    ref = nn.functional.interpolate(cam_small / (14 * 14), size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    hires = importance_map("hirescam", gapnet, x)
    assert float(hires.max()) > 0
    torch.testing.assert_close(hires, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(hires, importance_map("cam", gapnet, x) / 196, atol=1e-5, rtol=1e-4)


def test_hirescam_by_hand_on_a_flatten_head() -> None:
    torch.manual_seed(4)
    model = TinyFlat().eval()
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(10))
    classes = torch.tensor([0, 3, 1])
    feats = model.act(model.conv(x)).detach().requires_grad_(True)
    scores = model.fc(torch.flatten(feats, 1)).gather(1, classes[:, None])
    (g,) = torch.autograd.grad(scores.sum(), feats)
    small = (g * feats).sum(1, keepdim=True).clamp_min(0).detach()
    # on a flatten + linear head the gradient is the class's weight at each position: a closed form too
    closed = (model.fc.weight.detach()[classes].view(3, 5, 6, 6) * feats.detach()).sum(1, keepdim=True).clamp_min(0)
    torch.testing.assert_close(small, closed, atol=1e-6, rtol=1e-5)
    ref = nn.functional.interpolate(small, size=(12, 12), mode="bilinear", align_corners=False)[:, 0]
    ours = importance_map("hirescam", model, x, target=classes)
    assert ours.shape == (3, 12, 12) and bool((ours >= 0).all()) and float(ours.max()) > 0
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    # Grad-CAM differs here: it averages the position-specific weights away
    assert not torch.allclose(importance_map("gradcam", model, x, target=classes), ours, atol=1e-4)


def test_hirescam_by_hand_on_tiny_cnn_any_layer(tiny_cnn) -> None:
    """TinyCNN (conv, ReLU, pool, flatten, fc): autograd by hand at the declared layer and at features.4."""
    model = tiny_cnn()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(11))
    pred = model(x).argmax(1)
    for layer, cut in ((None, 4), ("features.4", 5)):
        feats = model.features[:cut](x).detach().requires_grad_(True)
        logits = model.fc(torch.flatten(model.features[cut:](feats), 1))
        (g,) = torch.autograd.grad(logits.gather(1, pred[:, None]).sum(), feats)
        small = (g * feats).sum(1, keepdim=True).clamp_min(0).detach()
        ref = nn.functional.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
        ours = importance_map("hirescam", model, x, layer=layer)
        assert ours.shape == (4, 28, 28) and bool((ours >= 0).all())
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)


def test_default_method_by_head_type(tiny_cnn, gap_model: TinyGAP) -> None:
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(12))
    torch.manual_seed(0)
    gapnet, smallcnn = build_model("gapnet").train(), build_model("smallcnn").eval()
    name, reason = default_importance_method(gapnet, x)
    assert name == "gradcam" and "global average" in reason and "exact" in reason
    assert gapnet.training  # the probe ran in eval mode and restored the mode
    name, reason = default_importance_method(smallcnn, x)
    assert name == "hirescam" and "HiResCAM" in reason
    assert default_importance_method(Normalized(gapnet, [0.5], [0.25]), x)[0] == "gradcam"
    assert default_importance_method(tiny_cnn(), x)[0] == "hirescam"
    assert default_importance_method(gap_model, x[..., :12, :12])[0] == "gradcam"
    # a layer whose global average is not what the head receives
    assert default_importance_method(gapnet, x, layer="features.1")[0] == "hirescam"
    assert has_gap_linear_head(gapnet, x) and not has_gap_linear_head(smallcnn, x)

    class NoLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3, padding=1)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.conv(z).mean(dim=(2, 3))

    assert not has_gap_linear_head(NoLinear(), x)
    with pytest.raises(ConfigError, match="no layer"):
        default_importance_method(gapnet, x, layer="nope")


def test_auto_resolves_through_the_default(tiny_cnn) -> None:
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(13))
    torch.manual_seed(0)
    gapnet, smallcnn = build_model("gapnet").eval(), build_model("smallcnn").eval()
    torch.testing.assert_close(importance_map("auto", gapnet, x), importance_map("gradcam", gapnet, x))
    torch.testing.assert_close(importance_map("auto", smallcnn, x, target="true", y=torch.tensor([1, 2, 3])),
                               importance_map("hirescam", smallcnn, x, target=torch.tensor([1, 2, 3])))
    model = tiny_cnn()
    torch.testing.assert_close(importance_map("auto", model, x, layer="features.4", batch_size=2),
                               importance_map("hirescam", model, x, layer="features.4"))
    with pytest.raises(ConfigError, match="no parameter"):
        importance_map("auto", gapnet, x, steps=3)
    assert importance_map("auto", gapnet, x[:0]).shape == (0, 28, 28)


def test_occlusion_window_scales_with_the_image_side() -> None:
    """The classic 4/2 on MNIST/CIFAR sizes; an ImageNet image gets 13x13 windows, not 111x111."""
    from advspatial.maps.importance.occlusion import occlusion_geometry

    assert occlusion_geometry(28, None, None) == (4, 2)
    assert occlusion_geometry(32, None, None) == (4, 2)
    assert occlusion_geometry(224, None, None) == (32, 16)
    assert occlusion_geometry(224, 8, None) == (8, 4)
    assert occlusion_geometry(224, 8, 3) == (8, 3)
