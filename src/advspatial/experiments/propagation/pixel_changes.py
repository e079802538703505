"""The pixels of a few-pixel change (e.g. a k-pixel attack), read off the changed image: where it changed the image
and to what colour, as tensors (:func:`perturbed_pixels`), as text for per-image rows (:func:`format_pixels`), and
written back (:func:`apply_pixels`)."""

from __future__ import annotations

import torch

from ...errors import ShapeError


def perturbed_pixels(x: torch.Tensor, x_adv: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pixels a k-pixel attack changed: positions (N,k,2) (row, col), colours (N,k,C), count (N,).

    A position is changed where ``x_adv`` differs from ``x`` in any channel; its
    colour is ``x_adv`` there. Positions come in row-major order. An image with
    fewer than k changed positions (two pixels on one spot, or a colour equal to
    the original) repeats its first changed pixel to fill the k slots (writing
    the same colour twice changes nothing); an image with none gets (0, 0) and
    its own colour there, and ``count`` 0. More than k changes raise ShapeError.
    """
    if x.ndim != 4 or x_adv.shape != x.shape:
        raise ShapeError(f"x and x_adv must be (N,C,H,W) of one shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    n, c, _, w = x.shape
    changed = (x_adv != x).any(dim=1).flatten(1)  # (N, H*W)
    count = changed.sum(dim=1)
    if n and int(count.max()) > k:
        raise ShapeError(f"x_adv changes {int(count.max())} pixels of an image, more than k={k}")
    order = torch.argsort((~changed).to(torch.uint8), dim=1, stable=True)[:, :k]  # changed positions first
    slot = torch.arange(k, device=x.device).expand(n, k)
    flat = order.gather(1, torch.where(slot < count[:, None], slot, torch.zeros_like(slot)))
    pixels = torch.stack((flat // w, flat % w), dim=-1)
    colours = x_adv.flatten(2).gather(2, flat[:, None, :].expand(n, c, k)).transpose(1, 2)
    return pixels, colours, count


def format_pixels(pixels: torch.Tensor, colours: torch.Tensor) -> tuple[list[str], list[str]]:
    """Per-image text of positions ("row:col row:col") and colours ("v" or "r/g/b", 4 decimals)."""
    pos = [" ".join(f"{r}:{c}" for r, c in image) for image in pixels.tolist()]
    col = [" ".join("/".join(f"{v:.4f}" for v in colour) for colour in image) for image in colours.tolist()]
    return pos, col


def apply_pixels(x: torch.Tensor, pixels: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """``x`` with ``colours`` (N,k,C) written at ``pixels`` (N,k,2): the inverse of :func:`perturbed_pixels`."""
    out = x.clone()
    n, k = pixels.shape[:2]
    rows = torch.arange(n, device=x.device).repeat_interleave(k)
    out[rows, :, pixels[..., 0].reshape(-1), pixels[..., 1].reshape(-1)] = colours.reshape(-1, x.shape[1]).to(x)
    return out

