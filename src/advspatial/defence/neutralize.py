"""The neutralization defence: block out what is vulnerable but unimportant (METHODS.md §2).

Region selection: RoI = top ``roi_fraction`` of the importance map, RoA = top
``fraction`` of the vulnerability map, neutralized region ``N = RoA \\ RoI``
(:mod:`.selection`). :class:`NeutralizedModel` wraps a classifier so that every forward pass
computes ``N`` from the input alone and classifies ``fill(x, N)``; it is an
``nn.Module`` whose parameters are the wrapped model's, so any attack can use it.

The maps come from plain callables ``fn(x) -> (N,H,W)`` (Grad-CAM, the gradient
map, :class:`ClassPriorVulnerability`, ...); this module does not import
``advspatial.maps`` so that it works with any of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ShapeError, check_range, unknown_name
from ..host_syncs import on_device_path, uncounted
from ..regions import class_mean_maps as regions_class_mean_maps
from ..regions.checks import check_region
from ..regions.controls import change_strata, foreground_strata, random_regions_like
from ..regions.fills import FillFn, make_fill
from ..runtime import sample_ids_or_range
from ..stacked_runs import forward_stacked
from .selection import BinarizeFn, RegionSelection, as_maps, select_regions, valid_maps
from .transforms import check_backward, through, through_rows

#: ``fn(x) -> (N,H,W)`` map >= 0 computed from the images x (N,C,H,W) alone.
MapFn = Callable[[torch.Tensor], torch.Tensor]
#: ``fn(x) -> (importance, vulnerability)``: both maps of x at once, e.g. from one forward pass (as the spatial
#: experiment computes them); equal to the two map callables' results.
PairedMapFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

MODES = ("defend", "random", "oracle")
#: how the random control is matched to the neutralized region (besides its pixel count and avoiding the RoI)
CONTROL_MATCHES = ("foreground", "change", "none")

#: first draw number of the forward passes of a resampling control (what an EOT attacker sees); the
#: draws scored by evaluations are 0, 1, ..., so the attacker never sees the randomness it is scored on
ATTACK_DRAWS = 1 << 20
#: the quantile bins of the fill's change a ``control_match="change"`` control is stratified on
CHANGE_LEVELS = 4

def map_of(fn: MapFn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` detached, computed on a detached copy of x with gradients enabled.

    Safe to call under ``torch.no_grad()`` or ``torch.inference_mode()`` and
    inside an attack's graph: map methods that need gradients (Grad-CAM, the
    gradient map) get them, and nothing flows back into the caller's graph.
    """
    return _checked_map(_computed(fn, x), x)


def map_pair_of(fn: PairedMapFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x)``'s two maps, computed and checked as :func:`map_of` computes and checks one."""
    importance, vulnerability = _computed(fn, x)
    return _checked_map(importance, x), _checked_map(vulnerability, x)


def _computed(fn: Callable[[torch.Tensor], Any], x: torch.Tensor) -> Any:
    with torch.inference_mode(False), torch.enable_grad():
        return fn(x.detach().clone())


def _checked_map(maps: torch.Tensor, x: torch.Tensor, read: bool = True) -> torch.Tensor:
    """The map validated for images x; ``read=False`` leaves its values (NaN) to the caller's own read."""
    maps = valid_maps(maps) if read else as_maps(maps, "maps")
    expected = (x.shape[0], *x.shape[2:])
    if tuple(maps.shape) != expected:
        raise ShapeError(f"map function returned shape {tuple(maps.shape)}; expected {expected} (N,H,W)")
    return maps


def class_prior_maps(maps: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K,H,W) mean map per class, zeros for a class with no image: the dataset prior of §2, on the maps' device.

    The means are :func:`advspatial.regions.class_mean_maps`' (accumulated in float64); a class never seen
    gets zeros rather than NaN, because a prior map must be finite (:class:`ClassPriorVulnerability`).
    """
    maps = valid_maps(maps)
    means, _ = regions_class_mean_maps(maps, torch.as_tensor(classes).long(), num_classes)
    return torch.nan_to_num(means, nan=0.0).to(device=maps.device, dtype=maps.dtype)


class ClassPriorVulnerability:
    """Deployable vulnerability map: the prior map of the class ``model`` predicts on x.

    ``prior_maps`` (K,H,W) is e.g. :func:`class_prior_maps` of attack maps on
    training images. Calling it runs one no-grad forward pass of ``model``.
    """

    def __init__(self, prior_maps: torch.Tensor, model: nn.Module) -> None:
        self.prior_maps = valid_maps(prior_maps, "prior_maps")
        if bool((self.prior_maps < 0).any()):
            raise ConfigError("prior_maps must be >= 0")
        self.model = model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            pred = self.model(x).argmax(dim=1)
        k = self.prior_maps.shape[0]
        if int(pred.max()) >= k:
            raise ShapeError(f"model predicts class {int(pred.max())} but prior_maps has only {k} classes")
        if self.prior_maps.device != x.device:  # moved once, not per call: 200 MB for 1000 classes at 224 px
            self.prior_maps = self.prior_maps.to(x.device)
        return self.prior_maps[pred]


def _same_ids(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    on_host = a.device.type == b.device.type == "cpu"  # sample ids kept on the host on every device: no wait
    with uncounted() if on_host else contextlib.nullcontext():
        return a.shape == b.shape and torch.equal(a, b)


def _version(x: torch.Tensor) -> int | None:
    """The version counter of x's memory (bumped by every in-place change); None for an inference tensor (none)."""
    return None if x.is_inference() else x._version


@dataclass
class _Cached:
    """The last selection, the images it was made for (a copy), and the tensor they were copied from (held, so
    its memory is not reused) with its version counter then."""

    images: torch.Tensor
    ids: torch.Tensor | None
    selection: RegionSelection
    source: torch.Tensor
    version: int | None

    def holds(self, x: torch.Tensor, ids: torch.Tensor | None) -> bool:
        """Whether ``x`` (with ``ids``) are the cached images: without a read back when ``x`` is the same memory
        as the source, unchanged since (the EOT chunks of one step), else compared value by value on a CPU; on a
        device images in new memory count as new (their maps computed again, the same maps) rather than read back."""
        if self.images.shape != x.shape or self.images.device != x.device or not _same_ids(self.ids, ids):
            return False
        same_memory = x.data_ptr() == self.source.data_ptr() and x.stride() == self.source.stride() \
            and x.dtype == self.source.dtype
        if same_memory and self.version is not None and _version(x) == self.version == _version(self.source):
            return True
        if on_device_path(x):  # comparing values is a read the device waits on: images in new memory are new
            return False
        return torch.equal(self.images, x.detach())


class NeutralizedModel(nn.Module):
    """``model`` behind the neutralization defence: ``forward(x) = model(fill(x, region(x)))``.

    Args:
        model: the classifier (images in [0,1]).
        importance_fn, vulnerability_fn: ``fn(x) -> (N,H,W)`` maps from the
            input alone (deployable). They may use gradients internally; they
            always receive a detached copy of x (:func:`map_of`).
        fraction: RoA size (top fraction of the vulnerability map); RoI uses
            ``roi_fraction`` (default: ``fraction``).
        fill: a kind name (``zero``, ``mean``, ``blur``, ``inpaint``) with
            ``fill_params``, or a callable ``(x, region) -> x``.
        mode: ``defend`` neutralizes ``N = RoA \\ RoI``; ``random`` (control)
            neutralizes as many pixels as ``N`` has, drawn at random from the
            pixels the defence may touch (outside the RoI), matched on
            ``control_match``; ``oracle`` neutralizes the region set by
            :meth:`set_oracle_region` (or call :meth:`forward_with_region`).
        backward: the gradient an attacker gets: ``local`` (through the fill,
            region constant) or ``identity`` (BPDA: the fill is the identity
            in the backward pass); see :mod:`advspatial.defence.transforms`.
        control_match: ``foreground`` (the control has as many object and
            background pixels as N), ``change`` (stratified on the fill's
            per-pixel change, so its L2 change matches N's) or ``none``.
        seed: tie-breaking seed, and the seed of the random control.
        resample: in ``random`` mode, draw new positions at every forward pass
            (call ``c`` uses draw ``ATTACK_DRAWS + c``; :attr:`calls` counts
            them, :meth:`reset` restarts it) -- the randomized defence that
            EOT averages over; :meth:`predict_draws` scores draws 0, 1, ...,
            which the attacker never saw. With ``resample=False`` every call
            uses draw 0, so the same input gets the same positions.
        binarize: optional ``binarize(maps, fraction) -> bool`` replacing the
            built-in :func:`top_fraction`.
        maps_fn: optional ``fn(x) -> (importance, vulnerability)`` giving both
            maps at once (:data:`PairedMapFn`, e.g. from one forward pass of the
            model); it must equal the two map callables, which then serve only
            where one map alone is needed.

    The region is a constant for autograd: with ``backward="local"``
    gradients with respect to x flow through the fill only. The last region used is kept
    in :attr:`last_region` (and the selection in :attr:`last_selection`).
    """

    # set with object.__setattr__ in __init__ (plain attributes, not submodules): declared here for the checker
    importance_fn: MapFn
    vulnerability_fn: MapFn
    binarize: BinarizeFn | None
    maps_fn: PairedMapFn | None

    def __init__(
        self,
        model: nn.Module,
        importance_fn: MapFn,
        vulnerability_fn: MapFn,
        fraction: float = 0.2,
        fill: str | FillFn = "zero",
        *,
        roi_fraction: float | None = None,
        mode: str = "defend",
        seed: int = 0,
        resample: bool = True,
        binarize: BinarizeFn | None = None,
        fill_params: Mapping[str, Any] | None = None,
        backward: str = "local",
        control_match: str = "foreground",
        maps_fn: PairedMapFn | None = None,
    ) -> None:
        super().__init__()
        if control_match not in CONTROL_MATCHES:
            raise unknown_name("control_match", control_match, CONTROL_MATCHES)
        check_range("fraction", fraction, 0.0, 1.0)
        if roi_fraction is not None:
            check_range("roi_fraction", roi_fraction, 0.0, 1.0)
        if mode not in MODES:
            raise unknown_name("mode", mode, MODES)
        self.model = model
        self.training = model.training  # start in the wrapped model's mode (see models.Normalized)
        # Plain attributes, not submodules: a map callable that holds the model must
        # not register its parameters twice.
        object.__setattr__(self, "importance_fn", importance_fn)
        object.__setattr__(self, "vulnerability_fn", vulnerability_fn)
        object.__setattr__(self, "binarize", binarize)
        object.__setattr__(self, "maps_fn", maps_fn)
        self.fill_fn: FillFn = make_fill(fill, **dict(fill_params or {})) if isinstance(fill, str) else fill
        self.fraction = float(fraction)
        self.roi_fraction = roi_fraction
        self.mode = mode
        self.seed = int(seed)
        self.resample = bool(resample)
        self.backward = check_backward(backward)
        self.control_match = control_match
        self.calls = 0
        self._selection_cache: _Cached | None = None
        self.oracle_region: torch.Tensor | None = None
        self.last_region: torch.Tensor | None = None
        self.last_selection: RegionSelection | None = None

    # -- regions -----------------------------------------------------------------
    def select(self, x: torch.Tensor, sample_ids: torch.Tensor | None = None) -> RegionSelection:
        """RoI, RoA and N for images x, from the map callables on x alone.

        The last selection is reused when called again on equal images and ids:
        an EOT attacker evaluates a randomized control several times at one
        point, and the maps (the costly part) do not depend on the draw.
        """
        key = None if sample_ids is None else sample_ids_or_range(x.shape[0], sample_ids)
        if self._selection_cache is not None and self._selection_cache.holds(x, key):
            return self._selection_cache.selection
        # computed as map_pair_of/map_of compute them; select_regions reads their values, with its ties, at once
        if self.maps_fn is not None:
            importance, vulnerability = _computed(self.maps_fn, x)
        else:
            importance, vulnerability = _computed(self.importance_fn, x), _computed(self.vulnerability_fn, x)
        importance, vulnerability = _checked_map(importance, x, read=False), _checked_map(vulnerability, x, False)
        selection = select_regions(importance, vulnerability, self.fraction, roi_fraction=self.roi_fraction,
                                   seed=self.seed, binarize=self.binarize, sample_ids=sample_ids)
        self._selection_cache = _Cached(x.detach().clone(), key, selection, x.detach(), _version(x))
        return selection

    #: an attack passes its rows' sample ids to every call (:func:`~advspatial.attacks.base.call_keyed`)
    keys_draws_by_id = True

    @property
    def randomized(self) -> bool:
        """True when two forward passes on the same input may differ (attack it with EOT)."""
        return self.mode == "random" and self.resample

    def region(self, x: torch.Tensor, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The region the current mode neutralizes on x (advances :attr:`calls` in random mode); image i's ties
        and draws keyed by ``sample_ids[i]`` (default: its row)."""
        if self.mode == "oracle":
            if self.oracle_region is None:
                raise ConfigError("mode 'oracle' needs set_oracle_region(region) first, or use forward_with_region")
            return check_region(self.oracle_region, x)
        selection = self.select(x, sample_ids)
        self.last_selection = selection
        if self.mode == "defend":
            return selection.neutralized
        draw = ATTACK_DRAWS + self.calls if self.resample else 0
        self.calls += 1
        return self.control_region(x, selection, draw, sample_ids)

    def control_region(self, x: torch.Tensor, selection: RegionSelection, draw: int = 0,
                       sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Draw number ``draw`` of the random control: |N| pixels outside the RoI, matched on ``control_match``.

        The defence never touches the RoI, so neither does its control; image
        i's draw depends only on ``(seed, draw, sample_ids[i])``.
        """
        return self.control_regions(x, selection, (draw,), sample_ids)[0]

    def control_regions(self, x: torch.Tensor, selection: RegionSelection, draws: Sequence[int],
                        sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(D,N,H,W): :meth:`control_region` for each draw number in ``draws``, drawn together."""
        levels = {"foreground": 2, "change": CHANGE_LEVELS}.get(self.control_match)
        return random_regions_like(selection.neutralized, self.seed, within=~selection.roi,
                                   strata=self.strata(x, selection.neutralized), draws=draws, sample_ids=sample_ids,
                                   strata_levels=levels)

    def strata(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor | None:
        """The per-pixel strata the control is matched on (None for ``control_match="none"``)."""
        if self.control_match == "foreground":
            return foreground_strata(x)
        if self.control_match == "change":
            with torch.no_grad():
                return change_strata(x, self.fill_fn(x, torch.ones_like(region)), CHANGE_LEVELS)
        return None

    def set_oracle_region(self, region: torch.Tensor | None) -> None:
        """Fix the region used in ``oracle`` mode (e.g. from the true perturbation)."""
        self.oracle_region = None if region is None else region.detach()

    def reset(self) -> None:
        """Restart the random control's call counter (and forget the last region and selection)."""
        self.calls = 0
        self._selection_cache = None
        self.last_region = None
        self.last_selection = None

    def variant(self, mode: str | None = None, *, backward: str | None = None) -> NeutralizedModel:
        """The same defence in another mode and/or with another attacker's gradient (fresh counter)."""
        mode = self.mode if mode is None else mode
        if mode not in MODES:
            raise unknown_name("mode", mode, MODES)
        return NeutralizedModel(
            self.model, self.importance_fn, self.vulnerability_fn, self.fraction, self.fill_fn,
            roi_fraction=self.roi_fraction, mode=mode, seed=self.seed, resample=self.resample,
            binarize=self.binarize, backward=self.backward if backward is None else backward,
            control_match=self.control_match, maps_fn=self.maps_fn,
        )

    def with_backward(self, backward: str) -> NeutralizedModel:
        """The same defence with another attacker's gradient (``local`` or ``identity``)."""
        return self.variant(backward=backward)

    # -- forward -----------------------------------------------------------------
    def forward(self, x: torch.Tensor, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``model(fill(x, region(x)))``; with ``sample_ids`` (on the host) image i's attack-stream draw is keyed
        by its id, as an attack passes them (:func:`~advspatial.attacks.base.call_keyed`), else by its row."""
        return self.forward_with_region(x, self.region(x, sample_ids))

    def forward_draws(self, x: torch.Tensor, draws: int, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(draws, N, K) logits of the next ``draws`` forward passes in one batched call (EOT).

        Equal to ``draws`` calls of :meth:`forward` in a row: the same attack-stream draws (the counter
        advances by ``draws``; image i's keyed by ``sample_ids[i]``, default its row), the maps computed once
        (they do not depend on the draw), and the model run once on the stacked filled images. A deterministic
        mode repeats its one region.
        """
        check_range("draws", draws, 1)
        if not self.randomized:
            region = self.region(x, sample_ids)
            regions = [region] * int(draws)
        else:
            selection = self.select(x, sample_ids)
            self.last_selection = selection
            first = ATTACK_DRAWS + self.calls
            regions = list(self.control_regions(x, selection, range(first, first + int(draws)), sample_ids))
            self.calls += int(draws)
        stacked_x = x.repeat(int(draws), 1, 1, 1)
        stacked = torch.cat(regions).detach()
        self.last_region = regions[-1]
        logits = self.model(through(stacked_x, self.fill_fn(stacked_x, stacked), self.backward))
        return logits.view(int(draws), x.shape[0], -1)

    @torch.no_grad()
    def predict_draws(self, x: torch.Tensor, draws: int, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(N, draws) predicted classes; draw d of image i keyed by ``(seed, d, sample_ids[i])``.

        A deterministic defence gives one column (N, 1): every draw is the same.
        """
        if not self.randomized:
            return self(x).argmax(1)[:, None]
        selection = self.select(x, sample_ids=sample_ids)
        regions = self.control_regions(x, selection, range(int(draws)), sample_ids)
        # the draws do not depend on each other: one round (one call each on a CPU, stacked on a device)
        logits = forward_stacked(self.model, (self.fill_fn(x, region) for region in regions))
        return torch.stack([out.argmax(1) for out in logits], dim=1)

    def forward_backwards(self, x: torch.Tensor, identity: torch.Tensor,
                          sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`forward` of a deterministic mode with each row's own attacker's gradient: BPDA where the (N,) bool
        ``identity`` holds, else local (:func:`~.transforms.through_rows`)."""
        if self.randomized:
            raise ConfigError("a randomized defence takes its gradients one at a time (EOT)")
        region = check_region(self.region(x, sample_ids), x).detach()
        self.last_region = region
        return self.model(through_rows(x, self.fill_fn(x, region), identity))

    def forward_with_region(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """``model(fill(x, region))`` for an explicit (N,H,W) bool region (held constant)."""
        region = check_region(region, x).detach()
        self.last_region = region
        return self.model(through(x, self.fill_fn(x, region), self.backward))

    def extra_repr(self) -> str:
        return (f"fraction={self.fraction}, roi_fraction={self.roi_fraction}, mode={self.mode!r}, seed={self.seed}, "
                f"backward={self.backward!r}, control_match={self.control_match!r}")
