"""How often the faithfulness gate's interim looks change its verdict, on resampled real gate columns.

The gate's comparisons are computed look by look (:mod:`advspatial.faithfulness.sequential`: looks at 50, 100, 200,
... images, an interim decision when an effect passes |z| >= 3.29) instead of on every planned image. This script
measures what that costs in verdicts and saves in images, gate by gate, from the per-image columns a finished run
cached (``stages/gate/**/f*-compared/`` or ``...-looks*/``):

- each gate's images (the correctly classified ones) are resampled with replacement, whole rows at once, so every
  comparison keeps its real distribution and its correlation with the others;
- each effect is shifted to a common standardized size ``tau`` (its mean = tau standard errors of the planned
  sample; ``--taus``) or left as observed (``observed``), the effect sizes at which a verdict is hardest;
- per resample, the sequential verdict (interim looks, then the fixed rule) is compared with the fixed rule on all
  planned images (every effect's 95% BCa bootstrap CI above 0, as the gate applies it).

Prints and writes (``--output``, default ``benchmarks/results/gate_sequential.json``) the disagreement rate and the
mean share of images examined per gate and tau. Not a test. Example::

    python benchmarks/gate_sequential.py RUN_DIR [RUN_DIR ...] --repeats 400
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advspatial.faithfulness.gate import comparison_differences
from advspatial.faithfulness.sequential import INTERIM_Z, interim_decision, look_sizes
from advspatial.statistics.estimates import bootstrap_mean_ci

RESULTS = Path(__file__).resolve().parent / "results" / "gate_sequential.json"


def gate_columns(run: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every gate of a run: {gate directory: {effect: per-image differences on its correct images}}."""
    gates: dict[str, dict[str, np.ndarray]] = {}
    for folder in sorted((run / "stages" / "gate").rglob("f*-n*-*")):
        if not folder.is_dir():
            continue
        parts: dict[str, list[torch.Tensor]] = {}
        for file in sorted(folder.glob("batch-*.pt")):
            cols = torch.load(file, map_location="cpu", weights_only=True)["value"]
            kept = cols["clean:correct"].bool()
            for name, value in cols.items():
                parts.setdefault(name, []).append(value[kept])
        merged = {k: torch.cat(v) for k, v in parts.items()}
        effects = {f"{c}/{m}": d.double().numpy() for c, measures in comparison_differences(merged).items()
                   for m, d in measures.items()}
        gates[str(folder.relative_to(run / "stages" / "gate"))] = effects
    return gates


def fixed_passes(matrix: np.ndarray) -> bool:
    """The gate's fixed rule on its effects: every column's 95% BCa CI above 0."""
    return all(bootstrap_mean_ci(matrix[:, j]).low > 0 for j in range(matrix.shape[1]))


def sequential_passes(matrix: np.ndarray, looks: tuple[int, ...], names: list[str]) -> tuple[bool, int]:
    """(verdict, images examined) with the interim looks; the images are the rows in order (all correct here)."""
    for size in looks[:-1]:
        diffs = {name: {"d": torch.from_numpy(matrix[:size, j])} for j, name in enumerate(names)}
        decision = interim_decision(diffs, size, 30, INTERIM_Z)
        if decision.verdict == "fails":
            return False, size
        if decision.verdict == "passes" and fixed_passes(matrix[:size]):
            return True, size
    return fixed_passes(matrix[: looks[-1]]), looks[-1]


def simulate(effects: dict[str, np.ndarray], tau: float | None, repeats: int, seed: int) -> dict[str, Any]:
    names = list(effects)
    matrix = np.column_stack([effects[k] for k in names])
    matrix = matrix[np.isfinite(matrix).all(1)]
    planned = matrix.shape[0]
    if tau is not None:  # every effect at tau standard errors of the planned sample
        sd = matrix.std(0, ddof=1)
        matrix = matrix - matrix.mean(0) + tau * sd / math.sqrt(planned)
    looks = look_sizes(planned)
    rng = np.random.default_rng(seed)
    differ, examined, passes = 0, 0, 0
    for _ in range(repeats):
        sample = matrix[rng.integers(0, planned, planned)]
        verdict, used = sequential_passes(sample, looks, names)
        fixed = fixed_passes(sample)
        differ += verdict != fixed
        examined += used
        passes += fixed
    return {"tau": "observed" if tau is None else tau, "n": planned, "looks": list(looks), "repeats": repeats,
            "disagreement": differ / repeats, "fixed_pass_rate": passes / repeats,
            "examined_share": examined / (repeats * planned)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--taus", default="observed,1,2,3", help="comma-separated; 'observed' leaves the effects")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    taus = [None if t == "observed" else float(t) for t in args.taus.split(",")]
    rows = []
    for run in args.runs:
        for gate, effects in gate_columns(run).items():
            for tau in taus:
                started = time.perf_counter()
                row = {"run": str(run), "gate": gate, **simulate(effects, tau, args.repeats, args.seed)}
                row["seconds"] = round(time.perf_counter() - started, 1)
                rows.append(row)
                print(f"{run.name:>12} {gate:<40} tau {str(row['tau']):>8}: n {row['n']}, disagreement "
                      f"{row['disagreement']:.4f}, fixed passes {row['fixed_pass_rate']:.3f}, "
                      f"images examined {row['examined_share']:.2f}", flush=True)
    worst = max(r["disagreement"] for r in rows) if rows else math.nan
    print(f"worst disagreement {worst:.4f} over {len(rows)} gate x tau cells")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"bound": INTERIM_Z, "rows": rows, "worst": worst}, indent=1) + "\n")


if __name__ == "__main__":
    main()
