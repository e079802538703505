"""One plain sentence per comparison against a null: what was observed, the excess with its CI, what it means.

Why apart from the engine (:mod:`.inference`): the numbers are computed once there; the words that report
them (significant digits that keep two numbers apart, the p rule of :func:`~.verdicts.format_p`) are
presentation, used by reports and the CLI alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import unknown_name
from .inference import NullComparison
from .verdicts import VERDICT_CLAUSES, VERDICTS, format_p


def describe(comparison: NullComparison, verdict: str, p_adjusted: float | None = None) -> str:
    """One plain sentence: observed vs the null, the excess with its CI and z, then what it means.

    E.g. "iou: observed 0.107 is below the any-class null 0.116 (excess -0.009
    [-0.011, -0.007], z = -7.1, p = 0.0001, n = 1000): the attack avoids the RoI
    more than chance". A p-value appears only beside the effect, never alone
    (``p_adj`` when ``p_adjusted`` is given). Observed and null get as many
    significant digits (3 to 6) as it takes to tell them apart.
    """
    if verdict not in VERDICTS:
        raise unknown_name("verdict", verdict, VERDICTS)
    c = comparison
    e = c.excess
    side = "above" if c.observed > c.null_mean else "below" if c.observed < c.null_mean else "equal to"
    obs, null = _distinct(c.observed, c.null_mean)
    p_text = _p_text("p_adj", p_adjusted) if p_adjusted is not None else _p_text("p", c.p)
    name = f"{c.statistic}: " if c.statistic else ""
    return (f"{name}observed {obs} is {side} the {c.null or 'chance'} null {null} "
            f"(excess {e.mean:+.2g} [{e.low:+.2g}, {e.high:+.2g}], z = {c.z:.1f}, {p_text}, n = {c.n}): "
            f"{VERDICT_CLAUSES[verdict]}")


def how_many(count: int, noun: str) -> str:
    """``count`` and ``noun`` as a sentence says them: "1 forward call", "2,048 forward calls" (``noun`` singular,
    made plural by an "s").

    >>> how_many(1, "round"), how_many(2048, "round")
    ('1 round', '2,048 rounds')
    """
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def listed(items: Sequence[str]) -> str:
    """``items`` as a sentence lists them, for every sentence the package prints.

    >>> listed(["a"]), listed(["a", "b"]), listed(["a", "b", "c"])
    ('a', 'a and b', 'a, b and c')
    """
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _p_text(name: str, p: float) -> str:
    """'p = 0.003' or 'p < 1e-10' (:func:`format_p`)."""
    text = format_p(p)
    return f"{name} {text}" if text.startswith("<") else f"{name} = {text}"


def _distinct(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` with the fewest significant digits (3..6) that make them differ."""
    for digits in range(3, 7):
        sa, sb = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if sa != sb:
            break
    return sa, sb
