"""How often the faithfulness gate's interim looks change its verdict, on resampled real gate columns.

The gate's comparisons are computed look by look (:mod:`advspatial.faithfulness.sequential`: looks at 50, 100, 200,
... images; at an interim look a cell is decided by the bound |z| >= 3.29 in place of its CI) instead of on every
planned image. This script measures what that costs in verdicts and saves in images, gate by gate, from the
per-image columns a finished run cached: the gate's (``stages/gate/[TAG/]METHOD/f*-n*-compared/`` or ``...-looks*/``)
and its positive control's (``stages/gate/[TAG/]control/fFRACTION/``), on the correctly classified images:

- each gate's images are resampled with replacement, whole rows of columns at once, so every comparison keeps its
  real distribution and its correlation with the others and with the control;
- each of the map's cells (comparison x counted measure, :func:`~advspatial.faithfulness.gate.comparison_decisions`)
  is shifted to a common standardized size ``tau`` (its mean = tau standard errors of the planned sample;
  ``--taus``) or left as observed (``observed``), the effect sizes at which a verdict is hardest; the control's
  cells and every margin (a share of the RoI's own damage, ``equivalence_margin`` of the run's config.yaml) are
  computed from the resampled columns as the gate computes them;
- per resample, the gate's path is followed as a run follows it (``experiments/measurement/gate.py``): at each
  interim look :func:`~advspatial.faithfulness.sequential.interim_decision` with the control's cells, stopping on
  "fails", or on "decided" once the fixed rule on the images so far decides every cell (every faithfulness cell
  beating); the status of the comparisons it reports then (the fixed rule on the images it examined: passed,
  failed, cannot judge or undecided, the randomization row aside) is compared with the status on all planned
  images, and so is every cell's outcome (specificity rows included).

Prints and writes (``--output``, default ``benchmarks/results/gate_sequential.json``) per gate and tau the share
of resamples whose status differs (``disagreement``) and whose outcome of some cell differs
(``cell_disagreement``), the fixed rule's status counts and the mean share of images examined. Not a test.
Example::

    python benchmarks/gate_sequential.py RUN_DIR [RUN_DIR ...] --repeats 400
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from advspatial.faithfulness.gate import DEFAULT_MARGIN, MIN_N, comparison_decisions, control_cells
from advspatial.faithfulness.record import CANNOT_JUDGE, FAILED, GATE_UNDECIDED, PASSED, Cell
from advspatial.faithfulness.sequential import INTERIM_Z, interim_decision, look_sizes
from advspatial.files import load_torch_file
from advspatial.rundir import RunDir
from advspatial.statistics.outcomes import BEATS, FAITHFULNESS, NOT_BETTER, UNDECIDED, Decision, decide

RESULTS = Path(__file__).resolve().parent / "results" / "gate_sequential.json"


#: {comparison: {measure: (per-image differences, margin, rule)}}: the layout of the gate's cells
Cells = dict[str, dict[str, tuple[torch.Tensor, float, str]]]


def stage_columns(files: list[Path]) -> dict[str, torch.Tensor]:
    """The columns of stage files (each a dict of per-image columns under the stage header's ``value``; a file
    written before stage files carried a header is the dict itself), concatenated in the files' order."""
    parts: dict[str, list[torch.Tensor]] = {}
    for file in files:
        stored = load_torch_file(file, f"stage file {file} is unreadable", "give the folder of a finished run")
        value = stored["value"] if isinstance(stored, dict) and RunDir.STAGE_KEY in stored else stored
        if not isinstance(value, dict):
            raise SystemExit(f"{file}: not a stage of per-image columns")
        for key, column in value.items():
            parts.setdefault(key, []).append(torch.as_tensor(column).cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def gate_columns(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every gate of a run: {gate directory: its columns with its positive control's, on its correct images}."""
    root = run / "stages" / "gate"
    if not root.is_dir():
        raise SystemExit(f"{run} holds no gate stages ({root} is missing): give the folder of a finished run")
    gates: dict[str, dict[str, torch.Tensor]] = {}
    for folder in sorted(root.rglob("f*-n*-*")):
        if not folder.is_dir():
            continue
        columns = stage_columns(sorted(folder.glob("batch-*.pt")))
        # the control's columns of the same images, one file per chunk of the gate: images-START-STOP.pt
        control_dir = folder.parent.parent / "control" / folder.name.split("-n")[0]
        control = stage_columns(sorted(control_dir.glob("images-*.pt"), key=lambda f: int(f.stem.split("-")[1])))
        n = len(columns["clean:correct"])
        if control and any(len(v) != n for v in control.values()):
            print(f"{folder}: the control's columns cover other images than the gate's; left out")
            control = {}
        merged = {**columns, **control}
        kept = merged["clean:correct"].bool()
        gates[folder.relative_to(root).as_posix()] = {k: v[kept] for k, v in merged.items()}
    return gates


def run_settings(run: Path) -> tuple[float, int]:
    """(the rules' margin as a share of the RoI's own damage, the seed) of the run's config.yaml."""
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    return float(config.get("equivalence_margin", DEFAULT_MARGIN)), int(config.get("seed", 0))


def cells_at(columns: Mapping[str, torch.Tensor], size: int, margin: float, shift: Mapping[tuple[str, str], float]
             ) -> tuple[Cells, Cells]:
    """The map's cells (each shifted by ``shift``) and the positive control's, on the first ``size`` images."""
    head = {k: v[:size] for k, v in columns.items()}
    cells = {c: {m: (d + shift.get((c, m), 0.0), own, rule) for m, (d, own, rule) in row.items()}
             for c, row in comparison_decisions(head, margin).items()}
    return cells, control_cells(head, margin)


def decisions(cells: Cells, seed: int) -> dict[tuple[str, str], Decision]:
    """Every cell read by its row's rule (:func:`~advspatial.statistics.outcomes.decide`), as the gate reads it."""
    return {(c, m): decide(d, rule, own, seed) for c, row in cells.items() for m, (d, own, rule) in row.items()}


def status(cells: Cells, controls: Cells, n: int, seed: int) -> tuple[str, dict[tuple[str, str], str]]:
    """(the comparisons' status, every cell's outcome) by the fixed rule on these images, the randomization row
    aside: failed (a faithfulness cell not better where the control beats), undecided (a cell undecided, or fewer
    than ``MIN_N`` images), cannot judge (the map does not beat a cell the control does not beat either), else
    passed (:class:`~advspatial.faithfulness.record.Cell`)."""
    mine, control = decisions(cells, seed), decisions(controls, seed)
    readings = [Cell(c, m, d, control[c, m].outcome if (c, m) in control else None).reading
                for (c, m), d in mine.items() if d.rule == FAITHFULNESS]
    outcomes = {key: d.outcome for key, d in mine.items()}
    if NOT_BETTER in readings:
        return FAILED, outcomes
    if UNDECIDED in readings or not readings or n < MIN_N:
        return GATE_UNDECIDED, outcomes
    return (CANNOT_JUDGE if CANNOT_JUDGE in readings else PASSED), outcomes


def sequential_status(columns: Mapping[str, torch.Tensor], looks: tuple[int, ...], margin: float, seed: int,
                      shift: Mapping[tuple[str, str], float]) -> tuple[str, dict[tuple[str, str], str], int]:
    """(status, cell outcomes, images examined) of the gate in looks: stopped at the first interim look that fails,
    or that decides with the fixed rule on the images so far deciding every cell (every faithfulness cell beats);
    else the last look. The images are the rows in order (all correctly classified here)."""
    for size in looks[:-1]:
        cells, controls = cells_at(columns, size, margin, shift)
        decision = interim_decision(cells, size, MIN_N, controls=controls)
        if decision.verdict == "fails":
            return (*status(cells, controls, size, seed), size)
        if decision.verdict == "decided":
            found, outcomes = status(cells, controls, size, seed)
            if all(o != UNDECIDED and (cells[c][m][2] != FAITHFULNESS or o == BEATS)
                   for (c, m), o in outcomes.items()):
                return found, outcomes, size
    cells, controls = cells_at(columns, looks[-1], margin, shift)
    return (*status(cells, controls, looks[-1], seed), looks[-1])


def simulate(columns: Mapping[str, torch.Tensor], tau: float | None, repeats: int, seed: int, margin: float,
             rule_seed: int) -> dict[str, Any]:
    """One gate at one effect size: ``repeats`` resamples of its images, each followed in looks and by the fixed
    rule on every planned image."""
    planned = len(columns["clean:correct"])
    shift: dict[tuple[str, str], float] = {}
    if tau is not None:  # every cell of the map at tau standard errors of the planned sample
        for c, row in comparison_decisions(columns, margin).items():
            for m, (d, _, _) in row.items():
                finite = d[torch.isfinite(d)].double()
                if finite.numel() > 1:
                    shift[c, m] = tau * float(finite.std()) / math.sqrt(finite.numel()) - float(finite.mean())
    looks = look_sizes(planned)
    rng = np.random.default_rng(seed)
    differ, cells_differ, examined = 0, 0, 0
    fixed_counts: Counter[str] = Counter()
    for _ in range(repeats):
        rows = torch.from_numpy(rng.integers(0, planned, planned))
        sample = {k: v[rows] for k, v in columns.items()}
        found, outcomes, used = sequential_status(sample, looks, margin, rule_seed, shift)
        fixed, fixed_outcomes = status(*cells_at(sample, planned, margin, shift), planned, rule_seed)
        differ += found != fixed
        cells_differ += outcomes != fixed_outcomes
        examined += used
        fixed_counts[fixed] += 1
    return {"tau": "observed" if tau is None else tau, "n": planned, "looks": list(looks), "repeats": repeats,
            "disagreement": differ / repeats, "cell_disagreement": cells_differ / repeats,
            "fixed_status": dict(sorted(fixed_counts.items())), "examined_share": examined / (repeats * planned)}


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
        margin, rule_seed = run_settings(run)
        for gate, columns in gate_columns(run).items():
            for tau in taus:
                started = time.perf_counter()
                row = {"run": str(run), "gate": gate,
                       **simulate(columns, tau, args.repeats, args.seed, margin, rule_seed)}
                row["seconds"] = round(time.perf_counter() - started, 1)
                rows.append(row)
                print(f"{run.name:>12} {gate:<40} tau {str(row['tau']):>8}: n {row['n']}, disagreement "
                      f"{row['disagreement']:.4f} (cells {row['cell_disagreement']:.4f}), fixed "
                      f"{row['fixed_status']}, images examined {row['examined_share']:.2f}", flush=True)
    worst = max(r["disagreement"] for r in rows) if rows else math.nan
    print(f"worst disagreement {worst:.4f} over {len(rows)} gate x tau cells")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"bound": INTERIM_Z, "rows": rows, "worst": worst}, indent=1) + "\n")


if __name__ == "__main__":
    main()
