"""``synthetic-shapes``: generated shapes on textured backgrounds, with exact masks.

Each image shows one shape (the class: circle, square, triangle, cross, ring)
in a flat colour on a textured background (smooth random noise or sine
stripes). Shapes are drawn by analytic inside-tests evaluated at the pixel
centres of a coordinate grid, and the image is painted from that same test,
so the foreground mask is exact (no anti-aliasing). Besides the foreground
``masks`` the dataset carries ``concepts`` for network dissection:

- ``shape:<name>``: the object's pixels in images of that shape (else empty);
- ``background``: every pixel outside the object;
- ``texture:noise`` / ``texture:stripes``: the background pixels of images with that texture;
- ``colour:<name>`` (colour images only): the object's pixels in images of that colour.

The shape concepts partition the foreground, the texture concepts partition
the background, and the colour concepts partition the foreground.

Contrast is guaranteed by construction: every background channel value lies
in [0, BACKGROUND_MAX] and every object pixel has a channel of at least
OBJECT_MIN, so ``pixels.amax(channel) > (BACKGROUND_MAX + OBJECT_MIN) / 2``
recovers the mask exactly.

Generation is vectorized over images (a loop over the five shape types only)
and deterministic: the same ``seed``, ``split``, ``n``, ``size`` and
``channels`` give the same images; train and test use different streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, check_range
from .base import ImageDataset
from .registry import SPLITS, register_dataset

SHAPES = ("circle", "square", "triangle", "cross", "ring")
TEXTURES = ("noise", "stripes")
#: object colours (RGB); each has a channel >= OBJECT_MIN
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.85, 0.15),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.9, 0.85, 0.1),
    "magenta": (0.85, 0.1, 0.85),
    "cyan": (0.1, 0.85, 0.9),
    "white": (0.95, 0.95, 0.95),
}
BACKGROUND_MAX = 0.4
OBJECT_MIN = 0.7
#: outer radius of a shape as a fraction of the image side
RADIUS_RANGE = (0.22, 0.36)
DEFAULT_N = {"train": 2000, "test": 500}
NOISE_GRID = 5  # smooth noise = bilinear upsampling of a NOISE_GRID x NOISE_GRID random grid
STRIPE_PERIOD = (0.12, 0.3)  # stripe period as a fraction of the image side


@dataclass(frozen=True)
class ShapeScenes:
    """Generated images with their ground truth (NumPy arrays, one row per image).

    ``pixels`` (N,C,S,S) float32 in [0,1]; ``masks`` (N,S,S) bool; ``labels`` shape
    index; ``centres`` (N,2) as (x, y) in pixel units (pixel i covers [i, i+1));
    ``radii`` outer radius in pixels; ``angles`` rotation in radians; ``textures``
    index into TEXTURES; ``colours`` index into COLOURS (-1 for grey images).
    """

    pixels: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    centres: np.ndarray
    radii: np.ndarray
    angles: np.ndarray
    textures: np.ndarray
    colours: np.ndarray

    def concepts(self) -> dict[str, np.ndarray]:
        """Named (N,S,S) bool concept masks (see the module doc)."""
        fg, bg = self.masks, ~self.masks
        out = {f"shape:{s}": fg & (self.labels == k)[:, None, None] for k, s in enumerate(SHAPES)}
        out["background"] = bg
        out.update({f"texture:{t}": bg & (self.textures == k)[:, None, None] for k, t in enumerate(TEXTURES)})
        if (self.colours >= 0).all():
            out.update({f"colour:{c}": fg & (self.colours == k)[:, None, None] for k, c in enumerate(COLOURS)})
        return out


def inside_shape(shape: str, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Analytic inside-test in shape coordinates (u, v) relative to the centre, outer radius r.

    Every shape fits in the disc of radius r, so it stays inside the image at any rotation.
    """
    d2 = u**2 + v**2
    if shape == "circle":
        return d2 <= r**2
    if shape == "ring":  # annulus, inner radius r/2
        return (d2 <= r**2) & (d2 >= (0.5 * r) ** 2)
    if shape == "square":  # half side r/sqrt(2): the corners touch the disc
        half = r / np.sqrt(2.0)
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "triangle":  # equilateral, circumradius r, inradius r/2
        normals = [(np.cos(a), np.sin(a)) for a in np.pi / 2 + 2 * np.pi / 3 * np.arange(3)]
        return np.all([u * nx + v * ny <= 0.5 * r for nx, ny in normals], axis=0)
    if shape == "cross":  # two bars, half length 0.95 r, half width 0.3 r (corners inside the disc)
        length, width = 0.95 * r, 0.3 * r
        au, av = np.abs(u), np.abs(v)
        return ((au <= width) & (av <= length)) | ((av <= width) & (au <= length))
    raise ConfigError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


def _textures(rng: np.random.Generator, n: int, size: int, kind: np.ndarray) -> np.ndarray:
    """(N,S,S) texture values in [0,1]: smooth noise where kind==0, stripes where kind==1."""
    grid = torch.from_numpy(rng.random((n, 1, NOISE_GRID, NOISE_GRID)))
    noise = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True)[:, 0].numpy()
    low = noise.min(axis=(1, 2), keepdims=True)
    high = noise.max(axis=(1, 2), keepdims=True)
    noise = (noise - low) / np.maximum(high - low, 1e-6)
    period = rng.uniform(*STRIPE_PERIOD, n) * size
    phi = rng.uniform(0, np.pi, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    along = xs[None] * np.cos(phi)[:, None, None] + ys[None] * np.sin(phi)[:, None, None]
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * along / period[:, None, None] + phase[:, None, None])
    return np.where((kind == 0)[:, None, None], noise, stripes)


def generate_shapes(n: int, size: int = 32, channels: int = 3, seed: int | list[int] = 0) -> ShapeScenes:
    """Generate ``n`` images (balanced classes, shuffled) of side ``size`` with 1 or 3 channels."""
    rng = np.random.default_rng(seed)
    k = len(SHAPES)
    labels = rng.permutation(np.arange(n) % k)
    radii = rng.uniform(*RADIUS_RANGE, n) * size
    centres = rng.uniform(radii + 1, size - radii - 1, (2, n)).T
    angles = rng.uniform(0, 2 * np.pi, n)
    textures = rng.integers(0, len(TEXTURES), n)

    ys, xs = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    dx = xs[None] - centres[:, 0, None, None]
    dy = ys[None] - centres[:, 1, None, None]
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    masks = np.zeros((n, size, size), dtype=bool)
    for label, shape in enumerate(SHAPES):
        sel = labels == label
        masks[sel] = inside_shape(shape, u[sel], v[sel], radii[sel, None, None])

    texture = _textures(rng, n, size, textures)
    if channels == 3:
        colours = rng.integers(0, len(COLOURS), n)
        fill = np.asarray(list(COLOURS.values()))[colours]  # (N,3)
        tint = rng.uniform(0.6, 1.0, (n, 3))
    else:
        colours = np.full(n, -1)
        fill = rng.uniform(OBJECT_MIN, 1.0, (n, 1))
        tint = np.ones((n, 1))
    background = BACKGROUND_MAX * tint[:, :, None, None] * texture[:, None]
    pixels = np.where(masks[:, None], fill[:, :, None, None], background).astype(np.float32)
    return ShapeScenes(pixels, masks, labels.astype(np.int64), centres, radii, angles, textures, colours)


@register_dataset(
    "synthetic-shapes",
    "generated shapes (5 classes) on textured backgrounds, exact masks and concept masks",
    (3, 32, 32), len(SHAPES),
)
def load_synthetic_shapes(
    split: str = "test",
    root: str | Path | None = None,
    download: bool = False,
    n: int | None = None,
    size: int = 32,
    channels: int = 3,
    seed: int = 0,
) -> ImageDataset:
    """Generate the split (default 2000 train / 500 test images); ``root``/``download`` are ignored.

    ``size`` is the image side (32 default, 28 to match MNIST; 16..512), ``channels``
    3 (colour) or 1 (grey). Pixels are float32 in [0,1].
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not valid; valid: {', '.join(SPLITS)}")
    n = DEFAULT_N[split] if n is None else n
    for name, value in (("n", n), ("size", size), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"{name}={value!r} must be an integer")
    check_range("n", n, 1)
    check_range("size", size, 16, 512)
    if channels not in (1, 3):
        raise ConfigError(f"channels={channels!r} is not valid; valid: 1 (grey), 3 (colour)")
    scenes = generate_shapes(int(n), int(size), channels, seed=[int(seed) % 2**63, SPLITS.index(split)])
    return ImageDataset(
        "synthetic-shapes",
        torch.from_numpy(scenes.pixels),
        torch.from_numpy(scenes.labels),
        SHAPES,
        masks=torch.from_numpy(scenes.masks),
        concepts={k: torch.from_numpy(v) for k, v in scenes.concepts().items()},
    )
