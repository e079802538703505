"""Error rates and power of the three-outcome rules, by simulation (statistics/outcomes.py).

Each cell draws ``--repeats`` samples of per-image paired differences, judges every sample with the rule the gate
uses (:func:`advspatial.statistics.outcomes.decide`: 95% BCa CI for *beats* / *does less*, 90% CI against the margin
for *not better* / *equivalent*), and reports the share of each outcome:

- **null** (a map equal in truth to a reference: true mean 0) at n = 50, 100, 200, 500: how often *beats* reads
  (nominal at most 2.5%, the 95% CI's lower tail);
- **power** at Cohen's d = 0.1, 0.2, 0.3, 0.5 and the n that :func:`~advspatial.statistics.outcomes.images_to_decide`
  projects for 80% power: how often *beats* reads (nominal about 80%);
- **margin** (a true difference equal to the margin, here 0.3 sd) at n = 50, 100, 200, 500: how often a specificity
  row reads the same damage (*equivalent*, or *beats* flagged "within the margin", which takes its place once the
  95% CI clears 0) and how often a faithfulness row reads *not better* (nominal at most 5% each; *not better*
  gives way to *beats* the same way, so its rate falls with n).

Three shapes of differences: normal, Student t with 3 degrees of freedom (heavy tails) and a centred lognormal
(skewed, as the capped margin shares and deletion drops are). Prints a table and writes
``benchmarks/results/gate_calibration.json``. Not a test (tests/statistics/test_outcomes.py is its fast version).
Example::

    python benchmarks/gate_calibration.py --repeats 2000
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from advspatial.statistics.outcomes import (
    BEATS, FAITHFULNESS, NOT_BETTER, SAME_DAMAGE, SPECIFICITY, UNDECIDED, Decision, images_to_decide,
    simulated_outcomes,
)

RESULTS = Path(__file__).resolve().parent / "results" / "gate_calibration.json"
Draw = Callable[[np.random.Generator, int], np.ndarray]


def shape(name: str, mean: float) -> Draw:
    """Differences of standard deviation 1 and the given mean, in one of three shapes."""
    if name == "normal":
        return lambda rng, n: rng.normal(mean, 1.0, n)
    if name == "t3":
        return lambda rng, n: mean + rng.standard_t(3, n) / math.sqrt(3.0)
    sigma = 0.8  # lognormal, centred and scaled to sd 1
    centre, spread = math.exp(sigma ** 2 / 2), math.sqrt((math.exp(sigma ** 2) - 1) * math.exp(sigma ** 2))
    return lambda rng, n: mean + (rng.lognormal(0.0, sigma, n) - centre) / spread


def projected(d: float) -> int:
    """The images at which *beats* has 80% power at Cohen's d ``d`` (the report's projection)."""
    return int(images_to_decide(Decision(SPECIFICITY, UNDECIDED, d, -1, 1, -1, 1, 1.0, 10, 0.0)).images)


def cells(repeats: int, only: str | None = None) -> list[dict[str, Any]]:
    return [cell for name in ("normal", "t3", "lognormal") for cell in shape_cells(name, repeats, only)]


def shape_cells(name: str, repeats: int, only: str | None) -> list[dict[str, Any]]:
    """The cells of one shape of differences (``only``: one kind of cell)."""
    out = []
    for n in (50, 100, 200, 500) if only in (None, "null") else ():
        rates = simulated_outcomes(shape(name, 0.0), SPECIFICITY, 0.3, n, repeats, seed=n)
        out.append({"cell": "null", "shape": name, "d": 0.0, "n": n, "rate": rates[BEATS], "outcome": BEATS,
                    "nominal": "<= 0.025"})
    for d in (0.1, 0.2, 0.3, 0.5) if only in (None, "power") else ():
        n = projected(d)
        rates = simulated_outcomes(shape(name, d), SPECIFICITY, 0.0, n, repeats, seed=int(100 * d))
        out.append({"cell": "power", "shape": name, "d": d, "n": n, "rate": rates[BEATS], "outcome": BEATS,
                    "nominal": "~ 0.80"})
    for n in (50, 100, 200, 500) if only in (None, "margin") else ():
        for rule, outcome in ((SPECIFICITY, SAME_DAMAGE), (FAITHFULNESS, NOT_BETTER)):
            rates = simulated_outcomes(shape(name, 0.3), rule, 0.3, n, repeats, seed=7 * n)
            out.append({"cell": "margin", "shape": name, "d": 0.3, "n": n, "rate": rates[outcome],
                        "outcome": outcome, "nominal": "<= 0.05"})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--only", choices=("null", "power", "margin"), help="run one kind of cell, merged into "
                        "the stored results")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = cells(args.repeats, args.only)
    for r in rows:
        print(f"{r['cell']:<7} {r['shape']:<10} d={r['d']:<4} n={r['n']:<5} {r['outcome']:<11} {r['rate']:.4f} "
              f"(nominal {r['nominal']})")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.only and args.output.is_file():
        kept = [c for c in json.loads(args.output.read_text())["cells"] if c["cell"] != args.only]
        rows = kept + rows
    args.output.write_text(json.dumps({"repeats": args.repeats, "seconds": time.perf_counter() - start,
                                       "cells": rows}, indent=2))
    print(f"wrote {args.output} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
