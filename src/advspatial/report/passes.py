"""The run's model passes in its report: the setup section states what the run cost in passes through the model,
and what it said it would cost before its first stage beside what it took.

The counts come from ``metrics.json``'s ``model_passes`` (:meth:`advspatial.passes.PassLedger.summary`), the forecast
from its ``forecast`` (:meth:`advspatial.experiments.forecast.Forecast.record`); a run written before they were
recorded has none, and its report says nothing of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ..progress import duration
from ..statistics.wording import how_many
from .html import Section, Table

#: the title of the section the passes are stated in (every experiment's report has one)
SETUP = "Setup"


def passes_paragraph(passes: Mapping[str, Any]) -> str:
    """One sentence: the run's forward and backward image-passes, in total and per test image."""
    images = int(passes.get("images") or 0)
    per_image = (f" ({passes['forward_per_image']:,} forward and {passes['backward_per_image']:,} backward per test "
                 f"image, n = {images})") if images else ""
    lower = "" if passes.get("complete", True) else (
        " These are lower bounds: some stages were read back from files written before passes were counted.")
    return (f"Model passes: the run sent {int(passes['forward']):,} images forward through the model and "
            f"{int(passes['backward']):,} back (gradients), in {how_many(int(passes['calls']), 'forward call')}"
            f"{per_image}."
            f"{calls_sentence(passes)}{lower}{reused_sentence(passes)}{outside_sentence(passes)}")


#: what each phase of the run's time outside its stages is, for a reader: one entry per
#: :data:`advspatial.phase_clock.PHASES` (:meth:`advspatial.passes.PassLedger.phase`)
PHASE_WORDS = {"setup": "loading the model and images", "forecast": "the forecast", "rows": "the per-image rows",
               "statistics": "the statistics and verdicts", "figures": "the figures", "report": "the report",
               "stage files": "reading and saving stage files", "other": "the rest"}


def outside_sentence(passes: Mapping[str, Any]) -> str:
    """The run's elapsed time outside its stages, split into its phases, the largest first (empty for a run that
    recorded none). On a GPU, where the stages are fast, this host work is a large part of a large run."""
    phases = (passes.get("outside_stages") or {}).get("phase_seconds") or {}
    spent = {name: float(times.get("wall_seconds") or 0.0) for name, times in phases.items()}
    total = sum(spent.values())
    if total <= 0:
        return ""
    parts = ", ".join(f"{PHASE_WORDS.get(name, name)} {seconds:.1f} s"
                      for name, seconds in sorted(spent.items(), key=lambda item: -item[1]) if seconds >= 0.05)
    listed = f": {parts}" if parts else ""
    return f" Outside its stages this process spent {total:.1f} s (elapsed, on this machine){listed}."


def reused_sentence(passes: Mapping[str, Any]) -> str:
    """Which stages the run read from the model cache and what an earlier run spent on them (empty when none)."""
    reused = passes.get("reused_stages") or {}
    if not reused:
        return ""
    forward = sum(int(count.get("forward", 0)) for count in reused.values())
    backward = sum(int(count.get("backward", 0)) for count in reused.values())
    return (f" {how_many(len(reused), 'stage')} ({', '.join(reused)}) depend only on the model "
            "and were read from the model cache, where an earlier run computed them from the same model, images and "
            f"settings ({forward:,} forward and {backward:,} backward image-passes not repeated, nor counted above; "
            "reuse_model_work=false recomputes them).")


def calls_sentence(passes: Mapping[str, Any]) -> str:
    """What a GPU's time follows (empty for a run counted before these were): rounds, backward calls, host
    synchronisations outside the model and the CPU time outside the model per call."""
    if "rounds" not in passes:
        return ""
    rate = passes.get("images_per_round")
    syncs = passes.get("syncs_per_call")
    non_model = passes.get("non_model_seconds_per_call")
    cost = f"; {non_model * 1000:.2f} ms of CPU outside the model per call on this machine" if non_model else ""
    return (f" On a GPU time follows calls: {how_many(int(passes['rounds']), 'round')} (forward calls a device could "
            f"make as one{f', {rate:,} images each on average' if rate else ''}), "
            f"{how_many(int(passes.get('backward_calls', 0)), 'backward call')}, "
            f"{how_many(int(passes.get('syncs', 0)), 'host synchronisation')} outside the model"
            f"{f' ({syncs:g} per call)' if syncs is not None else ''}{cost}.")


def passes_table(passes: Mapping[str, Any]) -> Table:
    """Per stage: forward and backward image-passes, per test image, and the mean batch of its forward calls."""
    images = int(passes.get("images") or 0)
    rows = []
    stages = dict(passes.get("stages", {}))
    outside = passes.get("outside_stages") or {}
    if outside.get("calls"):
        stages["(outside stages, this process)"] = outside
    for name, count in stages.items():
        forward, backward, calls = int(count["forward"]), int(count["backward"]), int(count["calls"])
        non_model = count.get("non_model_seconds_per_call")  # the rates as the ledger stored them (call_rates)
        wall = count.get("wall_seconds")  # the stage's elapsed time (0 or absent: counted before it was recorded)
        rows.append([name, forward, backward, per(forward, images), per(backward, images), per(forward, calls),
                     int(count.get("rounds", 0)) or "-", dash(count.get("images_per_round")),
                     dash(count.get("syncs_per_call")), round(non_model * 1000, 2) if non_model else "-",
                     round(wall, 2) if wall else "-"])
    return Table("Model passes per stage (images forward and back; per test image; mean images per forward call; "
                 "rounds: forward calls a device could make as one; host synchronisations outside the model and CPU "
                 "milliseconds outside it, per forward or backward call, on this machine; the stage's elapsed "
                 "seconds on this machine, work shared by several stages split among them)",
                 ["stage", "forward", "backward", "forward / image", "backward / image", "images per call",
                  "rounds", "images per round", "syncs per call", "non-model ms per call", "seconds"],
                 rows, folded=True)


def dash(value: float | None) -> float | str:
    """``value``, ``-`` when there is none."""
    return "-" if value is None else value


def per(count: int, units: int) -> float | str:
    """``count / units`` to one decimal, ``-`` when there are no units."""
    return round(count / units, 1) if units else "-"


def forecast_sentence(metrics: Mapping[str, Any]) -> str:
    """What the run said it would cost before its first stage and what it took (empty for a run that said nothing:
    a smoke test, a resumed run, a run without progress output, an experiment without a forecast)."""
    forecast, wall = metrics.get("forecast"), metrics.get("wall_seconds")
    if not forecast or not wall or not forecast.get("seconds"):
        return ""
    return (f"Before its first stage the run said: {forecast['sentence']}. It took {duration(wall)}, "
            f"{wall / forecast['seconds']:.2f} times the {duration(forecast['seconds'])} forecast.")


def with_passes(sections: Sequence[Section], passes: Mapping[str, Any] | None, forecast: str = "") -> list[Section]:
    """``sections`` with the run's passes (and ``forecast``: :func:`forecast_sentence`) stated in the setup section
    (a section of their own when there is none); unchanged when there are neither (a run written before passes
    were counted)."""
    sections = list(sections)
    paragraphs = [*([passes_paragraph(passes)] if passes else []), *([forecast] if forecast else [])]
    if not paragraphs:
        return sections
    tables = [passes_table(passes)] if passes else []
    for i, section in enumerate(sections):
        if section.title == SETUP:
            sections[i] = dataclasses.replace(section, paragraphs=[*section.paragraphs, *paragraphs],
                                              tables=[*section.tables, *tables])
            return sections
    return [*sections, Section(SETUP, paragraphs, tables)]
