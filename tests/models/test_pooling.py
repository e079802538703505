"""MaxPool2x2: nn.MaxPool2d(2)'s numbers and gradient, faster without autograd; the patch forward keeps using it.
A ReLU and a MaxPool2x2 commute exactly (values and input gradient), and only where nothing can tell the order."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import fx, nn

from advspatial.models.pooling import MaxPool2x2, PoolLeafTracer, commutes


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


@given(seed=st.integers(0, 10_000), h=st.integers(2, 9), w=st.integers(2, 9), ties=st.booleans(),
       nan=st.booleans(), grad=st.booleans())
@settings(max_examples=80, deadline=None)
def test_pooling_before_the_relu_gives_the_same_values_and_input_gradient(seed, h, w, ties, nan, grad):
    """Ties (rounded values: windows of equal maxima, windows of equal non-positive values), NaN, odd sides, both
    of MaxPool2x2's paths (with autograd and without)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, h, w, generator=generator)
    if ties:
        x = x.round()
    if nan:
        x[1, 2, 0, 1] = float("nan")
    relu, pool = nn.ReLU(), MaxPool2x2()
    upstream = torch.randn(2, 3, h // 2, w // 2, generator=generator)
    a, b = x.clone().requires_grad_(grad), x.clone().requires_grad_(grad)
    first, second = pool(relu(a)), relu(pool(b))
    assert torch.equal(first.isnan(), second.isnan())
    assert torch.equal(first.nan_to_num(), second.nan_to_num())
    if grad:
        first.backward(upstream)
        second.backward(upstream)
        assert torch.equal(a.grad, b.grad)


def test_they_commute_only_where_nothing_can_tell_the_order():
    relu, pool, x = nn.ReLU(), MaxPool2x2(), torch.rand(1, 2, 4, 4)
    assert commutes(relu, pool, x)
    assert not commutes(nn.LeakyReLU(), pool, x)
    assert not commutes(nn.ReLU(inplace=True), pool, x)  # it overwrites its input, which another module may hold
    assert not commutes(relu, nn.MaxPool2d(2), x)  # exactly MaxPool2x2: another pooling may compute something else
    for module in (relu, pool):
        handle = module.register_forward_hook(lambda *_a: None)
        assert not commutes(relu, pool, x)
        handle.remove()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *_a: None)
    try:
        assert not commutes(relu, pool, x)
    finally:
        handle.remove()
    graph = fx.Graph()
    assert not commutes(relu, pool, fx.Proxy(graph.placeholder("x")))
    assert commutes(relu, pool, x)


@pytest.mark.parametrize("kind", ["relu", "block"])
def test_an_fx_trace_keeps_the_relu_before_the_pooling(kind):
    """The incremental patch evaluation reads the modules in their order from the traced graph."""
    from advspatial.models.architectures import ConvBatchNormReLU, PoolBeforeReLU

    net = PoolBeforeReLU(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), MaxPool2x2()) if kind == "relu" \
        else PoolBeforeReLU(ConvBatchNormReLU(1, 2), MaxPool2x2())
    graph = PoolLeafTracer().trace(net.eval())
    targets = [str(n.target) for n in graph.nodes if n.op == "call_module"]
    assert targets == (["0", "1", "2"] if kind == "relu" else ["0.0", "0.1", "0.2", "1"])
