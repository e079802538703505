"""Model-free reference maps: what an importance map must beat before it counts as an explanation.

A Region of Importance (RoI) is meant to say where *this model* looks in *this
image*. Much of what a map shows is known without the model: objects sit near
the centre (layout), every image of a class has its object in about the same
place (class layout), and bright or high-contrast pixels are where the object is
(image content). An explainer that does no better than these tells nothing
about the model. This module builds those maps, once,
for both users: the faithfulness gate (the RoI must beat every one of them,
:mod:`advspatial.faithfulness.gate`) and the co-location claim (the attack's
co-location with the RoI must exceed its co-location with every one of them).

References (:data:`REFERENCE_MAPS`), each an (N,H,W) map >= 0 at input resolution:

- ``class-layout``: the mean importance map of the *other* images of the same
  class (leave-one-out; cross-fitted, never the image itself), each map first
  scaled to sum 1 so every image weighs the same;
- ``dataset-layout``: the same over the other images of every class;
- ``centre``: a centred isotropic Gaussian (sigma a quarter of the shorter side);
  as a region it is the central disc;
- ``intensity``: the image's largest channel value per pixel;
- ``edges``: the Sobel gradient magnitude of the grey image (channel mean),
  SciPy's ``reflect`` border (``d c b a | a b c d``).

The two layout maps need every image's map before any can be built; they come
from a :class:`LayoutSums` filled in a first pass over the images (streamed, one
(C,H,W) sum per class). An image whose class has no other image gets an all-NaN
class-layout map: its comparison is left out, not faked.

Regions of equal size: :func:`top_count_mask` takes, per image, exactly as many
pixels as the RoI has (ties and flat maps broken by a per-sample random order),
so a comparison is never between regions of different size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from ..errors import ShapeError, unknown_name
from ..runtime import per_sample_noise, sample_ids_or_range, stream_seed
from .checks import check_same_shape

#: the model-free reference maps, in the order they are reported
REFERENCE_MAPS = ("class-layout", "dataset-layout", "centre", "intensity", "edges")

#: the references computed from the image alone (the layouts need the other images' maps)
IMAGE_REFERENCES = ("centre", "intensity", "edges")

#: what each reference stands for, in the words of the gate's rows ("beats ...")
REFERENCE_WORDS = {
    "class-layout": "class layout",
    "dataset-layout": "dataset layout",
    "centre": "the centre prior",
    "intensity": "image intensity",
    "edges": "image edges",
}

#: the centre prior's sigma is the shorter side over this
CENTRE_SIDE_PER_SIGMA = 4

#: seed stream of the tie-break order of :func:`top_count_mask`
TIE_STREAM = 0x7E1E


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ShapeError(f"images must be a float (N,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")


def intensity_map(x: torch.Tensor) -> torch.Tensor:
    """(N,H,W): each pixel's largest channel value (bright object pixels rank first)."""
    _check_images(x)
    return x.detach().amax(1).clamp_min(0)


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """(N,H,W): Sobel gradient magnitude of the channel-mean grey image, reflect border.

    Equal to ``hypot(scipy.ndimage.sobel(g, 0), scipy.ndimage.sobel(g, 1))`` (tested).
    """
    _check_images(x)
    grey = x.detach().mean(1, keepdim=True)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")  # reflect about the edge: SciPy's 'reflect'
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    diff = torch.tensor([-1.0, 0.0, 1.0], dtype=x.dtype, device=x.device)
    along_rows = (diff[:, None] * smooth[None, :])[None, None]   # derivative down the rows, smoothed across
    along_cols = (smooth[:, None] * diff[None, :])[None, None]
    gy = F.conv2d(padded, along_rows)
    gx = F.conv2d(padded, along_cols)
    return torch.hypot(gx, gy)[:, 0]


def centre_prior(n: int, height: int, width: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n,H,W): the same centred Gaussian for every image (sigma = shorter side / 4)."""
    sigma = min(height, width) / CENTRE_SIDE_PER_SIGMA
    rows = torch.arange(height, device=device, dtype=dtype) - (height - 1) / 2
    cols = torch.arange(width, device=device, dtype=dtype) - (width - 1) / 2
    bump = torch.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * sigma ** 2))
    return bump.expand(n, height, width).clone()


def _unit_sum(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to sum 1 (an all-zero map stays zero)."""
    total = maps.flatten(1).sum(1).clamp_min(torch.finfo(maps.dtype).tiny)
    return maps / total[:, None, None]


class LayoutSums:
    """Per-class and overall sums of unit-sum importance maps, filled batch by batch (a first pass).

    ``add(maps, labels)`` for every batch of the images the references are for;
    then :meth:`leave_one_out` gives each image's class-layout and dataset-layout
    maps without its own map.
    """

    def __init__(self) -> None:
        self.per_class: dict[int, torch.Tensor] = {}
        self.counts: dict[int, int] = {}
        self.total: torch.Tensor | None = None
        self.n = 0

    def add(self, maps: torch.Tensor, labels: torch.Tensor | Sequence[int]) -> None:
        """Accumulate a batch of (N,H,W) maps with their (N,) class labels."""
        unit = _unit_sum(maps.detach().double().cpu())
        labels = torch.as_tensor(labels).cpu().long().reshape(-1)
        if labels.shape[0] != unit.shape[0]:
            raise ShapeError(f"labels have {labels.shape[0]} entries for {unit.shape[0]} maps")
        for c in torch.unique(labels).tolist():
            part = unit[labels == c].sum(0)
            self.per_class[c] = self.per_class[c] + part if c in self.per_class else part
            self.counts[c] = self.counts.get(c, 0) + int((labels == c).sum())
        batch_total = unit.sum(0)
        self.total = batch_total if self.total is None else self.total + batch_total
        self.n += unit.shape[0]

    def leave_one_out(self, maps: torch.Tensor, labels: torch.Tensor | Sequence[int]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(class-layout, dataset-layout) maps of images already added: the sums without the image's own map.

        An image alone in its class (or in the data) gets an all-NaN map.
        """
        if self.total is None:
            raise ShapeError("LayoutSums is empty: add every image's map before asking for its references")
        unit = _unit_sum(maps.detach().double().cpu())
        labels = torch.as_tensor(labels).cpu().long().reshape(-1)
        class_sum = torch.stack([self.per_class[c] for c in labels.tolist()])
        class_n = torch.tensor([self.counts[c] for c in labels.tolist()], dtype=torch.float64)
        own_class = _mean_without(class_sum, unit, class_n)
        everyone = _mean_without(self.total.expand_as(unit), unit, torch.full_like(class_n, float(self.n)))
        return own_class.to(maps.dtype), everyone.to(maps.dtype)


def _mean_without(total: torch.Tensor, own: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    others = (count - 1)[:, None, None]
    mean = (total - own).clamp_min(0) / others.clamp_min(1)
    return torch.where(others > 0, mean, torch.full_like(mean, float("nan")))


def reference_maps(x: torch.Tensor, layouts: Mapping[str, torch.Tensor] | None = None,
                   names: Sequence[str] = REFERENCE_MAPS) -> dict[str, torch.Tensor]:
    """The reference maps ``names`` of images ``x``: {name: (N,H,W)}.

    ``layouts`` holds ``class-layout`` and ``dataset-layout`` when they are asked
    for (from :meth:`LayoutSums.leave_one_out`); the others are computed here.
    """
    n, _, h, w = x.shape
    out: dict[str, torch.Tensor] = {}
    for name in names:
        if name in ("class-layout", "dataset-layout"):
            if layouts is None or name not in layouts:
                raise ShapeError(f"reference {name!r} needs the layout maps (LayoutSums.leave_one_out)")
            out[name] = layouts[name].to(x.device)
        elif name == "centre":
            out[name] = centre_prior(n, h, w, x.device, x.dtype)
        elif name == "intensity":
            out[name] = intensity_map(x)
        elif name == "edges":
            out[name] = edge_map(x)
        else:
            raise unknown_name("reference map", name, REFERENCE_MAPS)
    return out


def top_count_mask(maps: torch.Tensor, counts: torch.Tensor, seed: int = 0,
                   sample_ids: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
    """(N,H,W) bool: per image the ``counts[i]`` pixels of largest value (every pixel eligible).

    Ties (a flat map, zero background) are broken by a random order keyed by
    (``seed``, sample id), so an image gets the same region in any batch. A map
    with a NaN anywhere gives an empty region (its comparison is left out).
    """
    return top_count_masks({"": maps}, counts, seed, sample_ids)[""]


def top_count_masks(maps: Mapping[str, torch.Tensor], counts: torch.Tensor, seed: int = 0,
                    sample_ids: torch.Tensor | Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """:func:`top_count_mask` of several (N,H,W) maps of the same images, by name: the tie-break order (a noise
    draw and a sort per image) is made once for all of them, and each mask is the one :func:`top_count_mask` gives.

    Example::

        >>> import torch
        >>> maps = {"flat": torch.zeros(2, 4, 4), "ramp": torch.arange(32.0).reshape(2, 4, 4)}
        >>> masks = top_count_masks(maps, torch.tensor([3, 5]), seed=0, sample_ids=torch.tensor([7, 9]))
        >>> [m.flatten(1).sum(1).tolist() for m in masks.values()]
        [[3, 5], [3, 5]]
        >>> torch.equal(masks["flat"], top_count_mask(maps["flat"], torch.tensor([3, 5]), 0, torch.tensor([7, 9])))
        True
    """
    if not maps:
        return {}
    shape = next(iter(maps.values())).shape
    if len(shape) != 3:
        raise ShapeError(f"maps must be (N,H,W), got {tuple(shape)}")
    check_same_shape(shape, **{f"map {name!r} of the same images": one for name, one in maps.items()})
    n, h, w = shape
    device = next(iter(maps.values())).device
    counts = torch.as_tensor(counts, device=device).long().reshape(-1)
    if counts.shape != (n,):
        raise ShapeError(f"counts must have shape ({n},), got {tuple(counts.shape)}")
    # runtime.sample_ids_or_range takes a sequence of ids too, which its annotation (Tensor | None) does not say
    order_noise = per_sample_noise((n, h * w), stream_seed(seed, TIE_STREAM),
                                   sample_ids_or_range(n, sample_ids),  # type: ignore[arg-type]
                                   device=device)
    by_noise = order_noise.argsort(dim=1)
    return {name: _top_count(one.reshape(n, h * w), by_noise, counts).view(n, h, w) for name, one in maps.items()}


def _top_count(flat: torch.Tensor, by_noise: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(N, HW) bool: the ``counts`` largest values of each row of ``flat``, ties in the order ``by_noise``; an empty
    row where the row holds a NaN."""
    values = flat.gather(1, by_noise).nan_to_num(nan=0.0)  # in the tie-break order
    counts = counts.clamp(0, flat.shape[1])
    most = int(counts.max()) if counts.numel() else 0
    if most == 0:
        return torch.zeros_like(flat, dtype=torch.bool)
    # each row's count-th largest value: every value above it is taken, then the values at it in tie-break order
    # until the count is reached (what a stable descending sort of the row would take, without sorting the row)
    cut = values.topk(most, dim=1).values.gather(1, (counts - 1).clamp_min(0)[:, None])
    above, at = values > cut, values == cut
    chosen = above | (at & (at.cumsum(1) <= counts[:, None] - above.sum(1, keepdim=True)))  # none for a count of 0
    mask = torch.empty_like(chosen).scatter_(1, by_noise, chosen)  # back to pixel order
    mask &= ~flat.isnan().any(1, keepdim=True)
    return mask
