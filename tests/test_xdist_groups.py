"""The suite's xdist groups reach the scheduler.

``make test`` runs ``pytest -n 2 --dist loadgroup``: the torchrun tests share the group ``distributed`` so that one
runs at a time (each starts processes of its own), and a module whose fixture makes a whole run (the spatial run, the
docs site) keeps its tests on one worker so that the fixture is made once. xdist marks a grouped test by appending
``@group`` to its node id; where that append has no effect (pytest 9.2 with pytest-xdist 3.8), every group is
silently ignored and the suite takes minutes longer. This test fails then, instead of the suite growing slower.
"""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("distributed")
def test_a_grouped_test_carries_its_group_to_the_scheduler(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by pytest-xdist with --dist loadgroup (make test runs it so)")
    assert request.node.nodeid.endswith("@distributed"), (
        f"xdist's --dist loadgroup ignores the xdist_group marks here (node id {request.node.nodeid!r}): "
        "a pytest and pytest-xdist that work together are pinned in pyproject.toml's test extra")
