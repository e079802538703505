"""Pre-processing defences and the two gradients an adaptive attacker takes through them.

Every defence of this package is ``model(transform(x))`` for some input
transform (the neutralization fill, a blur, noise, quantization). An adaptive
attack needs a gradient through ``transform``; two are standard (Athalye et al.
2018, "Obfuscated gradients"):

- ``local``: autograd through the transform as implemented, with anything it
  computes from x but does not differentiate (the neutralized region) held
  constant. For the zero fill this gradient is exactly 0 on the neutralized
  pixels, and for a rounding step it is 0 everywhere: it can *mask* gradients.
- ``identity`` (BPDA with an identity backward pass): the forward pass is the
  transform, the backward pass treats it as the identity, i.e. the gradient is
  the model's gradient at ``transform(x)``. Written as the straight-through
  estimator ``x + (transform(x) - x).detach()``.

A reviewer expects both (and a gradient-free attack) before trusting a number.

:class:`TransformDefence` wraps the trivial baselines a defence must beat at a
matched clean cost: a global Gaussian blur, additive Gaussian noise (a
randomized defence: attack it with EOT) and JPEG-style quantization (8x8 block
DCT, coefficients rounded to the JPEG luminance table scaled by a quality).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError, check_range, unknown_name
from ..regions.fills import gaussian_blur
from ..runtime import per_sample_noise, sample_ids_or_range, stream_seed
from ..stacked_runs import forward_stacked

BACKWARDS = ("local", "identity")
TRANSFORMS = ("blur", "noise", "jpeg")

#: the JPEG luminance quantization table (ITU-T T.81, Annex K, Table K.1), row-major 8x8
JPEG_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)

_NOISE_STREAM = 0x401


def check_backward(backward: str) -> str:
    if backward not in BACKWARDS:
        raise unknown_name("backward", backward, BACKWARDS)
    return backward


def through(x: torch.Tensor, transformed: torch.Tensor, backward: str) -> torch.Tensor:
    """``transformed`` in the forward pass; its gradient w.r.t. x is ``local`` or the ``identity``."""
    if check_backward(backward) == "identity":
        return x + (transformed - x).detach()
    return transformed


def through_rows(x: torch.Tensor, transformed: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """:func:`through` with each row's own gradient: ``identity`` where the (N,) bool ``identity`` holds, else
    ``local``; row for row the values and gradient of :func:`through` with that row's backward, so that a
    deterministic defence is attacked through both gradients in one call (:class:`~.stacked_apgd.StackedAPGD`).

    >>> x, t = torch.zeros(2, 1, 1, 1, requires_grad=True), torch.zeros(2, 1, 1, 1)
    >>> (through_rows(x, t * x, torch.tensor([True, False])).sum().backward(), x.grad.flatten().tolist())[1]
    [1.0, 0.0]
    """
    cond = identity.to(x.device).view(-1, *([1] * (x.ndim - 1)))
    return torch.where(cond, x + (transformed - x).detach(), transformed)


@functools.lru_cache(maxsize=8)
def _dct_matrix(size: int, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (size x size): coefficients of a block B are D B D^T."""
    k = torch.arange(size, dtype=torch.float64)[:, None]
    i = torch.arange(size, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * size)) * math.sqrt(2 / size)
    d[0] /= math.sqrt(2)
    return d.to(dtype)


def jpeg_table(quality: int) -> torch.Tensor:
    """The 8x8 luminance table scaled by ``quality`` in [1,100] (the IJG rule), in units of 1/255."""
    check_range("quality", quality, 1, 100)
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    table = ((torch.tensor(JPEG_LUMINANCE, dtype=torch.float64) * scale + 50) // 100).clamp(1, 255)
    return (table / 255).view(8, 8)


def jpeg_quantize(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Per channel: 8x8 block DCT, each coefficient rounded to a multiple of its table step, inverse DCT.

    Images whose sides are not multiples of 8 are padded by edge replication
    and cropped back. The rounding has a zero gradient almost everywhere, so
    the ``local`` gradient through it is 0: a textbook gradient-masking defence.
    """
    n, c, h, w = x.shape
    ph, pw = (-h) % 8, (-w) % 8
    padded = nn.functional.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    hh, ww = padded.shape[2:]
    blocks = padded.reshape(n, c, hh // 8, 8, ww // 8, 8).transpose(3, 4)
    d = _dct_matrix(8, x.dtype).to(x.device)
    q = jpeg_table(quality).to(x.device, x.dtype)
    coeffs = d @ (blocks - 0.5) @ d.T
    restored = d.T @ (torch.round(coeffs / q) * q) @ d + 0.5
    out = restored.transpose(3, 4).reshape(n, c, hh, ww)[:, :, :h, :w]
    return out.clamp(0.0, 1.0)


class TransformDefence(nn.Module):
    """``model(transform(x))`` for a trivial input transform: the baselines of the trade-off plot.

    Args:
        model: the classifier on [0,1] images.
        transform: ``blur`` (Gaussian, ``strength`` = sigma in pixels),
            ``noise`` (additive Gaussian, ``strength`` = its sd, clipped to
            [0,1]; a new draw at every forward pass, so EOT applies) or
            ``jpeg`` (``strength`` = JPEG quality in [1,100]; lower is coarser).
        backward: ``local`` or ``identity`` (see the module docstring).
        seed: seed of the noise stream (forward pass number c uses ``(seed, c)``).
    """

    def __init__(self, model: nn.Module, transform: str, strength: float, *, backward: str = "local",
                 seed: int = 0) -> None:
        super().__init__()
        if transform not in TRANSFORMS:
            raise unknown_name("transform", transform, TRANSFORMS)
        if transform == "jpeg":
            check_range("strength (JPEG quality)", strength, 1, 100)
        else:
            check_range("strength", strength, 0.0, low_inclusive=False)
        self.model = model
        self.training = model.training  # start in the wrapped model's mode (see models.Normalized)
        self.transform, self.strength = transform, float(strength)
        self.backward = check_backward(backward)
        self.seed = int(seed)
        self.calls = 0

    #: an attack passes its rows' sample ids to every call (:func:`~advspatial.attacks.base.call_keyed`)
    keys_draws_by_id = True

    @property
    def randomized(self) -> bool:
        """True when two forward passes on the same input may differ (attack it with EOT)."""
        return self.transform == "noise"

    def transformed(
        self, x: torch.Tensor, draw: int | None = None, sample_ids: torch.Tensor | Sequence[int] | None = None,
    ) -> torch.Tensor:
        """``transform(x)``. Noise: draw number ``draw`` keyed by ``(seed, draw, sample_ids[i])`` (ids as a tensor
        or as ints on the host); without ``draw`` the next forward-pass number is used (and advanced)."""
        if self.transform == "blur":
            return gaussian_blur(x, self.strength)
        if self.transform == "jpeg":
            return jpeg_quantize(x, int(round(self.strength)))
        if draw is None:
            draw, self.calls = self.calls, self.calls + 1
        ids = range(x.shape[0]) if sample_ids is None else sample_ids
        noise = per_sample_noise(x.shape, stream_seed(self.seed, _NOISE_STREAM, draw), ids, "normal", x.device, x.dtype)
        return (x + self.strength * noise).clamp(0.0, 1.0)

    @torch.no_grad()
    def predict_draws(self, x: torch.Tensor, draws: int, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(N, draws) predicted classes (one column when the transform is deterministic)."""
        if not self.randomized:
            return self.model(self.transformed(x)).argmax(1)[:, None]
        ids = sample_ids_or_range(x.shape[0], sample_ids).tolist()  # read once for every draw
        # the draws do not depend on each other: one round (one call each on a CPU, stacked on a device)
        logits = forward_stacked(self.model, (self.transformed(x, d + 1_000_000, ids) for d in range(int(draws))))
        return torch.stack([out.argmax(1) for out in logits], dim=1)

    def forward(self, x: torch.Tensor, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``model(transform(x))``; the noise of image i keyed by ``sample_ids[i]`` (on the host) where an attack
        passes them (:func:`~advspatial.attacks.base.call_keyed`), else by its row."""
        return self.model(through(x, self.transformed(x, sample_ids=sample_ids), self.backward))

    def forward_draws(self, x: torch.Tensor, draws: int, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(draws, N, K) logits of the next ``draws`` forward passes in one batched call (EOT): the same
        noise draws as ``draws`` calls of :meth:`forward` in a row (image i's keyed by ``sample_ids[i]``, default
        its row), the model run once on the stack."""
        check_range("draws", draws, 1)
        k = int(draws)
        if self.randomized:
            first, self.calls = self.calls, self.calls + k
            transformed = torch.cat([self.transformed(x, first + d, sample_ids) for d in range(k)])
        else:
            transformed = self.transformed(x).repeat(k, 1, 1, 1)
        stacked = x.repeat(k, 1, 1, 1)
        return self.model(through(stacked, transformed, self.backward)).view(k, x.shape[0], -1)

    def forward_backwards(self, x: torch.Tensor, identity: torch.Tensor,
                          sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`forward` of a deterministic transform with each row's own gradient (:func:`through_rows`); the ids
        change nothing here (no draw)."""
        if self.randomized:
            raise ConfigError("a randomized defence takes its gradients one at a time (EOT)")
        return self.model(through_rows(x, self.transformed(x), identity))

    def with_backward(self, backward: str) -> TransformDefence:
        """The same defence with another attacker's gradient."""
        return TransformDefence(self.model, self.transform, self.strength, backward=backward, seed=self.seed)

    def extra_repr(self) -> str:
        return f"transform={self.transform!r}, strength={self.strength}, backward={self.backward!r}"


def check_strengths(transform: str, strengths: list[float]) -> None:
    """Validate a list of baseline strengths for ``transform``."""
    if not strengths:
        raise ConfigError(f"baseline {transform!r} needs at least one strength")
    for s in strengths:
        TransformDefence(nn.Identity(), transform, s)
