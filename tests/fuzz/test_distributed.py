"""Fuzzing the environment advspatial reads (distributed.py, environment.env_int/env_hours, the image pixel cap):
RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_PORT, ADVSPATIAL_THREADS, ADVSPATIAL_DIST_TIMEOUT_HOURS
and ADVSPATIAL_MAX_IMAGE_PIXELS of any text give a consistent world, thread count, timeout and cap, or a
one-line ConfigError. Nothing here joins a process group. Budget and profiles: tests/fuzzing.py."""

from __future__ import annotations

import os
from unittest import mock

from fuzzing import fuzz_settings, valid_or_one_line
from hypothesis import example, given
from hypothesis import strategies as st

from advspatial import distributed
from advspatial.data.imagefolder import max_image_pixels

VARIABLES = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR",
             "ADVSPATIAL_THREADS", "ADVSPATIAL_DIST_TIMEOUT_HOURS", "ADVSPATIAL_MAX_IMAGE_PIXELS"]

_env_value = st.one_of(
    st.integers(-3, 5).map(str), st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["", " ", "abc", "1.5", "1e3", "0x10", "+2", "-0", " 2 ", "٣", "inf", "nan", "99999",
                     "99999999999", "65536", "127.0.0.1", "2\n"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6),
)
_environment = st.dictionaries(st.sampled_from(VARIABLES), _env_value, max_size=len(VARIABLES))


def check_environment(env: dict[str, str]) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        world = valid_or_one_line(distributed.environment_world)
        if world is not None:
            assert 1 <= world.size and 0 <= world.rank < world.size
            assert 1 <= world.local_size <= world.size and 0 <= world.local_rank < world.local_size
            threads = valid_or_one_line(distributed.threads_per_process, world)
            assert threads is None or 1 <= threads <= 4 * (os.cpu_count() or 1)
        hours = valid_or_one_line(distributed.timeout)
        assert hours is None or hours.total_seconds() >= 1
        cap = valid_or_one_line(max_image_pixels)
        assert cap is None or cap >= 1


@fuzz_settings(300)
@given(_environment)
@example({"RANK": "5", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533"})  # a hang
@example({"WORLD_SIZE": "2"})  # WORLD_SIZE without RANK
@example({"ADVSPATIAL_THREADS": "99999"})  # a segmentation fault
@example({"ADVSPATIAL_DIST_TIMEOUT_HOURS": "99999999999"})  # OverflowError at import
@example({"ADVSPATIAL_MAX_IMAGE_PIXELS": "9" * 40})
@example({"ADVSPATIAL_DIST_TIMEOUT_HOURS": "1e-12"})  # found: a timeout that rounded to zero seconds
def test_environment_gives_a_world_or_one_line(env: dict[str, str]) -> None:
    check_environment(env)
