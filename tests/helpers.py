"""Helpers shared by several test modules (importable as ``helpers``: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

from html.parser import HTMLParser

import torch
from torch import nn


class ReportParser(HTMLParser):
    """Collects the section ids and image sources of an advspatial HTML report."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:  # type: ignore[override]
        found = dict(attrs)
        if tag == "section":
            self.sections.append(found.get("id", ""))
        if tag == "img":
            self.images.append(found.get("src", ""))


def intensity_map(x: torch.Tensor) -> torch.Tensor:
    """A map that needs no model: the image's intensity summed over channels."""
    return x.sum(1)


def grad_map(model: nn.Module):  # type: ignore[no-untyped-def]
    """A deployable vulnerability map that needs autograd: |d max-logit / dx| summed over channels."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).amax(1).sum(), x)
        return g.abs().sum(1)

    return fn
