"""MaxPool2x2: nn.MaxPool2d(2)'s numbers and gradient, faster without autograd; the patch forward keeps using it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.models.pooling import MaxPool2x2, PoolLeafTracer


@given(seed=st.integers(0, 10_000), h=st.integers(2, 9), w=st.integers(2, 9), ties=st.booleans())
@settings(max_examples=60, deadline=None)
def test_equals_max_pool2d_without_autograd_including_ties_nan_and_odd_sides(seed, h, w, ties):
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(seed))
    if ties:
        x = x.round()  # many equal values in a window
    x[0, 0, 0, 0] = float("nan")
    with torch.no_grad():
        got, expected = MaxPool2x2()(x), F.max_pool2d(x, 2)
    assert got.shape == expected.shape
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got.nan_to_num(), expected.nan_to_num())


def test_gradient_is_max_pool2d_s_on_ties_too():
    x = torch.randn(2, 4, 6, 8, generator=torch.Generator().manual_seed(1)).round()
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    upstream = torch.randn(2, 4, 3, 4)
    MaxPool2x2()(a).backward(upstream)
    F.max_pool2d(b, 2).backward(upstream)
    assert torch.equal(a.grad, b.grad)


def test_the_tracer_keeps_it_as_a_module():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), MaxPool2x2())
    graph = PoolLeafTracer().trace(net)
    targets = [n.target for n in graph.nodes if n.op == "call_module"]
    assert targets == ["0", "1"]
