"""Findings pages generated from finished runs: what was run, where, how long, and every verdict.

Why: a finding written by hand drifts from the numbers; a page generated from the run's own
``metrics.json`` cannot. Two subcommands (run from the repository root):

``record``
    runs one ``advspatial`` command and writes ``findings-run.json`` into its run directory: the
    command as typed, the ``ADVSPATIAL_*`` environment, the machine (CPU count, torch version,
    platform, GPU if any), the load average before, during (sampled) and after, the wall time and
    the exit status. A run directory holds no record of its command line or machine, so this is
    what the page cites::

        python docs/findings/generate.py record --timeout 480 /tmp/findings/prop-r20 -- \\
            advspatial run propagation --model cifar10-resnet20 ... --out /tmp/findings/prop-r20

``page``
    reads one or more run directories (``config.yaml``, ``metrics.json``, ``findings-run.json``
    when recorded) of the same experiment and writes ``docs/findings/<experiment>.md``: a section
    per run with its command, machine, wall time, n, model, dataset, the table of every claim
    (subject, statistic, null, effect with its 95% CI, n, adjusted p, verdict; per-seed agreement
    where the claim has seeds) and the experiment's own blocks (``pse``'s typing, ``propagation``'s
    per-se table, ``perceptual``'s attacks, ``localized-training``'s models)::

        python docs/findings/generate.py page /tmp/findings/prop-r20 /tmp/findings/prop-r56

``study``
    reads a finished ``advspatial study`` directory (``study.yaml``, its ``metrics.json``, each model's own run
    under ``models/LABEL/`` and ``findings-run.json`` when recorded) and writes a page comparing the models: each
    model's clean accuracy, RoI explainer (and why it was chosen) and faithfulness gate, each endpoint per model and
    pooled, the paired contrasts, and the agreement of the models' RoIs and RoAs; ``--training FILE.json`` adds a
    trained model's recipe and cost (the ``.json`` beside a checkpoint of ``advspatial train``)::

        python docs/findings/generate.py study /tmp/findings/cnn-vs-vit --out docs/findings/cnn-vs-vit.md \
            --training /work/cache/vit-tiny-cifar10/models/<stem>.json

``merge``
    a run stopped before its end (its timeout, or killed) and completed by ``advspatial run --resume DIR``: copy
    the first ``findings-run.json`` aside before resuming, then merge it with the resume's, so the page shows
    the command as first typed, each part (with why it stopped), and the summed wall time.

A page is regenerated from the run's files; only a study page's gate rows import advspatial, to word each
specificity row exactly as the run's own report does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORD = "findings-run.json"
HERE = Path(__file__).resolve().parent
#: a table with more rows than this goes into a collapsed block
FOLD_ROWS = 30
#: config keys that say where a run came from (shown in the run's header table, not again in the command)
HEADER_KEYS = ("experiment", "model", "dataset", "preset", "n", "subset", "seed", "device")


# --------------------------------------------------------------------------------------------- record


def machine() -> dict[str, Any]:
    """The machine a run is on: what a reader needs to judge its wall time."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # the page still renders without torch
        info["torch"] = "not installed"
    return info


class LoadSampler:
    """Samples the 1-minute load average every ``period`` seconds while a command runs."""

    def __init__(self, period: float = 5.0) -> None:
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def shown_command(argv: Sequence[str]) -> str:
    """The command as a user types it: ``python -m advspatial ...`` (any interpreter path) reads ``advspatial ...``."""
    argv = list(argv)
    if len(argv) >= 3 and argv[1:3] == ["-m", "advspatial"]:
        argv = ["advspatial", *argv[3:]]
    elif argv and Path(argv[0]).name == "advspatial":
        argv = ["advspatial", *argv[1:]]
    return shlex.join(argv)


def code_version() -> str | None:
    """The commit of the checkout this script lives in (``+`` when its tracked files differ from it), or None
    outside a git checkout: which code a recorded part ran."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(HERE), *args], capture_output=True, text=True, check=True).stdout
    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        return commit + ("+" if git("status", "--porcelain", "--untracked-files=no").strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def merge_records(first: Mapping[str, Any], resumed: Mapping[str, Any]) -> dict[str, Any]:
    """One record of a run completed or extended by ``--resume`` (``resumed``) after its first part (``first``):
    the first command as typed, the wall and CPU times summed, every part listed, the machine and load of both."""
    parts = [*(first.get("parts") or [first]), resumed]
    keep = ("command", "wall_seconds", "cpu_seconds", "returncode", "timed_out", "started", "code", "load_average")
    during = [p["load_average"]["during_max"] for p in parts if (p.get("load_average") or {}).get("during_max")]
    cpu = [p.get("cpu_seconds") for p in parts]
    merged = {**first, "parts": [{k: p.get(k) for k in keep} for p in parts],
              "wall_seconds": round(sum(float(p.get("wall_seconds") or 0.0) for p in parts), 2),
              "cpu_seconds": round(sum(cpu), 1) if None not in cpu else None,
              "returncode": resumed.get("returncode"), "timed_out": resumed.get("timed_out")}
    load = dict(first.get("load_average") or {})
    if during:
        load["during_max"] = max(during)
    load["after"] = (resumed.get("load_average") or {}).get("after", load.get("after"))
    merged["load_average"] = load
    return merged


def children_cpu_seconds() -> float:
    """User and system CPU seconds of this process's finished children: the command's cost, comparable across
    loads where its wall time is not."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def record(rundir: Path, argv: Sequence[str], timeout: float | None = None) -> dict[str, Any]:
    """Run ``argv``, then write what :func:`page` cites into ``rundir/findings-run.json`` and return it."""
    if argv and argv[0] == "advspatial":  # run it with this interpreter, as ``python -m advspatial``
        argv = [sys.executable, "-m", "advspatial", *argv[1:]]
    before = os.getloadavg()
    code = code_version()  # before the command: the checkout may move on while a long run goes
    start = time.monotonic()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    timed_out = False
    with LoadSampler() as sampler:
        try:
            rc = subprocess.run(list(argv), timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc, timed_out = 124, True
    info = {
        "command": shown_command(argv),
        "argv": list(argv),
        "environment": {k: v for k, v in os.environ.items() if k.startswith("ADVSPATIAL_")},
        "machine": machine(),
        "code": code,
        "started": started,
        "wall_seconds": round(time.monotonic() - start, 2),
        "cpu_seconds": round(children_cpu_seconds(), 1),
        "returncode": rc,
        "timed_out": timed_out,
        "load_average": {
            "before": [round(x, 2) for x in before],
            "during_mean": round(sum(sampler.samples) / len(sampler.samples), 2) if sampler.samples else None,
            "during_max": round(max(sampler.samples), 2) if sampler.samples else None,
            "after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    rundir.mkdir(parents=True, exist_ok=True)
    (rundir / RECORD).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


# ----------------------------------------------------------------------------------------------- read


@dataclass
class Run:
    """One finished run directory, read: its settings, metrics and (when recorded) how it was run."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def experiment(self) -> str:
        return str(self.config.get("experiment", "unknown"))


def _nan_json(text: str) -> Any:
    return json.loads(text, parse_constant=lambda c: {"NaN": math.nan, "Infinity": math.inf,
                                                      "-Infinity": -math.inf}[c])


def read_config(path: Path) -> dict[str, Any]:
    """``config.yaml`` as a dict (PyYAML when installed; else the flat ``key: value`` lines it holds)."""
    text = path.read_text(encoding="utf-8")
    try:
        import yaml

        return dict(yaml.safe_load(text) or {})
    except ImportError:
        config: dict[str, Any] = {}
        for line in text.splitlines():
            if ":" in line and not line.startswith((" ", "-")):
                key, value = line.split(":", 1)
                config[key.strip()] = value.strip()
        return config


def read_run(path: Path) -> Run:
    """Read a run directory; one line of error when it is not a finished run."""
    path = Path(path)
    for name in ("config.yaml", "metrics.json"):
        if not (path / name).is_file():
            raise SystemExit(f"{path}: no {name}; is this a finished advspatial run directory?")
    rec = path / RECORD
    return Run(path=path, config=read_config(path / "config.yaml"),
               metrics=_nan_json((path / "metrics.json").read_text(encoding="utf-8")),
               record=json.loads(rec.read_text(encoding="utf-8")) if rec.is_file() else {})


# --------------------------------------------------------------------------------------------- format


def num(value: Any, digits: int = 3, signed: bool = False) -> str:
    """A number for a table: fixed digits, NaN/None as an em dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return cell(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def pvalue(value: Any) -> str:
    """A p-value: three significant digits, small ones in scientific notation."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


def estimate(effect: Mapping[str, Any] | None, signed: bool = True) -> str:
    """``mean [low, high]`` of an engine estimate (``mean``/``low``/``high``)."""
    if not effect:
        return "—"
    return (f"{num(effect.get('mean'), signed=signed)} "
            f"[{num(effect.get('low'), signed=signed)}, {num(effect.get('high'), signed=signed)}]")


def cell(value: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def fold(title: str, lines: list[str], rows: int) -> list[str]:
    """``lines`` as they are, or inside a collapsed block (pymdownx.details) when ``rows`` is large."""
    if rows <= FOLD_ROWS:
        return lines
    return [f'??? note "{title}"', ""] + ["    " + line if line else "" for line in lines]


# --------------------------------------------------------------------------------------------- claims

CLAIM_HEADER = ("subject", "statistic", "null", "effect [95% CI]", "n", "p (adj.)", "verdict")


def claim_row(claim: Mapping[str, Any], seeds: bool) -> list[str]:
    """One claim as a table row: what is compared, with what, the effect with its CI, and the verdict."""
    effect = claim.get("effect") or {}
    gates = claim.get("gates") or {}
    failed = [name for name, ok in gates.items() if ok is False]
    verdict = str(claim.get("verdict", ""))
    if failed:
        verdict += f" (gate failed: {', '.join(failed)})"
    row = [claim.get("subject", ""), claim.get("statistic", ""), claim.get("null", ""),
           estimate(effect), num(effect.get("n")), pvalue(claim.get("p_adjusted")), f"**{verdict}**"]
    if seeds:
        agree, total = claim.get("seeds_agree"), claim.get("seeds")
        row.append(f"{agree} of {total}" if total else "—")
    return row


def claims_section(claims: Sequence[Mapping[str, Any]]) -> list[str]:
    """The verdict table: primary claims first (always shown), then every claim (collapsed when long)."""
    if not claims:
        return ["This run makes no claims.", ""]
    seeds = any("seeds" in c for c in claims)
    header = [*CLAIM_HEADER, "seeds agree"] if seeds else list(CLAIM_HEADER)
    counts = Counter(str(c.get("verdict", "")) for c in claims)
    lines = ["Verdicts: " + ", ".join(f"{word} × {k}" for word, k in counts.most_common()) + ".", ""]
    primary = [c for c in claims if c.get("primary")]
    if primary:
        lines += [f"### Primary claims ({len(primary)})", ""]
        lines += fold(f"{len(primary)} primary claims", table(header, [claim_row(c, seeds) for c in primary]),
                      len(primary)) + [""]
    secondary = [c for c in claims if not c.get("primary")]
    if secondary:
        lines += [f"### Secondary claims ({len(secondary)})", ""]
        lines += fold(f"{len(secondary)} secondary claims",
                      table(header, [claim_row(c, seeds) for c in secondary]), len(secondary)) + [""]
    return lines


# ------------------------------------------------------------------------------ experiment-specific


def pse_block(metrics: Mapping[str, Any]) -> list[str]:
    """Per attack: the typing's energy shares against its control, the untyped share, the additivity gap."""
    lines: list[str] = []
    for name, variant in (metrics.get("variants") or {}).items():
        typing = variant.get("typing") or {}
        if not typing:
            continue
        lines += [f"#### Typing: {name}", "",
                  f"Success rate {num(variant.get('success_rate'))} ({variant.get('successful')} of "
                  f"{variant.get('images')} images); control: {typing.get('control', 'not recorded')}.", ""]
        shares, control = typing.get("energy_shares") or {}, typing.get("control_energy_shares") or {}
        verdicts = variant.get("typing_verdicts") or {}
        rows = [[t, num(shares.get(t)), num(control.get(t)), verdicts.get(f"{t} energy share", "—")]
                for t in shares]
        lines += table(("type", "energy share (attack)", "energy share (control)", "verdict"), rows) + [""]
        untyped = typing.get("untyped_share") or {}
        add = typing.get("additivity") or {}
        lines += [f"Untyped share: {num(untyped.get('by_energy'))} of the energy, {num(untyped.get('by_count'))} "
                  f"of the perturbed groups.", ""]
        if add:
            lines += table(("", "total", "sum of isolated groups", "sum of leave-one-out"), [
                ["suppression", num(add.get("s_total")), num(add.get("s_isolated_sum")),
                 num(add.get("s_leave_one_out_sum"))],
                ["promotion", num(add.get("p_total")), num(add.get("p_isolated_sum")),
                 num(add.get("p_leave_one_out_sum"))],
            ]) + [""]
    return (["### Typing of the perturbation", ""] + lines) if lines else []


def propagation_block(metrics: Mapping[str, Any]) -> list[str]:
    """The attack per k, and propagation per se: a random one-pixel change's reach, layer by layer."""
    lines: list[str] = []
    rows = []
    for k, entry in (metrics.get("k") or {}).items():
        success = entry.get("success") or {}
        locality = (entry.get("locality") or {}).get("original") or {}
        rows.append([k, num(entry.get("correct")), f"{num(success.get('rate'))} [{num(success.get('ci_low'))}, "
                     f"{num(success.get('ci_high'))}]", num(entry.get("median_queries")),
                     num(entry.get("max_pm_last_layer")), num(locality.get("rate"))])
    if rows:
        lines += ["### The k-pixel attack", "",
                  *table(("k", "correct", "success [95% CI]", "median queries", "PMmax last layer",
                          "still fools at its own pixel"), rows), ""]
    per_se = metrics.get("per_se") or {}
    layers = per_se.get("layers") or []
    if layers:
        lines += ["### Propagation per se", "",
                  f"Change: {per_se.get('change', '—')}; {per_se.get('draws', '—')} draws on each of "
                  f"{per_se.get('images', '—')} images. Ratio = the layer's peak |ΔF| over its largest clean "
                  f"activation; last column: share of images above {per_se.get('fraction', '—')}.", ""]
        body = [[num(row.get("depth")), num(row.get("relative_depth"), 2), f"`{row.get('layer')}`",
                 estimate(row.get("ratio"), signed=False), num(row.get("share_above_fraction"))] for row in layers]
        lines += fold(f"all {len(layers)} layers", table(("depth", "relative depth", "layer", "ratio [95% CI]",
                                                         "share above"), body), len(layers))
        lines += [""]
    return lines


def perceptual_block(metrics: Mapping[str, Any]) -> list[str]:
    """The attacks at matched SSIM (:func:`attacks_block`), then the minimal-distortion claim's curve range."""
    return attacks_block(metrics) + curve_range_block(metrics.get("minimal_distortion") or {})


def attacks_block(metrics: Mapping[str, Any]) -> list[str]:
    """Each attack's fooling rate, SSIM and L∞, and the calibration that matched them (nothing without attacks)."""
    attacks = metrics.get("attacks") or {}
    if not attacks:
        return []
    rows = [[name, num(a.get("images")), num(a.get("fooling_rate")), num(a.get("successful")),
             num(a.get("mean_ssim")), num(a.get("mean_linf"))] for name, a in attacks.items()]
    lines = ["### The attacks", "", *table(("attack", "images", "fooling rate", "successful", "mean SSIM",
                                           "mean L∞ (successful)"), rows), ""]
    if "pgd_eps" in metrics:
        lines += [f"PGD budget matched by calibration: ε = {num(metrics.get('pgd_eps'), 4)}; "
                  f"SSIM gap (PGD − SSIM-ball) = {num(metrics.get('ssim_gap'), 4, signed=True)}.", ""]
    return lines


def shift(value: float) -> str:
    """A signed shift of a mean: four decimals, one below 0.001 in scientific notation (it is not 0)."""
    value += 0.0  # no "-0.0000" for a shift of nothing
    return f"{value:+.1e}" if 0 < abs(value) < 1e-3 else f"{value:+.4f}"


def curve_range_block(distortion: Mapping[str, Any]) -> list[str]:
    """The minimal-distortion claim's curve range: per attack, the images its least distorting budget already fools
    (their value a lower bound), how far they could move the difference, and the difference and verdict at that end
    (what the claim's curve-range gate compares with the claim's own verdict)."""
    capped = distortion.get("capped") or {}
    if not capped:
        return []
    bounds, reach, ceilings = (distortion.get(key) or {} for key in ("bounds", "reach", "ceilings"))
    rows = []
    for name in capped:  # the SSIM ball's end raises the difference, PGD's lowers it
        end = bounds.get(name) or {}
        moved = reach.get(name)
        rows.append([name, num(ceilings.get(name), 4), f"{capped[name]} of {distortion.get('images_both', '—')}",
                     shift(-moved if name == "pgd" else moved) if moved is not None else "—",
                     estimate(end.get("effect")), f"*{end['verdict']}*" if end else
                     "— (none capped)" if not capped[name] else "— (not recorded)"])
    return ["### The minimal-distortion claim's curve range", "",
            f"Images fooled by both attacks at some budget: {distortion.get('images_both', '—')} (the SSIM ball "
            f"alone {distortion.get('only_ssim_ball', '—')}, PGD alone {distortion.get('only_pgd', '—')}). An image "
            "its curve's least distorting budget already fools has a highest fooling SSIM the grid sets; each row "
            "sets all of them to 1 (the end that attack's curve leaves open) and judges the claim again.", "",
            *table(("attack", "least distorting budget's mean SSIM", "capped images", "reach",
                    "difference at that end [95% CI]", "verdict there"), rows), ""]


def localized_block(metrics: Mapping[str, Any]) -> list[str]:
    """The trained models' accuracies, clean and under the full and the region-only attack."""
    models = metrics.get("models") or {}
    if not models:
        return []
    rows = [[name, num(m.get("clean_accuracy")), num(m.get("full_accuracy")), num(m.get("region_accuracy"))]
            for name, m in models.items()]
    return ["### The models", "", *table(("training", "clean accuracy", "full-image attack accuracy",
                                          "region-only attack accuracy"), rows), ""]


def proportion(p: Mapping[str, Any] | None) -> str:
    """An accuracy with its 95% CI and its count: ``0.120 [0.056, 0.238] (6/50)``."""
    if not p:
        return "—"
    k = p.get("k")  # NaN for a bootstrap share of draws, which has no count
    count = f" ({k}/{p['n']})" if isinstance(k, (int, float)) and math.isfinite(k) else ""
    return f"{num(p.get('value'))} [{num(p.get('low'))}, {num(p.get('high'))}]{count}"


def spatial_block(metrics: Mapping[str, Any]) -> list[str]:
    """Where each attack acts against regions of the same size (the report's sentences, under the RoI's gate), then
    the defence under adaptive attack (:func:`adaptive_block`)."""
    return colocation_block(metrics) + adaptive_block(metrics)


def colocation_block(metrics: Mapping[str, Any]) -> list[str]:
    """Per attack and RoA map, the sentence the report prints: the share of the attack map in the RoI against fixed
    regions of the same size and a same-class image's RoI; headed by the RoI's faithfulness gate, which they rest on."""
    sentences = [f"- **{attack}** ({roa} map): {entry['sentence']}"
                 for attack, maps in (metrics.get("content") or {}).items()
                 for roa, entry in (maps or {}).items() if isinstance(entry, Mapping) and entry.get("sentence")]
    if not sentences:
        return []
    roi = metrics.get("roi") or {}
    gate = (f"RoI {roi.get('method', '—')}, faithfulness gate {roi.get('status', '—')}"
            + (f" ({roi['interpretation']})" if roi.get("interpretation") else "")
            + ". The sentences state what the maps show; the claims above carry the verdicts.") if roi else ""
    return ["### Where the attacks act, against regions of the same size", "", *([gate, ""] if gate else []),
            *sentences, ""]


def adaptive_block(metrics: Mapping[str, Any]) -> list[str]:
    """The defence's adaptive evaluation: the undefended model, each configuration (clean and worst-case adaptive
    accuracy, its random control, the attack's convergence, the verdict) and the trivial baselines."""
    adaptive = metrics.get("adaptive") or {}
    if not adaptive:
        return []
    budget, undefended = adaptive.get("budget") or {}, adaptive.get("undefended") or {}
    lines = ["### The defence under adaptive attack", "",
             f"{adaptive.get('images', '—')} images; ensemble {', '.join(budget.get('components') or []) or '—'} "
             f"({budget.get('steps', '—')} APGD steps × {budget.get('restarts', '—')} restarts, "
             f"{budget.get('queries', '—')} Square queries). Undefended: clean {proportion(undefended.get('clean'))}, "
             f"white-box {proportion(undefended.get('white-box'))}.", ""]
    rows = []
    for row in (adaptive.get("settings") or {}).values():
        if not row.get("evaluated"):
            rows.append([row.get("label", ""), "—", "not attacked adaptively", "—", "—", f"*{row.get('verdict', '')}*"])
            continue
        converged = ((row.get("convergence") or {}).get("defended") or {}).get("converged")
        rows.append([row.get("label", ""), proportion(row.get("clean")), proportion(row.get("adaptive:worst")),
                     proportion(row.get("control")), "yes" if converged else "no" if converged is False else "—",
                     f"*{row.get('verdict', '')}*"])
    lines += table(("configuration", "clean accuracy", "adaptive accuracy (worst case)", "its random control",
                    "attack converged", "verdict"), rows) + [""]
    baselines = [[key.replace("|", " "), proportion(b.get("clean")), proportion(b.get("robust")),
                  "yes" if (b.get("convergence") or {}).get("converged") else "no"]
                 for key, b in (adaptive.get("baselines") or {}).items()]
    if baselines:
        lines += table(("baseline (transform, strength)", "clean accuracy", "adaptive accuracy",
                        "attack converged"), baselines) + [""]
    return lines


BLOCKS: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "pse": pse_block, "propagation": propagation_block, "perceptual": perceptual_block,
    "localized-training": localized_block, "spatial": spatial_block,
}


# ----------------------------------------------------------------------------------------------- page


def reconstructed_command(config: Mapping[str, Any]) -> str:
    """The command from ``config.yaml`` when none was recorded (every setting it holds, spelled as options)."""
    parts = ["advspatial", "run", str(config.get("experiment", ""))]
    for key, value in config.items():
        if key in ("experiment", "progress") or value in ("", [], None):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            parts += [flag, ",".join(map(str, value))]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def machine_text(rec: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """One line on the machine: cores, torch, device, GPU, load average during the run."""
    m = rec.get("machine") or {}
    if not m:
        return f"not recorded (device {config.get('device', '—')})"
    # the run's own threads: ADVSPATIAL_THREADS where set, else torch's default as the recording process saw it
    threads = (rec.get("environment") or {}).get("ADVSPATIAL_THREADS") or m.get("torch_threads")
    text = (f"{m.get('cpu_count')} CPU cores ({m.get('processor')}), torch {m.get('torch')} "
            f"({threads} thread{'' if str(threads) == '1' else 's'}), device `{config.get('device', '—')}`")
    if m.get("gpu"):
        text += f", GPU {m['gpu']}"
    load = rec.get("load_average") or {}
    if load:
        text += (f"; load average before {load.get('before', ['—'])[0]}, during {load.get('during_mean', '—')} "
                 f"(max {load.get('during_max', '—')}), after {load.get('after', ['—'])[0]}")
    return text


def run_section(run: Run) -> list[str]:
    """A run's section: how it was run, then its verdicts, then the experiment's own blocks."""
    config, metrics, rec = run.config, run.metrics, run.record
    label = f"{config.get('model', '?')} on {config.get('dataset', '?')}"
    if config.get("importance") not in (None, "", "auto"):  # two runs of one model apart by their RoI's explainer
        label += f", RoI {config['importance']}"
    if "popsize" in config and "maxiter" in config:  # propagation: two runs of one model apart by their DE budget
        label += f", DE population {config['popsize']}, {config['maxiter']} generations"
    command = rec.get("command") or reconstructed_command(config)
    env = " ".join(f"{k}={v}" for k, v in (rec.get("environment") or {}).items())
    wall = metrics.get("wall_seconds")
    wall_text = f"{num(rec.get('wall_seconds'), 1)} s for the command" if rec else "command not timed"
    wall_text += f" ({num(rec['cpu_seconds'], 0)} CPU-s)" if rec.get("cpu_seconds") is not None else ""
    inside = "inside its last part" if rec.get("parts") else "inside the run"
    wall_text += f"; {num(wall, 1)} s {inside} (metrics.json `wall_seconds`)" if wall is not None else ""
    lines = [f"## {label}", ""]
    if metrics.get("smoke_test"):
        lines += ["!!! warning \"smoke test\"", f"    {metrics['smoke_test']}", ""]
    lines += ["```bash", (env + " " if env else "") + command, "```", ""]
    if not rec:
        lines += ["(command reconstructed from `config.yaml`: the run was not recorded)", ""]
    parts = rec.get("parts") or []
    for part in parts:
        code = f", code {part['code']}" if part.get("code") else ""
        lines += [f"- `{part.get('command')}`: {num(part.get('wall_seconds'), 1)} s, exit {part.get('returncode')}"
                  f"{stop_reason(part)}{code}"]
    if parts:
        lines += ["", resumed_words(parts), ""]
    if rec.get("returncode"):
        lines += [f"!!! failure \"the command exited with status {rec['returncode']}"
                  f"{' (timed out)' if rec.get('timed_out') else ''}\"", ""]
    rows = [["n (images)", num(metrics.get("n", config.get("n")))],
            ["model", f"`{config.get('model', '—')}`"], ["dataset", f"`{config.get('dataset', '—')}`"],
            ["preset · subset · seed", f"{config.get('preset', '—')} · {config.get('subset', '—')} · "
                                       f"{config.get('seed', '—')}"],
            ["clean accuracy", num(metrics.get("clean_accuracy"))],
            ["machine", machine_text(rec, config)], ["wall time", wall_text]]
    if rec.get("started"):
        rows.append(["started", rec["started"]])
    lines += table(("", ""), rows) + [""]
    lines += claims_section(metrics.get("claims") or [])
    lines += BLOCKS.get(run.experiment, lambda _m: [])(metrics)
    return lines


def resumed_words(parts: Sequence[Mapping[str, Any]]) -> str:
    """How a run of several parts came about: stopped before its end and completed, or finished and then resumed on
    newer code (a finished part exits 0), and why its numbers are still those of one run."""
    if all(p.get("returncode") != 0 for p in parts[:-1]):
        return ("The run was stopped before its end (each part's exit above) and completed with `advspatial run "
                "--resume` (the cached stages are kept, so the numbers are those of one uninterrupted run); the wall "
                "time below is the sum of the parts.")
    return ("A part that exits 0 had finished the run: the part after it resumed the finished run with `advspatial run "
            "--resume` on newer code, which computes only the stages that code adds or keys anew and reuses every "
            "other cached stage (each stage's numbers are deterministic, so the results are those one uninterrupted "
            "run of the last part's code gives); the wall time below is the sum of the parts.")


def stop_reason(part: Mapping[str, Any]) -> str:
    """Why a part of a resumed run stopped, as its record says: its timeout, or the signal that killed it (the
    kernel's out-of-memory killer sends SIGKILL, exit -9)."""
    code = part.get("returncode")
    if part.get("timed_out"):
        return " (stopped by the timeout)"
    if isinstance(code, int) and code < 0:
        return f" (killed by signal {-code}{': SIGKILL, as the out-of-memory killer sends' if code == -9 else ''})"
    return ""


def page(runs: Sequence[Run], title: str | None = None, intro: str = "") -> str:
    """The Markdown findings page of one experiment's runs."""
    experiments = {r.experiment for r in runs}
    if len(experiments) != 1:
        raise SystemExit(f"one page holds one experiment's runs; got {sorted(experiments)}")
    name = experiments.pop()
    lines = [f"# Findings: {title or name}", "",
             f"Generated by `docs/findings/generate.py` from the `metrics.json` of {len(runs)} run(s) of "
             f"[`{name}`](../experiments/{name}.md); do not edit by hand. Verdict words: "
             "[the rule](../methods.md#verdict-words).", ""]
    if intro:
        lines += [intro.strip(), ""]
    for run in runs:
        lines += run_section(run)
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- study


def study_models_table(study: Path, metrics: Mapping[str, Any]) -> list[str]:
    """One row per model: spec, size, clean and robust accuracy, the RoI explainer, why, and its gate."""
    rows = []
    for label, m in (metrics.get("models") or {}).items():
        own = study / "models" / label / "metrics.json"
        roi = (_nan_json(own.read_text(encoding="utf-8")).get("roi") or {}) if own.is_file() else {}
        rows.append([f"`{label}`", f"`{m.get('spec')}`", f"{m.get('parameters', 0):,}", num(m.get("clean_accuracy")),
                     num(m.get("robust_accuracy")), f"`{m.get('roi_method')}`", roi.get("why", "—"),
                     gate_status(m), num(m.get("wall_seconds"), 1)])
    failed = [[f"`{label}`", "failed: " + reason] + [""] * 7 for label, reason in (metrics.get("failed") or {}).items()]
    return table(("model", "spec", "parameters", "clean accuracy", "robust accuracy", "RoI explainer",
                  "why this explainer", "faithfulness gate", "wall s"), rows + failed) + [""]


def gate_row_words(comparison: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """A gate row's outcome and each measure's outcome, as the report words them. A specificity row reads each fill
    as its legend does (a difference within the margin is "within the margin", never "beats" or "does less", also
    from a metrics.json written before it did) and its outcome from its counted measures' words
    (:func:`~advspatial.faithfulness.record.specificity_outcome`); any other row reads as its run wrote it."""
    from advspatial.faithfulness.record import counted, specificity_outcome, specificity_word
    from advspatial.statistics.outcomes import Decision

    decisions = comparison.get("decisions") or {}
    written = str(comparison.get("outcome", ""))
    if comparison.get("role") != "specificity":
        return written, {m: str(d.get("outcome")) for m, d in decisions.items()}
    parsed = {m: Decision.from_dict(d) for m, d in decisions.items()}
    counted_decisions = [d for m, d in parsed.items() if counted(m)]
    outcome = specificity_outcome(counted_decisions) if counted_decisions else written
    return outcome, {m: specificity_word(d) for m, d in parsed.items()}


def gate_rows_block(study: Path, metrics: Mapping[str, Any]) -> list[str]:
    """Per model, its RoI explainer's gate row by row: each comparison's outcome per measure (faithfulness rows
    decide the gate; specificity rows are a finding about the model), the randomization row and the restricted
    attack's calibrated budget, read from the model's own ``metrics.json``."""
    lines = ["### Each model's RoI gate, row by row", "",
             "Effect (RoI minus the other region, > 0: the RoI does more damage) with its 95% CI and outcome, per "
             "measure: deletion with the ROAD and blur fills (logit drop), the restricted attack (margin removed). "
             "Faithfulness rows (location, scatter, randomization) decide the gate; the specificity rows say what "
             "the RoI adds beyond maps that need no model ([methods](../methods.md#three-outcomes)).", ""]
    for label in metrics.get("models") or {}:
        own = study / "models" / label / "metrics.json"
        if not own.is_file():
            continue
        run = _nan_json(own.read_text(encoding="utf-8"))
        method = (run.get("roi") or {}).get("method")
        gate = (run.get("faithfulness") or {}).get(method) or {}
        if not gate:
            continue
        budget = gate.get("restricted_attack") or {}
        lines += [f"**`{label}`**, `{method}`: {gate.get('status')} on {gate.get('n')} correctly classified images; "
                  f"restricted attack at {255 * float(budget.get('eps', math.nan)):.2f}/255 (the unrestricted attack "
                  f"flips {num(budget.get('flip_rate'), 2)} of {budget.get('images', '—')} images)", ""]
        rows = []
        for comparison in (gate.get("comparisons") or {}).values():
            decisions = comparison.get("decisions") or {}
            outcome, words = gate_row_words(comparison)
            cells = "; ".join(f"{m} {num(d.get('mean'), 3, True)} [{num(d.get('low'), 3, True)}, "
                              f"{num(d.get('high'), 3, True)}] {words[m]}" for m, d in decisions.items())
            if not decisions:  # randomization: each check's value with its CI
                checks = (comparison.get("effects") or {}).items()
                cells = "; ".join(f"{k} {num(e.get('mean'), 2, True)} [{num(e.get('low'), 2, True)}, "
                                  f"{num(e.get('high'), 2, True)}]" for k, e in checks)
            rows.append([comparison.get("words", comparison.get("name", "")).split(" (")[0],
                         comparison.get("role", ""), outcome,
                         cells or "; ".join(comparison.get("failed") or []) or "—"])
        lines += table(("comparison", "role", "outcome", "per measure"), rows) + [""]
    return lines


def training_block(meta: Mapping[str, Any]) -> list[str]:
    """A trained model's recipe and cost, from the metadata ``advspatial train`` writes beside its checkpoint."""
    config = meta.get("config") or {}
    recipe = ", ".join(f"{k} {config[k]}" for k in ("arch", "dataset", "mode", "epochs", "batch_size", "lr",
                                                    "weight_decay", "augment", "seed") if k in config)
    return ["### The trained model", "",
            *table(("", ""), [["recipe", recipe], ["training images", num(meta.get("train_images"))],
                              ["test accuracy (its dataset's test split)", num(meta.get("test_accuracy"), 4)],
                              ["training wall time", f"{num(meta.get('train_seconds'), 1)} s"],
                              ["parameters", f"{meta.get('num_parameters', 0):,}"],
                              ["machine", f"{meta.get('device')}, {meta.get('threads')} torch threads, torch "
                                          f"{meta.get('torch')}, {meta.get('created')}"]]), ""]


def endpoints_block(metrics: Mapping[str, Any]) -> list[str]:
    """Per attack and endpoint: each model's effect (pooled or why not) and the random-effects pooled one."""
    lines = ["### Where each model's attacks act, relative to where it looks", ""]
    for endpoint in metrics.get("endpoints") or []:
        pooled = (endpoint.get("pooled") or {}).get("meta") or {}
        rows = [[f"`{e.get('model')}`", num(e.get("n")), num(e.get("observed")), num(e.get("null")),
                 estimate(e.get("effect")), e.get("run_verdict") or "—",
                 "pooled" if e.get("included") else f"not pooled: {e.get('reason', '')}"]
                for e in endpoint.get("models") or []]
        if pooled:
            rows.append(["**pooled** (random effects)", num(pooled.get("k")), "", "",
                         f"{num(pooled.get('effect'), signed=True)} [{num(pooled.get('low'), signed=True)}, "
                         f"{num(pooled.get('high'), signed=True)}]", f"I² {num(pooled.get('i2'), 2)}", ""])
        lines += [f"#### {endpoint.get('attack')}: {endpoint.get('endpoint')}", ""]
        if endpoint.get("note"):
            lines += [endpoint["note"], ""]
        lines += table(("model", "n", "observed", "null", "effect [95% CI]", "the model's own verdict", "pooling"),
                       rows) + [""]
    return lines


def pairs_block(title: str, items: Sequence[Mapping[str, Any]], agreement: bool) -> list[str]:
    """The paired contrasts (a − b) or the agreement of two models' regions (IoU against the same-class null)."""
    if not items:
        return []
    if agreement:
        header = ("regions", "a", "b", "n", "IoU", "null IoU", "effect [95% CI]", "p (adj.)", "verdict")
        rows = [[i.get("subject"), f"`{i.get('a')}`", f"`{i.get('b')}`", num(i.get("n")), num(i.get("observed")),
                 num(i.get("null")), estimate(i.get("effect")), pvalue(i.get("p_adjusted")),
                 f"**{i.get('verdict')}**"] for i in items]
    else:
        header = ("attack", "a", "b", "a − b [95% CI]", "p (adj.)", "verdict")
        rows = [[i.get("attack"), f"`{i.get('a')}`", f"`{i.get('b')}`", estimate(i.get("effect")),
                 pvalue(i.get("p_adjusted")), f"**{i.get('verdict')}**"] for i in items]
    return [f"### {title}", "", *fold(title, table(header, rows), len(rows)), ""]


def gate_status(model: Mapping[str, Any]) -> str:
    """A model's RoI gate as the study recorded it: passed, failed, undecided or cannot judge (bold unless passed)."""
    status = str(model.get("roi_status", "passed" if model.get("roi_faithful") else "failed"))
    return status if status == "passed" else f"**{status}**"


def study_page(study: Path, training: Mapping[str, Any] | None = None, title: str | None = None,
               intro: str = "") -> str:
    """The Markdown page of a finished study (see the module doc)."""
    for name in ("study.yaml", "metrics.json"):
        if not (study / name).is_file():
            raise SystemExit(f"{study}: no {name}; is this a finished advspatial study directory?")
    settings = read_config(study / "study.yaml")
    metrics = _nan_json((study / "metrics.json").read_text(encoding="utf-8"))
    rec = json.loads((study / RECORD).read_text(encoding="utf-8")) if (study / RECORD).is_file() else {}
    shared = settings.get("settings") or {}
    lines = [f"# Findings: {title or 'study'}", "",
             "Generated by `docs/findings/generate.py study` from a finished [`advspatial study`](../study.md); do "
             "not edit by hand. Verdict words: [the rule](../methods.md#verdict-words).", ""]
    if intro:
        lines += [intro.strip(), ""]
    if metrics.get("smoke_test"):
        lines += ["!!! warning \"smoke test\"", f"    {metrics['smoke_test']}", ""]
    if rec:
        env = " ".join(f"{k}={v}" for k, v in (rec.get("environment") or {}).items())
        lines += ["```bash", (env + " " if env else "") + str(rec.get("command")), "```", ""]
    lines += table(("", ""), [["dataset", f"`{metrics.get('dataset')}`"], ["n (images, the same for every model)",
                                                                          num(metrics.get("n"))],
                              ["shared settings", ", ".join(f"{k} {v}" for k, v in shared.items()) or "—"],
                              ["machine", machine_text(rec, shared)],
                              ["wall time", f"{num(rec.get('wall_seconds'), 1)} s" if rec else "not recorded"]]) + [""]
    lines += ["### The models", "", *study_models_table(study, metrics)]
    lines += gate_rows_block(study, metrics)
    if training:
        lines += training_block(training)
    lines += endpoints_block(metrics)
    lines += pairs_block("Paired contrasts between models (same images)", metrics.get("contrasts") or [], False)
    lines += pairs_block("Do the models look, and do their attacks act, in the same place?",
                         metrics.get("agreement") or [], True)
    lines += ["### Claims", "", *claims_section(metrics.get("claims") or [])]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run a command and write findings-run.json into its run directory")
    rec.add_argument("rundir", type=Path)
    rec.add_argument("--timeout", type=float, default=None, help="seconds before the command is stopped")
    rec.add_argument("cmd", nargs=argparse.REMAINDER, help="-- advspatial run ...")
    mg = sub.add_parser("merge", help="merge the record of a run stopped before its end with its --resume's")
    mg.add_argument("first", type=Path, help="the first part's findings-run.json (copied aside)")
    mg.add_argument("rundir", type=Path, help="the run directory, whose findings-run.json is the resume's")
    pg = sub.add_parser("page", help="write docs/findings/<experiment>.md from run directories")
    pg.add_argument("rundirs", type=Path, nargs="+")
    pg.add_argument("--out", type=Path, default=None, help="the page (default docs/findings/<experiment>.md)")
    pg.add_argument("--title", default=None)
    pg.add_argument("--intro", default="", help="a paragraph under the title (Markdown)")
    st = sub.add_parser("study", help="write a findings page from a finished study directory")
    st.add_argument("study", type=Path)
    st.add_argument("--out", type=Path, required=True, help="the page, e.g. docs/findings/cnn-vs-vit.md")
    st.add_argument("--training", type=Path, default=None, help="a checkpoint's .json of advspatial train")
    st.add_argument("--title", default=None)
    st.add_argument("--intro", default="", help="a paragraph under the title (Markdown)")
    args = parser.parse_args(argv)
    if args.command == "study":
        training = json.loads(args.training.read_text(encoding="utf-8")) if args.training else None
        args.out.write_text(study_page(args.study, training, args.title, args.intro), encoding="utf-8")
        print(args.out)
        return 0
    if args.command == "record":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            parser.error("record needs a command after --")
        info = record(args.rundir, cmd, args.timeout)
        print(f"{args.rundir / RECORD}: {info['wall_seconds']} s, exit {info['returncode']}")
        return int(info["returncode"])
    if args.command == "merge":
        resumed = json.loads((args.rundir / RECORD).read_text(encoding="utf-8"))
        merged = merge_records(json.loads(args.first.read_text(encoding="utf-8")), resumed)
        (args.rundir / RECORD).write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
        print(f"{args.rundir / RECORD}: {len(merged['parts'])} parts, {merged['wall_seconds']} s")
        return 0
    runs = [read_run(p) for p in args.rundirs]
    out = args.out or HERE / f"{runs[0].experiment}.md"
    out.write_text(page(runs, args.title, args.intro), encoding="utf-8")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
