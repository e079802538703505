"""A reference run's work as the forecast reads it: followed between the reference runs' n, never below 0, and the
name of a stage group whose images a setting caps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
import pytest

from advspatial.experiments.stage_work import (
    SIZED_MARK, StageWork, counts_at, sized_group, sized_images, sized_setting, unsized,
)


def test_work_never_goes_below_zero() -> None:
    assert StageWork(((50, 40, 0, 1, 0), (100, 140, 0, 11, 0))).at(10) == (0.0, 0.0, 0.0, 0.0)


def test_work_follows_the_reference_runs_and_keeps_the_bend_of_a_cap() -> None:
    capped = StageWork(((50, 500, 0, 5, 0), (100, 1000, 0, 10, 0), (400, 1000, 0, 10, 0)))  # on min(n, 100) images
    assert capped.at(50) == (500.0, 0.0, 5.0, 0.0) and capped.at(75) == (750.0, 0.0, 7.5, 0.0)
    assert capped.at(100) == capped.at(250) == capped.at(2000) == (1000.0, 0.0, 10.0, 0.0)  # flat past the cap
    assert capped.at(20) == (200.0, 0.0, 2.0, 0.0)  # below the first run: its segment continued
    assert StageWork(((100, 7, 3, 1, 1),)).at(5000) == (7.0, 3.0, 1.0, 1.0)  # one run: constant


def test_past_the_last_run_a_falling_count_holds_and_a_rising_one_follows_its_segment() -> None:
    work = StageWork(((200, 27400, 18000, 307, 190), (400, 6850, 4500, 85, 50)))  # a gate deciding sooner
    assert work.at(467) == work.at(5000) == (6850.0, 4500.0, 85.0, 50.0)  # the segment continued: 0 from n = 467
    assert work.at(300) == (17125.0, 11250.0, 196.0, 120.0)  # between the runs: on the segment as before
    assert work.at(100) == (37675.0, 24750.0, 418.0, 260.0)  # before the first run: the segment continued
    rising = StageWork(((200, 100, 0, 1, 0), (400, 300, 0, 3, 0)))
    assert rising.at(800) == (700.0, 0.0, 7.0, 0.0)


def test_a_sized_group_reads_the_mean_of_its_runs_whatever_the_n_and_any_other_group_follows_n() -> None:
    work = StageWork(((50, 245.52, 139.84, 11095, 6050), (100, 140.48, 68.88, 5369, 2020),
                      (500, 661.38, 347.74, 11100, 6055)))  # spatial's JPEG baseline per image of 50: noise in n
    mean = pytest.approx(((245.52 + 140.48 + 661.38) / 3, (139.84 + 68.88 + 347.74) / 3, 27564 / 3, 14125 / 3))
    assert work.typical() == mean
    for n in (20, 100, 500, 10_000):
        assert counts_at(sized_group("baselines/jpeg", "adaptive_n"), work, n) == mean
        assert counts_at("baselines/jpeg", work, n) == work.at(n)


@given(st.lists(st.integers(1, 2000), min_size=2, max_size=5, unique=True),
       st.lists(st.floats(0, 1e6), min_size=5, max_size=5), st.integers(1, 5000))
def test_work_between_two_reference_runs_lies_between_their_counts(ns, counts, n) -> None:
    ns = sorted(ns)
    work = StageWork(tuple((m, *(c * (i + 1) for c in counts[:4])) for i, m in enumerate(ns)))
    at = work.at(n)
    for m, point in zip(ns, work.points, strict=True):  # exact at each run's n
        assert work.at(m) == pytest.approx(point[1:])
    if ns[0] <= n <= ns[-1]:
        right = next(i for i, m in enumerate(ns) if m >= n)
        low, high = work.points[max(right - 1, 0)][1:], work.points[right][1:]
        assert all(min(a, b) - 1e-6 <= v <= max(a, b) + 1e-6 for v, a, b in zip(at, low, high, strict=True))


@given(st.from_regex(r"[a-z]+(/[a-z@0-9-]+){0,3}", fullmatch=True), st.from_regex(r"[a-z_]+", fullmatch=True))
def test_a_sized_group_names_its_setting_and_a_plain_group_none(group: str, setting: str) -> None:
    assert sized_setting(sized_group(group, setting)) == setting
    assert sized_setting(group) is None and SIZED_MARK not in group
    assert unsized(sized_group(group, setting)) == unsized(group) == group


@pytest.mark.parametrize(("n", "cap", "batch_size", "expected"), [
    (300, 50, 100, (50, 1)), (300, 100, 50, (100, 2)), (20, 100, 50, (20, 1)), (300, None, 100, (300, 3)),
    (250, 250, 100, (250, 3)),
])
def test_a_sized_stage_runs_on_the_capped_images_in_the_batches_they_fill(n, cap, batch_size, expected) -> None:
    assert sized_images(n, cap, batch_size) == expected
