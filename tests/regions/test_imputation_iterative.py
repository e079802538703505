"""ROAD's fill solved on the images' device by conjugate gradients: the exact LU, to 1e-8 (against the dense
per-image reference: tests/regions/test_imputation.py, parametrized over both solvers)."""

from __future__ import annotations

import functools
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from advspatial import host_syncs
from advspatial.errors import ConfigError
from advspatial.regions import imputation_iterative
from advspatial.regions.imputation import linear_imputation


def _blobs(n: int, side: int, fraction: float, cells: int, seed: int) -> torch.Tensor:
    """(n, side, side) regions: the top ``fraction`` of a random ``cells`` x ``cells`` map upsampled (one or a few
    large blobs, as a class activation map's top fraction)."""
    gen = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(n, 1, cells, cells, generator=gen), size=(side, side), mode="bilinear",
                           align_corners=False)[:, 0]
    return smooth >= smooth.flatten(1).quantile(1 - fraction, dim=1)[:, None, None]


@pytest.mark.parametrize("side,fraction,cells", [(32, 0.5, 4), (224, 0.5, 7)])
def test_large_contiguous_regions_converge_to_the_exact_fill(side, fraction, cells):
    """A class activation map's top half of a 224-pixel image, the hardest case seen (about 500 steps)."""
    x = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    region = _blobs(2, side, fraction, cells, seed=2)
    exact = linear_imputation(x, region, solver="exact")
    iterative = linear_imputation(x, region, solver="iterative")
    assert float((iterative - exact).abs().max()) < 1e-8


def test_each_image_is_filled_as_alone_whatever_its_batch():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(5, 3, 20, 17, generator=gen, dtype=torch.float64)
    region = torch.rand(5, 20, 17, generator=gen) < 0.6
    region[1], region[3] = True, False
    batched = linear_imputation(x, region, solver="iterative")
    for i in range(5):
        alone = linear_imputation(x[i:i + 1], region[i:i + 1], solver="iterative")
        assert float((alone - batched[i:i + 1]).abs().max()) < 1e-12
    assert torch.equal(batched[1], torch.zeros_like(batched[1])) and torch.equal(batched[3], x[3])


@pytest.mark.parametrize("max_steps,check_every", [(2, 1), (3, 2)])  # the limit a check, or a step after one
def test_systems_not_converged_within_the_step_limit_take_the_exact_fill_and_gradient(monkeypatch, max_steps,
                                                                                     check_every):
    monkeypatch.setattr(imputation_iterative, "MAX_STEPS", max_steps)
    monkeypatch.setattr(imputation_iterative, "FIRST_CHECK", check_every)
    monkeypatch.setattr(imputation_iterative, "CHECK_EVERY", check_every)
    x = torch.rand(3, 2, 12, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64,
                   requires_grad=True)
    region = _blobs(3, 12, 0.5, 3, seed=5)
    region[2] = False  # nothing to solve: converged at once, kept as it is
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    exact = linear_imputation(x, region, solver="exact")
    (exact_grad,) = torch.autograd.grad(exact, x, upstream)
    fallback = linear_imputation(x, region, solver="iterative")
    (fallback_grad,) = torch.autograd.grad(fallback, x, upstream)
    assert torch.equal(fallback, exact) and torch.equal(fallback_grad, exact_grad)


def test_the_solve_reads_the_host_once_per_check_and_keeps_float32():
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    region = _blobs(4, 32, 0.3, 4, seed=8)
    reads: list[int] = []
    with host_syncs.counting(lambda: reads.append(1)):
        out = linear_imputation(x, region, solver="iterative")
    assert out.dtype == torch.float32
    steps = imputation_iterative.MAX_STEPS
    assert 1 <= len(reads) <= steps // imputation_iterative.CHECK_EVERY
    assert float((out - linear_imputation(x, region, solver="exact")).abs().max()) < 1e-6


def test_a_solve_that_stops_at_its_only_check_reads_the_host_once_each_way_as_the_exact_fill(monkeypatch):
    """The check that stops the solve says every system converged: forward and backward read nothing more."""
    monkeypatch.setattr(imputation_iterative, "FIRST_CHECK", imputation_iterative.MAX_STEPS)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(7), requires_grad=True)
    region = _blobs(4, 32, 0.3, 4, seed=8)
    counts: dict[str, list[str]] = {"iterative": [], "exact": []}
    for solver, reads in counts.items():
        with host_syncs.counting(functools.partial(reads.append, "forward")):
            out = linear_imputation(x, region, solver=solver)
        with host_syncs.counting(functools.partial(reads.append, "backward")):
            torch.autograd.grad(out.sum(), x)
    assert counts["iterative"] == counts["exact"] == ["forward", "backward"]


def test_an_unknown_solver_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="unknown solver 'lu'; valid: auto, exact, iterative"):
        linear_imputation(torch.rand(1, 1, 3, 3), torch.zeros(1, 3, 3, dtype=torch.bool), solver="lu")


def test_a_devices_path_forced_on_the_cpu_solves_as_a_gpu_does(monkeypatch):
    """The ledger of a run on a device's path forced on the CPU (benchmarks/device_path.py) counts the reads of the
    GPU's solver, not the LU's: the default solver follows the path, not the device."""
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    region = _blobs(2, 16, 0.3, 3, seed=10)
    solves: list[bool] = []
    solve = imputation_iterative.RegionSystems.solve
    monkeypatch.setattr(imputation_iterative.RegionSystems, "solve",
                        lambda self, b: solves.append(host_syncs.DEVICE_PATH_ON_CPU) or solve(self, b))
    for device_path in (True, False):
        monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", device_path)
        linear_imputation(x, region)
    assert solves == [True]


class _WholeImageOperations(TorchDispatchMode):
    """Counts the operators that write a tensor as large as the systems (each a launch over every pixel on a device;
    views and the per-system scalars not counted)."""

    def __init__(self, elements: int) -> None:
        super().__init__()
        self.elements, self.count = elements, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if (isinstance(out, torch.Tensor) and out.numel() >= self.elements
                and not func._schema.name.endswith(("view", "slice", "unsqueeze", "expand", "alias"))):
            self.count += 1
        return out


def test_a_step_of_the_solve_makes_sixteen_passes_over_the_images(monkeypatch):
    """The device's cost of a step: a launch per operator, each reading and writing every pixel of the stack.
    Sixteen (the stencil seven, the matrix three more, two dot products of two, three updates in place, the
    preconditioner one); the stencil's eight shifted slices added one by one, and the masks applied again, took
    thirty-two."""
    monkeypatch.setattr(imputation_iterative, "FIRST_CHECK", 10**6)
    region = _blobs(3, 16, 0.3, 3, seed=11)
    systems = imputation_iterative.RegionSystems(region)
    b = systems.right_hand_side(torch.rand(3, 2, 16, 16, generator=torch.Generator().manual_seed(12),
                                           dtype=torch.float64))
    counts = []
    for steps in (4, 9):
        monkeypatch.setattr(imputation_iterative, "MAX_STEPS", steps)
        with _WholeImageOperations(b.numel()) as counted:
            systems.solve(b)
        counts.append(counted.count)
    assert (counts[1] - counts[0]) / 5 == 16


def test_images_whose_systems_all_stopped_leave_the_loop_at_a_check(monkeypatch):
    """A batch of an easy image (a few scattered pixels) and a hard one (half of a 48-pixel image, one blob): after
    the check that stops the easy one (one of the fixed steps of :func:`check_steps`), the steps hold the hard one
    alone; each gets the fill it gets alone (the easy one to the bit: the checks fall on those steps whatever the
    batch)."""
    monkeypatch.setattr(imputation_iterative, "FIRST_CHECK", 7)
    monkeypatch.setattr(imputation_iterative, "CHECK_EVERY", 5)
    gen = torch.Generator().manual_seed(13)
    x = torch.rand(2, 3, 48, 48, generator=gen, dtype=torch.float64)
    region = torch.zeros(2, 48, 48, dtype=torch.bool)
    region[0] = torch.rand(48, 48, generator=gen) < 0.02
    region[1] = _blobs(1, 48, 0.5, 2, seed=14)[0]
    rows: list[int] = []
    step = imputation_iterative._Solving.step
    monkeypatch.setattr(imputation_iterative._Solving, "step", lambda self: rows.append(len(self.u)) or step(self))
    both = linear_imputation(x, region, solver="iterative")
    first, every = imputation_iterative.check_steps(48)
    assert (first, every) == (9, 6)  # 7 and 5 scaled by the square root of 48 / 32
    assert rows[0] == 2 and rows[-1] == 1 and (rows.count(2) - first) % every == 0 and rows.count(1) > rows.count(2)
    assert torch.equal(both[0], linear_imputation(x[:1], region[:1], solver="iterative")[0])
    for i in range(2):
        alone = linear_imputation(x[i:i + 1], region[i:i + 1], solver="iterative")
        assert float((alone - both[i:i + 1]).abs().max()) < 1e-12
    assert float((both - linear_imputation(x, region, solver="exact")).abs().max()) < 1e-8


def test_convergence_is_checked_at_the_first_check_every_few_steps_after_it_and_at_the_limit(monkeypatch):
    monkeypatch.setattr(imputation_iterative, "MAX_STEPS", 100)
    assert [s for s in range(1, 101) if imputation_iterative.is_check(s, 30, 15)] == [30, 45, 60, 75, 90, 100]


@pytest.mark.parametrize("side, first, every", [(8, 30, 15), (32, 30, 15), (128, 60, 30), (224, 79, 40)])
def test_the_checks_spread_as_the_square_root_of_the_image_side(side, first, every):
    """A solve's steps grow with the region's extent; the checks (read to the host) spread with the square root of
    it, never closer than at 32 pixels."""
    assert imputation_iterative.check_steps(side) == (first, every)
    assert imputation_iterative.RegionSystems(torch.zeros(1, side, side, dtype=torch.bool)).check_every == every
