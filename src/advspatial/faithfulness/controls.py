"""The gate's positive control: a map faithful by construction to the gate's own measure.

A gate that no map can pass says nothing about the map it fails. So beside the explainer, on the same images and
at the same fraction, the gate measures a map built to do exactly what deletion rewards: occlusion under the gate's
own blur fill (:func:`occlusion_control`): each pixel's mean drop of the true-class logit when a window around it is
blurred (the fill the deletion rows use; :func:`~advspatial.faithfulness.deletion.deletion_blur_sigma`), windows
and strides of :func:`~advspatial.maps.importance.occlusion.occlusion_geometry`.

The restricted attack has no control: at its calibrated budget it reads first-order gradient mass
(:data:`~advspatial.faithfulness.record.GRADIENT_MASS`), whose region of largest mass is the margin gradient's top
region by definition, so a control built from that gradient would beat every comparison whatever the model does
(docs/methods.md, "What the restricted-attack row measures").

The control's top region, its shape at a random place and as many scattered pixels (:func:`control_regions`) are
measured like the map's (column tags :func:`control_tag`), and read by the faithfulness rule. Where the control
does not beat a comparison, no map could be shown faithful there by this gate on this model and data: the map's
result on that cell reads *cannot judge* (:class:`~advspatial.faithfulness.record.Cell`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..maps.importance.occlusion import occlusion_map
from ..runtime import sample_ids_or_range
from .deletion import control_region, make_deletion_fill, roi_mask

#: the controls and the measures each is faithful to by construction: ``deletion`` (every deletion fill)
CONTROL_MEASURES = {"deletion": "deletion"}
#: what each control map is, in the report's words
CONTROL_WORDS = {"deletion": "occlusion under the gate's blur fill"}


def control_tag(kind: str, region: str = "") -> str:
    """The column tag of control ``kind``'s region (``control-deletion``) or of one of its comparison regions
    (``control-deletion-shifted``)."""
    return f"control-{kind}" + (f"-{region}" if region else "")


def occlusion_control(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
                      sample_ids: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
    """(N,H,W) occlusion map of the true class where the occluded window is replaced by the image's blurred copy
    (the gate's blur fill)."""
    ids = sample_ids_or_range(x.shape[0], sample_ids)  # type: ignore[arg-type]
    blur = make_deletion_fill("blur", {}, x, seed, ids)
    blurred = blur(x, torch.ones(x.shape[0], *x.shape[2:], dtype=torch.bool, device=x.device))
    return occlusion_map(model, x, y, baseline=blurred.detach())


def control_maps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
                 sample_ids: torch.Tensor | Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """The control maps of a batch: ``{"deletion": occlusion under blur}``."""
    return {"deletion": occlusion_control(model, x, y, seed, sample_ids)}


def control_regions(maps: dict[str, torch.Tensor], fraction: float, seed: int = 0,
                    sample_ids: torch.Tensor | Sequence[int] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Per control kind, its regions by column tag: its top ``fraction`` (the same rule as the RoI's), its shape at
    a random place and as many scattered pixels."""
    out = {}
    for kind, imp in maps.items():
        ids = sample_ids_or_range(imp.shape[0], sample_ids)  # type: ignore[arg-type]
        top = roi_mask(imp, fraction, seed, ids)
        out[kind] = {control_tag(kind): top,
                     **{control_tag(kind, c): control_region(top, c, seed, ids) for c in ("shifted", "scattered")}}
    return out
