"""The fuzzing suite's shared budget and its one property (importable as ``fuzzing``: tests/ is on the path).

The property every fuzz test checks, at the level of the functions the CLI calls: an input either gives a
valid value, or raises an :class:`advspatial.errors.AdvspatialError` whose message is one line (the CLI
prints it as ``advspatial: error: ...`` and exits 2). Any other exception is a failure: the CLI would end
in a traceback.

Budget. By default every fuzz test runs a fixed number of derandomized examples (the same inputs every run,
so a failure is reproducible and the suite's time is stable). Stated budget: about 30 s of CPU for all of
tests/fuzz/; measured 32 s of CPU (user + system, imports included; 103 s wall, the machine busy) on this
project's 2-core machine: the damaged-run reports about 5 s (a tiny maps run of 2.5 s, then a re-render per example),
the resume property (with the model's data file, package and string-imported helper) about 5 s, the one subprocess
3-4 s, the small inputs (YAML aliases, plan options, the scripts and examples) about 3 s.
``ADVSPATIAL_FUZZ=K`` multiplies every test's examples by K and draws fresh random inputs (hypothesis'
database then keeps the failures it finds), e.g. ``ADVSPATIAL_FUZZ=20 pytest tests/fuzz`` for a deeper search of
several minutes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from hypothesis import HealthCheck, settings
from PIL import Image

from advspatial.errors import AdvspatialError

T = TypeVar("T")

#: ADVSPATIAL_FUZZ: the factor on every fuzz test's examples (1 by default: the suite's stated budget)
SCALE = max(1, int(os.environ.get("ADVSPATIAL_FUZZ", "1") or 1))


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings of a fuzz test: ``examples`` x :data:`SCALE` examples, no deadline (file
    systems and first imports are slow at times), derandomized unless a deeper search was asked for."""
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=SCALE == 1, database=None
                    if SCALE == 1 else settings.default.database,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


def valid_or_one_line(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``fn(*args, **kwargs)``, or None when it raised an AdvspatialError with a one-line message; any other
    exception propagates (the test fails with it), as does a message that is empty or spans lines."""
    try:
        return fn(*args, **kwargs)
    except AdvspatialError as exc:
        assert_one_line(str(exc))
        return None


def assert_one_line(message: str) -> None:
    """A user error's message: not empty, one line."""
    assert message.strip(), "an empty error message"
    assert "\n" not in message and "\r" not in message, f"a message of several lines: {message!r}"


def assert_cli_one_line(code: int, err: str) -> None:
    """The CLI's refusal: exit 2, one line on stderr starting with ``advspatial: error:``, no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("advspatial: error: "), err
    assert "Traceback" not in err


def image_of_mode(mode: str, width: int, height: int, seed: int) -> Image.Image:
    """A random image in Pillow ``mode``: 16/32-bit integer and float grey built from their own values (a float
    image partly outside [0, 1]), every other mode converted from random RGB."""
    rng = np.random.default_rng(seed)
    if mode in ("I;16", "I"):
        return Image.fromarray(rng.integers(0, 65536, (height, width))
                               .astype(np.uint16 if mode == "I;16" else np.int32))
    if mode == "F":
        return Image.fromarray(rng.uniform(-0.5, 1.5, (height, width)).astype(np.float32), mode="F")
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
