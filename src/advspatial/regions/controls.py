"""Random regions for controls: size- and composition-matched draws, shifted copies, keyed by sample id."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError, ShapeError, check_range
from ..host_syncs import host_list, on_device_path, require
from ..runtime import per_sample_noise, sample_ids_or_range, stream_seed

#: stream of the random control regions (the neutralization defence's controls, the faithfulness gate)
RANDOM_REGION_STREAM = 0xC0DE


def inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    """Inverse of a per-row permutation: ``ranks[i, order[i, r]] = r``."""
    ranks = torch.empty_like(order)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def random_region_like(
    region: torch.Tensor,
    seed: int = 0,
    *,
    within: torch.Tensor | None = None,
    strata: torch.Tensor | None = None,
    draw: int = 0,
    sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The control region: per image, as many pixels as ``region`` has, at uniformly random positions.

    With ``within`` (N,H,W) bool the positions are drawn inside it only (e.g.
    outside the RoI for the neutralization defence, whose region never touches
    the RoI; inside RoA for the oracle's control); it must hold at least as
    many pixels as ``region`` in every image. With ``strata`` (N,H,W) int the
    draw is stratified: in each stratum s it takes as many pixels as ``region``
    has in s, among the eligible pixels of s (e.g. foreground/background, so
    the control has the region's composition). Image i's draw number ``draw``
    depends only on ``(seed, draw, sample_ids[i])``: never on the batch.
    """
    return random_regions_like(region, seed, within=within, strata=strata, draws=(draw,), sample_ids=sample_ids)[0]


def random_regions_like(
    region: torch.Tensor,
    seed: int = 0,
    *,
    within: torch.Tensor | None = None,
    strata: torch.Tensor | None = None,
    draws: Sequence[int] = (0,),
    sample_ids: torch.Tensor | None = None,
    strata_levels: int | None = None,
) -> torch.Tensor:
    """(D,N,H,W) bool: :func:`random_region_like` for each draw number in ``draws``, computed together (an EOT
    attacker's draws of one step); row d equals ``random_region_like(..., draw=draws[d])``. ``strata_levels``: the
    strata take values in ``0 .. strata_levels - 1`` (the caller knows them), so they need not be read back to be
    found; on a device the checks that ``within`` leaves room then wait for the stage's end, and nothing is read."""
    if not isinstance(region, torch.Tensor) or region.ndim != 3 or region.dtype != torch.bool:
        raise ShapeError(f"region must be an (N,H,W) bool tensor, got {getattr(region, 'shape', type(region))}")
    n, h, w = region.shape
    eligible = torch.ones_like(region) if within is None else torch.as_tensor(within, device=region.device)
    if eligible.shape != region.shape or eligible.dtype != torch.bool:
        raise ShapeError(f"within must be an (N,H,W) bool tensor of shape {tuple(region.shape)}")
    labels = torch.zeros(region.shape, dtype=torch.long, device=region.device) if strata is None \
        else torch.as_tensor(strata, device=region.device).long()
    if labels.shape != region.shape:
        raise ShapeError(f"strata must be an (N,H,W) int tensor of shape {tuple(region.shape)}")
    ids = sample_ids_or_range(n, sample_ids)
    d = len(draws)
    check_range("number of draws", d, 1)
    id_list = host_list(ids)  # read once for every draw
    keys = torch.cat([per_sample_noise((n, h * w), stream_seed(seed, RANDOM_REGION_STREAM, draw), id_list,
                                       device=region.device) for draw in draws]).view(d, n, h * w)
    flat_region, flat_eligible = region.flatten(1), eligible.flatten(1)
    constrained = within is not None or strata is not None  # else one stratum, every pixel eligible: no host read
    unread = constrained and strata_levels is not None and on_device_path(region)
    if unread:  # the strata's values known: a stratum of no pixel in the batch changes no draw
        levels = int(strata_levels)  # type: ignore[arg-type]
        require("strata levels", ((labels < 0) | (labels >= levels)).sum(), labels.numel(),
                lambda bad, _n: ConfigError(f"strata must take values in 0..{levels - 1}; {bad} pixels did not"))
        values, stratum = torch.arange(levels, device=region.device), labels.flatten(1).clamp(0, levels - 1)
    elif constrained:
        values, stratum = torch.unique(labels.flatten(1), return_inverse=True)  # stratum: 0..S-1 per pixel
    else:
        values, stratum = torch.zeros(1, dtype=torch.long, device=region.device), labels.flatten(1)
    wanted = _per_stratum(flat_region, stratum, len(values))  # (N, S) pixels of the region per stratum
    available = _per_stratum(flat_eligible, stratum, len(values))
    if unread:  # held to the stage's end, where the images and strata are no longer named
        require("within leaves room", (wanted > available).sum(), wanted.numel(), lambda _b, _n: ConfigError(
            "within has fewer pixels than region in some image and stratum; valid: within holds at least as many "
            "pixels as region in every image and stratum"))
    elif constrained:  # a region fits where every pixel is eligible
        short = (wanted > available).nonzero()
        if short.numel():
            raise ConfigError(f"within has fewer pixels than region (stratum {int(values[short[0, 1]])}) in "
                              f"image(s) {sorted(set(short[:, 0].tolist()))[:10]}; valid: within holds at least as "
                              "many pixels as region in every image and stratum")
    above = available.flip(1).cumsum(1).flip(1) - available  # (N, S) eligible pixels in higher strata
    chosen = _top_by_threshold(keys, flat_eligible, stratum, wanted, above)
    if chosen is None:
        chosen = _top_by_rank(keys, flat_eligible, stratum, wanted, above)
    return chosen.view(d, n, h, w)


def _per_stratum(pixels: torch.Tensor, stratum: torch.Tensor, levels: int) -> torch.Tensor:
    """(N, S) int64: per image, how many of the (N, P) bool ``pixels`` lie in each stratum ``0 .. levels - 1``."""
    counts = torch.zeros(pixels.shape[0], levels, dtype=torch.long, device=pixels.device)
    return counts.scatter_add_(1, stratum, pixels.long())


def _top_by_rank(keys: torch.Tensor, eligible: torch.Tensor, stratum: torch.Tensor, wanted: torch.Tensor,
                 above: torch.Tensor) -> torch.Tensor:
    """(D,N,P) bool: in each stratum the ``wanted`` eligible pixels of highest key (ties: the lower index first).

    One sort for every stratum: strata in blocks (the highest first), keys descending within a block, so a pixel's
    rank within its stratum is its rank minus the eligible pixels of the strata above it (``above``).
    """
    d, n, p = keys.shape
    blocks = torch.where(eligible, stratum.double() * 4 + (keys.double() + 1),
                         torch.full_like(keys, -1.0, dtype=torch.double))
    ranks = inverse_permutation(blocks.view(d * n, p).argsort(dim=1, descending=True, stable=True))
    rank_within = ranks.view(d, n, p) - above.gather(1, stratum)
    return eligible & (rank_within < wanted.gather(1, stratum))


#: bits of a pixel's index in :func:`_top_by_threshold`'s sort keys (images up to 2^20 pixels, e.g. 1024 x 1024)
_INDEX_BITS = 20
#: a uniform key ``u`` of :func:`~advspatial.runtime.per_sample_noise` is ``m / 2^23 - 1`` for an integer m < 2^24
_KEY_STEPS = 2.0 ** 23


def _top_by_threshold(keys: torch.Tensor, eligible: torch.Tensor, stratum: torch.Tensor, wanted: torch.Tensor,
                      above: torch.Tensor) -> torch.Tensor | None:
    """:func:`_top_by_rank`'s choice (the same pixels, ties included) from one sort of integers, without ranking
    every pixel: each pixel's key as one int64 (stratum, key, reversed index: unique in a row, ordered as the rank
    rule orders them), sorted; a pixel is chosen when it is at least its stratum's ``wanted``-th value. The keys
    must lie on the uniform noise's grid (``m / 2^23 - 1``, as :func:`~advspatial.runtime.per_sample_noise` draws
    them; not checked here, which would cost a host read per call). None when the image has more than 2^20 pixels or
    2^18 strata (use the rank rule)."""
    d, n, p = keys.shape
    if p > 2 ** _INDEX_BITS or wanted.shape[1] > 2 ** 18:
        return None
    steps = (keys.double() + 1) * _KEY_STEPS
    index = (2 ** _INDEX_BITS - 1) - torch.arange(p, device=keys.device)
    packed = (stratum << (24 + _INDEX_BITS)) | (steps.long() << _INDEX_BITS) | index
    packed = torch.where(eligible, packed, torch.full_like(packed, -1))
    ordered = packed.view(d * n, p).sort(dim=1, descending=True).values.view(d, n, p)
    last = (above + wanted - 1).clamp(min=0)  # (N, S): where each stratum's wanted-th pixel lies in the order
    threshold = ordered.gather(2, last.expand(d, n, -1)).gather(2, stratum.expand(d, n, p))
    return eligible & (wanted.gather(1, stratum) > 0) & (packed >= threshold)


def foreground_strata(images: torch.Tensor, level: float = 0.05) -> torch.Tensor:
    """(N,H,W) int: 1 where any channel exceeds ``level`` (object), 0 elsewhere (background).

    The strata of a composition-matched control on images with a dark
    background (MNIST-like). On natural images almost every pixel is
    "foreground" and the stratification does nothing; match on the fill's
    change there (:func:`change_strata`).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ShapeError(f"images must be an (N,C,H,W) tensor, got {getattr(images, 'shape', type(images))}")
    return (images.amax(1) > level).long()


def change_strata(images: torch.Tensor, filled: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """(N,H,W) int: per image, the quantile bin (of ``levels``) of each pixel's squared change ``|filled - images|^2``.

    A control stratified on these bins takes its pixels where the fill changes
    the image about as much as it does inside the region, so the control's L2
    change matches the region's (up to the bin width).
    """
    check_range("levels", levels, 1)
    if images.shape != filled.shape or images.ndim != 4:
        raise ShapeError(f"images {tuple(images.shape)} and filled {tuple(filled.shape)} must be equal (N,C,H,W)")
    change = (filled - images).pow(2).sum(1).flatten(1)
    ranks = inverse_permutation(change.argsort(dim=1, stable=True))
    bins = (ranks * levels) // max(change.shape[1], 1)
    return bins.view(images.shape[0], *images.shape[2:])


#: stream of the shifted control regions (the faithfulness gate's default control)
SHIFTED_REGION_STREAM = 0x5EED


def shifted_region_like(region: torch.Tensor, seed: int = 0, *, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The shape-matched control: each image's ``region`` moved by a random cyclic shift (torch.roll semantics).

    Same pixel count and the same shape (blobs stay blobs, up to the wrap at the
    border), at a location uniform over the image: a contiguous RoI is compared
    with a contiguous region elsewhere rather than with scattered pixels, whose
    deletion creates many more edges (on natural images that alone makes it more
    damaging). Image i's shift depends only on ``(seed, sample_ids[i])``.
    """
    if not isinstance(region, torch.Tensor) or region.ndim != 3 or region.dtype != torch.bool:
        raise ShapeError(f"region must be an (N,H,W) bool tensor, got {getattr(region, 'shape', type(region))}")
    n, h, w = region.shape
    u = per_sample_noise((n, 2), stream_seed(seed, SHIFTED_REGION_STREAM), sample_ids_or_range(n, sample_ids),
                         device=region.device)
    dy = (u[:, 0] * h).long().clamp(max=h - 1)
    dx = (u[:, 1] * w).long().clamp(max=w - 1)
    rows = (torch.arange(h, device=region.device)[None, :] - dy[:, None]) % h  # (N,H): source row of each row
    cols = (torch.arange(w, device=region.device)[None, :] - dx[:, None]) % w
    return region[torch.arange(n, device=region.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
