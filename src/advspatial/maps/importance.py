"""Importance maps: where the classifier looks (the Region of Importance side).

Every method returns an (N,H,W) float map >= 0 at input resolution, for one
class per image (``target``: ``"pred"`` (default), ``"true"`` with labels ``y``,
an int, or an (N,) tensor).

Channel reduction (documented choice):

- CAM family (``gradcam``, ``gradcam++``, ``cam``, ``hirescam``): the
  class-weighted sum of the feature maps is rectified (ReLU, positive evidence
  only), then upsampled bilinearly (``align_corners=False``) to the input size.
- gradient family (``saliency``, ``inputxgrad``, ``ig``, ``smoothgrad``): sum
  over channels of the absolute per-channel attribution.
- ``occlusion``: ReLU of the channel mean of the score drop (a pixel is
  important when hiding it *lowers* the class score).

The model runs in eval mode with parameter gradients off; its modes and flags
are restored afterwards, and every hook is removed, also when an exception is
raised. Methods that Captum implements use Captum; Grad-CAM++ and CAM are
written here on top of a forward hook that captures the feature maps, and
SmoothGrad here with per-image noise keyed by the image's sample id (Captum's
NoiseTunnel draws one stream for the whole batch).

Grad-CAM layer: the ``layer`` argument (dotted name or module), else the
model's ``cam_layer`` attribute (found also inside wrappers such as
``Normalized``), else the last module whose output is a 4-D map with H*W > 1.

Default explainer by head type (METHODS.md section 1, :func:`default_importance_method`;
the pseudo-method ``auto`` resolves through it): ``gradcam`` when the final
linear layer receives the global average of the Grad-CAM layer's feature map
(GAP + linear head: Grad-CAM is exact there, CAM up to a positive scale), else
``hirescam`` (flatten/FC head: Grad-CAM averages the position-specific weights
away; HiResCAM, ReLU(sum_k dz_c/dA_k * A_k), keeps them).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Occlusion,
    Saliency,
)
from torch import nn

from ..errors import ModelError, check_range
from ..models.hooks import forward_hooks, frozen_eval, resolve_layer
from ..models.tokens import token_layout
from ..registry import Registry
from ..runtime import batch_slices, model_device, per_sample_noise, sample_ids_or_range, scaled_batch, stream_seed
from ._common import (
    Target,
    check_classes,
    check_images,
    check_options,
    reduce_channels_abs,
    resolve_target,
    upsample,
)
from .heads import default_importance_method, head_inputs, receives_global_average

Method = Callable[..., torch.Tensor]
#: every importance method by name (``advspatial list maps`` iterates it); a method documents itself
IMPORTANCE_METHODS: Registry[Method] = Registry("importance method")
list_importance_methods = IMPORTANCE_METHODS.names
"""The names :func:`importance_map` accepts, sorted."""
describe_importance_methods = IMPORTANCE_METHODS.descriptions
"""Each name with the first line of its function's docstring (``advspatial list maps``)."""


def register_importance_method(name: str) -> Callable[[Method], Method]:
    """Decorator adding an importance method: one function, the first line of its docstring its description.

    The function is ``fn(model, x, classes, **options) -> (N,H,W) >= 0`` for one
    batch of images on the model's device and their (N,) int64 classes; its
    keyword options (with defaults) become :func:`importance_map`'s. A function
    that draws noise takes ``sample_ids`` (the (N,) global ids of the images, on
    the CPU) and keys its noise by them (:func:`advspatial.runtime.sample_generator`),
    so that a batch equals its images alone. Run the model under
    :func:`~advspatial.models.hooks.frozen_eval`. A taken name is an error.
    """
    return IMPORTANCE_METHODS.decorator(name)


def importance_map(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    target: Target = "pred",
    y: torch.Tensor | None = None,
    batch_size: int = 64,
    sample_ids: torch.Tensor | None = None,
    **kw: Any,
) -> torch.Tensor:
    """(N,H,W) importance map >= 0 of method ``name`` for the ``target`` class of each image.

    Images are processed ``batch_size`` at a time; extra keyword arguments go to
    the method (see each ``*_map`` function). ``sample_ids`` (N,) are the images'
    global ids (default: their positions 0..N-1); a method that draws noise
    (``smoothgrad``) keys each image's noise by its id, so an image's map is the
    same in any batch. Unknown names or parameters raise
    :class:`~advspatial.errors.ConfigError` listing the valid ones.

    Examples:
        >>> from advspatial.maps import importance_map
        >>> importance_map("gradcam", model, images).shape   # any name of advspatial list maps
        torch.Size([12, 28, 28])
    """
    fn = IMPORTANCE_METHODS.get(name)
    check_options(IMPORTANCE_METHODS.kind, name, fn, kw, ("model", "x", "classes", "sample_ids"))
    check_images(x)
    ids = sample_ids_or_range(x.shape[0], sample_ids)
    x = x.detach().to(model_device(model))
    if name == "auto" and x.shape[0]:
        # resolved once for the whole call (the head is a property of the model, not of the batch)
        fn = IMPORTANCE_METHODS.get(default_importance_method(model, x[:batch_size], layer=kw.get("layer"))[0])
    keyed = "sample_ids" in inspect.signature(fn).parameters
    classes = resolve_target(model, x, target, y)
    parts = [fn(model, x[s], classes[s], **({"sample_ids": ids[s]} if keyed else {}), **kw)
             for s in batch_slices(x.shape[0], batch_size)]
    if not parts:
        return x.new_zeros((0, *x.shape[2:]))
    return torch.cat(parts)


# -- CAM family ------------------------------------------------------------------

class FeatureCapture:
    """Forward hook storing the output of one layer (the last call wins): the CAM layer's feature maps."""

    def __init__(self) -> None:
        self.output: torch.Tensor | None = None

    def factory(self, _name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                raise ModelError("the chosen layer does not output a single tensor; pick another layer")
            self.output = output

        return hook

    def feature_map(self, name: str) -> torch.Tensor:
        """The captured (N,K,h,w) output of layer ``name``; a one-line error when it is not such a map."""
        feats = self.output
        if feats is None or feats.ndim != 4:
            shape = None if feats is None else tuple(feats.shape)
            raise ModelError(f"layer {name!r} must output a (N,K,h,w) feature map, got {shape}")
        return feats


def _features_and_scores(
    model: nn.Module, x: torch.Tensor, layer: nn.Module, name: str, classes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature maps A (N,K,h,w) of ``layer`` and the class scores z_c (N,), in one graph."""
    capture = FeatureCapture()
    with forward_hooks({name: layer}, capture.factory), torch.enable_grad():
        logits = model(x.detach().clone().requires_grad_(True))
    check_classes(classes, logits)
    return capture.feature_map(name), logits.gather(1, classes[:, None]).squeeze(1)


@register_importance_method("gradcam")
def gradcam_map(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str | nn.Module | None = None
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.): ReLU(sum_k mean_ij(dz_c/dA_k) A_k), bilinearly upsampled.

    Uses Captum's ``LayerGradCam`` with ``relu_attributions=True`` on the layer
    chosen by :func:`~advspatial.models.hooks.resolve_layer`. On a vision transformer without ``layer``: Grad-CAM
    on its patch tokens (``token-gradcam``, :mod:`advspatial.maps.transformer_cam`).
    """
    if layer is None and token_layout(model, x) is not None:
        return IMPORTANCE_METHODS.get("token-gradcam")(model, x, classes)
    with frozen_eval(model):
        name, module = resolve_layer(model, x, layer)
        with torch.no_grad():
            check_classes(classes, model(x[:1]))
        with torch.enable_grad():
            attr = LayerGradCam(model, module).attribute(
                x.detach().clone().requires_grad_(True), target=classes, relu_attributions=True
            )
        if attr.ndim != 4:
            raise ModelError(f"layer {name!r} must output a (N,K,h,w) feature map for Grad-CAM")
        up = LayerAttribution.interpolate(attr.detach(), tuple(x.shape[2:]), "bilinear")
    return up[:, 0].clamp_min(0.0)


@register_importance_method("gradcam++")
def gradcam_pp_map(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str | nn.Module | None = None
) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018), closed form for an exponential score.

    With g = dz_c/dA: alpha_kij = g^2 / (2 g^2 + sum_ab A_kab g^3) (0 where the
    denominator is 0), w_k = sum_ij alpha_kij ReLU(g_kij), map = ReLU(sum_k w_k A_k).
    """
    with frozen_eval(model):
        name, module = resolve_layer(model, x, layer)
        feats, scores = _features_and_scores(model, x, module, name, classes)
        (grads,) = torch.autograd.grad(scores.sum(), feats)
    feats, g = feats.detach(), grads.detach()
    g2, g3 = g.pow(2), g.pow(3)
    denom = 2 * g2 + feats.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g))
    weights = (alpha * g.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
    cam = (weights * feats).sum(dim=1, keepdim=True).clamp_min(0)
    return upsample(cam, tuple(x.shape[2:]))


@register_importance_method("cam")
def cam_map(
    model: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor,
    layer: str | nn.Module | None = None,
    linear: str | nn.Module | None = None,
) -> torch.Tensor:
    """Class activation map (Zhou et al. 2016) for GAP + linear heads: ReLU(sum_k W_ck A_k).

    ``layer`` gives the features before global average pooling (default as for
    Grad-CAM), ``linear`` the final ``nn.Linear`` (default: the last one run).
    The head is verified: the linear layer's input must equal the spatial mean
    of the features, otherwise :class:`~advspatial.errors.ModelError`.
    """
    name, head_name, head, logits, feats, head_in = head_inputs(model, x, layer, linear)
    check_classes(classes, logits)
    if feats is None:
        raise ModelError(f"CAM: layer {name!r} must output a (N,K,h,w) feature map")
    if not receives_global_average(feats, head_in):
        raise ModelError(
            f"CAM needs {head_name!r} to receive the global average of {name!r}; it does not. "
            "Use gradcam or hirescam, or pass layer=/linear= naming a GAP + linear head"
        )
    weights = head.weight[classes]  # (N, K)
    cam = torch.einsum("nk,nkhw->nhw", weights, feats).unsqueeze(1).clamp_min(0)
    return upsample(cam.detach(), tuple(x.shape[2:]))


@register_importance_method("hirescam")
def hirescam_map(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str | nn.Module | None = None
) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): ReLU(sum_k dz_c/dA_k * A_k), bilinearly upsampled.

    The element-wise product keeps each position's own gradient (Grad-CAM
    averages it over positions first), so the map is faithful on flatten/FC
    heads; on a GAP + linear head it equals CAM / (h*w). Layer chosen as for Grad-CAM; on a vision transformer
    without ``layer``: HiResCAM on its patch tokens (``token-hirescam``).
    """
    if layer is None and token_layout(model, x) is not None:
        return IMPORTANCE_METHODS.get("token-hirescam")(model, x, classes)
    with frozen_eval(model):
        name, module = resolve_layer(model, x, layer)
        feats, scores = _features_and_scores(model, x, module, name, classes)
        (grads,) = torch.autograd.grad(scores.sum(), feats)
    cam = (grads.detach() * feats.detach()).sum(dim=1, keepdim=True).clamp_min(0)
    return upsample(cam, tuple(x.shape[2:]))


@register_importance_method("auto")
def auto_map(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str | nn.Module | None = None
) -> torch.Tensor:
    """Default explainer by structure: gradcam on a GAP + linear head, else hirescam; on a ViT, chefer.

    Resolved by :func:`default_importance_method` (once per :func:`importance_map` call).
    """
    method, _ = default_importance_method(model, x, layer=layer)
    return IMPORTANCE_METHODS.get(method)(model, x, classes, **({} if layer is None else {"layer": layer}))


# -- gradient family (Captum) ------------------------------------------------------

def _run(model: nn.Module, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run an attribution with the model frozen in eval mode and gradients enabled."""
    with frozen_eval(model), torch.enable_grad():
        return fn().detach()


def _checked(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        check_classes(classes, model(x[:1]))
    return x.detach().clone().requires_grad_(True)


@register_importance_method("saliency")
def saliency_map(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Saliency (Simonyan et al.): sum over channels of |dz_c/dx|."""
    inp = _checked(model, x, classes)
    attr = _run(model, lambda: Saliency(model).attribute(inp, target=classes, abs=True))
    return reduce_channels_abs(attr)


@register_importance_method("inputxgrad")
def input_x_gradient_map(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Input x gradient: sum over channels of |x * dz_c/dx|."""
    inp = _checked(model, x, classes)
    return reduce_channels_abs(_run(model, lambda: InputXGradient(model).attribute(inp, target=classes)))


@register_importance_method("ig")
def integrated_gradients_map(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, steps: int = 32, baseline: float = 0.0,
    internal_batch_size: int = 256,
) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al.) from a constant ``baseline`` image (0 = black).

    Captum's Gauss-Legendre rule with ``steps`` points; sum over channels of |IG|.
    """
    check_range("steps", steps, 1)
    inp = _checked(model, x, classes)
    ig = IntegratedGradients(model)
    attr = _run(model, lambda: ig.attribute(
        inp, baselines=float(baseline), target=classes, n_steps=int(steps),
        internal_batch_size=max(int(internal_batch_size), inp.shape[0]),
    ))
    return reduce_channels_abs(attr)


#: stream of SmoothGrad's noise (independent of the attacks' and controls' draws under the same seed)
SMOOTHGRAD_STREAM = 0x5A00
#: images x noisy copies per forward pass of SmoothGrad at 28x28; scaled by the pixel count for larger images
SMOOTHGRAD_BATCH = 1024


def smoothgrad_noise(shape: tuple[int, ...], samples: int, seed: int, sample_ids: torch.Tensor,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, samples, C, H, W) standard normal noise; image i's from the generator of ``sample_ids[i]``.

    Drawn per image by :func:`advspatial.runtime.per_sample_noise` in the stream
    ``stream_seed(seed, SMOOTHGRAD_STREAM)``: a function of (seed, the image's id) only.
    """
    n = shape[0]
    return per_sample_noise((n, int(samples), *shape[1:]), stream_seed(seed, SMOOTHGRAD_STREAM), sample_ids,
                            "normal", device, dtype)


@register_importance_method("smoothgrad")
def smoothgrad_map(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, samples: int = 16, sigma: float = 0.15,
    seed: int = 0, sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al.): |mean over noisy copies of dz_c/dx|, summed over channels.

    Noise N(0, sigma^2) on [0,1] images (``sigma`` is a fraction of the range);
    the signed gradients of ``samples`` noisy copies are averaged, then the
    absolute value is taken. Image i's noise comes from a generator seeded by
    ``(seed, sample_ids[i])`` (:func:`smoothgrad_noise`; default ids: positions),
    so its map does not depend on the batch it is in, and global random state is
    untouched. With the same noise this is Captum's ``NoiseTunnel(Saliency)``
    ``smoothgrad`` (checked in the tests).
    """
    check_range("samples", samples, 1)
    check_range("sigma", sigma, 0.0)
    inp = _checked(model, x, classes)
    n = inp.shape[0]
    noise = smoothgrad_noise(tuple(inp.shape), samples, seed, sample_ids_or_range(n, sample_ids),
                             inp.device, inp.dtype)
    per_pass = max(1, scaled_batch(SMOOTHGRAD_BATCH, inp.shape[2], inp.shape[3]) // max(n, 1))
    total = torch.zeros_like(inp)
    with frozen_eval(model), torch.enable_grad():
        for start in range(0, int(samples), per_pass):
            chunk = noise[:, start:start + per_pass]  # (N, k, C, H, W)
            k = chunk.shape[1]
            noisy = (inp.detach()[:, None] + float(sigma) * chunk).reshape(n * k, *inp.shape[1:])
            noisy.requires_grad_(True)
            scores = model(noisy).gather(1, classes.repeat_interleave(k)[:, None]).sum()
            (grad,) = torch.autograd.grad(scores, noisy)
            total += grad.view(n, k, *inp.shape[1:]).sum(1)
    return reduce_channels_abs(total / int(samples))


#: images x occluded windows per forward pass of the occlusion map at 28x28 (Captum's
#: ``perturbations_per_eval``); scaled by the pixel count for larger images (32 at 224x224)
OCCLUSION_BATCH = 2048


def occlusion_geometry(side: int, window: int | None, stride: int | None) -> tuple[int, int]:
    """(window, stride): given values, else side // 7 (at least 4) and half of it.

    28 and 32 pixels give the classic 4 and 2; 224 gives 32 and 16, so an
    ImageNet image costs 13 x 13 windows instead of 111 x 111.
    """
    window = window if window is not None else max(4, side // 7)
    return window, stride if stride is not None else max(1, window // 2)


@register_importance_method("occlusion")
def occlusion_map(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor, window: int | None = None, stride: int | None = None,
    baseline: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus): score drop when a ``window`` square (all channels) is set to ``baseline``
    (a value, or images of ``x``'s shape whose pixels replace the window's: a blurred copy occludes by blurring).

    Each pixel gets the mean drop over the windows covering it (Captum); the
    map is ReLU of the channel mean, so only pixels whose hiding lowers z_c count.
    ``window``/``stride`` default to :func:`occlusion_geometry` of the shorter side.
    """
    window, stride = occlusion_geometry(min(x.shape[2:]), window, stride)
    check_range("window", window, 1, min(x.shape[2:]))
    check_range("stride", stride, 1)
    inp = _checked(model, x, classes)
    c = inp.shape[1]
    per_eval = max(1, scaled_batch(OCCLUSION_BATCH, inp.shape[2], inp.shape[3]) // max(inp.shape[0], 1))
    attr = _run(model, lambda: Occlusion(model).attribute(
        inp, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
        baselines=baseline if isinstance(baseline, torch.Tensor) else float(baseline), target=classes,
        perturbations_per_eval=per_eval,
    ))
    return attr.mean(dim=1).clamp_min(0.0)
