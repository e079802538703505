"""Smoke tests say so: a run whose settings decide nothing is labelled, and no verdict of it reads as a finding.

A ``--quick`` run (CI-sized: a few dozen images, a few attack steps, one epoch) goes through every stage and
prints every table, but its numbers decide nothing. Its config records that (``smoke_test``, set by
``--quick``, kept in ``config.yaml`` and so by ``--resume``), and :func:`mark_result` — the one step every
run's results pass through before they are written or printed
(:func:`~advspatial.experiments.running.run_experiment`) — then

- opens the printed summary with :data:`SMOKE_LINE` (the report opens with :func:`banner`, and ``metrics.json``
  with the key ``smoke_test``);
- turns every verdict word ``w`` into ``"(smoke) would read: w"``: in ``metrics.json`` and ``per_image.csv``
  every value under a verdict key (:func:`is_verdict_key`), in the summary and the report every occurrence of
  a verdict word (:data:`~advspatial.statistics.inference.VERDICTS` and every verdict this run's metrics hold, so
  a new claim producer that stores its verdict under a ``verdict`` key is covered without a line of its own), and
  every word of the experiment's own vocabulary (its registry's ``verdict_words``) whether or not a verdict holds
  it: the defence's "not converged" is also printed for the attack's convergence check, which a smoke test's few
  steps leave unconverged whatever the attack;
- marks each headline sentence the same way (where an attack acts against the regions of the RoI's size,
  :func:`headline_sentences`): it draws conclusions in words of its own ("catches more", "acts at the centre"),
  which no verdict word would mark.

A quoted word (``'helps'``), a legend entry (``supported = ...``) and a rule's definition (``supported only
when ...``) explain the vocabulary and stay as they are. A run without ``smoke_test`` is returned unchanged.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..report.html import Section
from ..statistics.verdicts import VERDICTS
from .results import ExperimentResult

#: the line a smoke test's summary and report open with
SMOKE_LINE = "smoke test: these settings decide nothing"
#: what every verdict word of a smoke test is prefixed with: the word these numbers would give, not a finding
SMOKE_MARK = "(smoke) would read: "
#: a key whose value is a verdict: ``verdict``, ``*_verdict``, ``interpretation`` (a gate's), ``*_interpretation``
VERDICT_KEYS = ("verdict", "interpretation")


def banner() -> str:
    """The sentence a smoke test's report and summary open with: :data:`SMOKE_LINE` and what it means."""
    return (f"{SMOKE_LINE} (CI-sized settings that check the pipeline runs; each verdict below reads "
            f"'{SMOKE_MARK}WORD', the word these numbers would give at full size, which is not a finding)")


def is_verdict_key(key: Any) -> bool:
    """True for a metrics or row key that holds a verdict word (see :data:`VERDICT_KEYS`)."""
    return isinstance(key, str) and any(key == k or key.endswith("_" + k) for k in VERDICT_KEYS)


def mark_word(word: Any) -> Any:
    """``"(smoke) would read: word"`` for a non-empty verdict string (idempotent); anything else unchanged."""
    if not isinstance(word, str) or not word or word.startswith(SMOKE_MARK):
        return word
    return SMOKE_MARK + word


def would_read(verdict: str) -> str:
    """The word a smoke test's ``verdict`` would read at full size (the verdict itself when it is not marked)."""
    return verdict.removeprefix(SMOKE_MARK)


def is_headline(value: Any) -> bool:
    """True for the metrics of one attack map's regions of the RoI's size (a ``decomposition`` beside its
    ``sentence``): its sentence is a headline sentence."""
    return isinstance(value, Mapping) and "decomposition" in value and isinstance(value.get("sentence"), str)


def headline_sentences(value: Any) -> list[str]:
    """Every headline sentence (:func:`is_headline`) of ``value`` (nested dicts and lists), unmarked."""
    if is_headline(value):
        return [would_read(value["sentence"])]
    children = value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else []
    return [s for child in children for s in headline_sentences(child)]


def mark_tree(value: Any) -> Any:
    """A copy of ``value`` (nested dicts and lists) with every string under a verdict key, and every headline
    sentence, marked."""
    if is_headline(value):
        return {k: mark_word(v) if k == "sentence" else mark_tree(v) for k, v in value.items()}
    if isinstance(value, Mapping):
        return {k: mark_word(v) if is_verdict_key(k) and isinstance(v, str) else mark_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mark_tree(v) for v in value]
    return value


def unmark_tree(value: Any) -> Any:
    """The inverse of :func:`mark_tree`: a smoke test's metrics with every verdict word as the run computed it
    (``advspatial report`` re-renders from them, then marks the report again)."""
    if is_headline(value):
        return {k: would_read(v) if k == "sentence" else unmark_tree(v) for k, v in value.items()}
    if isinstance(value, Mapping):
        return {k: would_read(v) if is_verdict_key(k) and isinstance(v, str) else unmark_tree(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [unmark_tree(v) for v in value]
    return value


def verdicts_in(value: Any) -> set[str]:
    """Every string held under a ``verdict``/``*_verdict`` key of ``value`` (nested dicts and lists)."""
    found: set[str] = set()
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(v, str) and isinstance(k, str) and (k == "verdict" or k.endswith("_verdict")):
                found.add(v)
            else:
                found |= verdicts_in(v)
    elif isinstance(value, list):
        for v in value:
            found |= verdicts_in(v)
    return found


def verdict_pattern(words: Iterable[str]) -> re.Pattern[str]:
    """A regex of the verdict ``words`` as whole words, longest first ("not supported" before "supported"),
    case-insensitive, leaving out a word already marked, quoted, opening a legend entry (``word =``) or a rule's
    definition (``supported only when ...``): those explain the vocabulary, they are no verdict."""
    ordered = sorted({w for w in words if w and not w.startswith(SMOKE_MARK)}, key=len, reverse=True)
    alternatives = "|".join(re.escape(w) for w in ordered) or r"(?!)"
    marked = re.escape(SMOKE_MARK.rstrip(" "))
    return re.compile(rf"(?<![\w'\"])(?<!{marked} )(?:{alternatives})(?![\w'\"])(?!\s*(?:=|(?:only )?when\b))",
                      re.IGNORECASE)


def mark_text(text: str, pattern: re.Pattern[str], sentences: re.Pattern[str] | None = None) -> str:
    """``text`` with every verdict word ``pattern`` finds, and every headline sentence ``sentences`` finds
    (:func:`sentence_pattern`), prefixed by :data:`SMOKE_MARK` (a word's case kept)."""
    text = pattern.sub(lambda m: SMOKE_MARK + m.group(0), text)
    return text if sentences is None else sentences.sub(lambda m: SMOKE_MARK + m.group(0), text)


def sentence_pattern(sentences: Iterable[str], pattern: re.Pattern[str]) -> re.Pattern[str] | None:
    """A regex of the headline ``sentences`` as a text reads once ``pattern``'s verdict words in it are marked
    (longest first), leaving out a sentence already marked; None without any."""
    shown = sorted({mark_text(would_read(s), pattern) for s in sentences}, key=len, reverse=True)
    if not shown:
        return None
    return re.compile(rf"(?<!{re.escape(SMOKE_MARK)})(?:{'|'.join(map(re.escape, shown))})")


def _mark_cell(value: Any, pattern: re.Pattern[str]) -> Any:
    return mark_text(value, pattern) if isinstance(value, str) else value


def mark_sections(sections: list[Any], pattern: re.Pattern[str], sentences: re.Pattern[str] | None = None
                  ) -> list[Any]:
    """Report sections (:class:`~advspatial.report.html.Section`) with every verdict word in their paragraphs,
    notes, table captions and cells and figure captions marked, and the headline ``sentences`` where a paragraph
    holds them; titles and column names stay."""
    marked = []
    for s in sections:
        if not isinstance(s, Section):
            marked.append(s)
            continue
        tables = [dataclasses.replace(t, caption=mark_text(t.caption, pattern),
                                      rows=[[_mark_cell(v, pattern) for v in row] for row in t.rows]) for t in s.tables]
        figures = [dataclasses.replace(f, caption=mark_text(f.caption, pattern)) for f in s.figures]
        marked.append(dataclasses.replace(s, paragraphs=[mark_text(p, pattern, sentences) for p in s.paragraphs],
                                          notes=[mark_text(n, pattern) for n in s.notes], tables=tables,
                                          figures=figures))
    return marked


def mark_result(result: ExperimentResult, smoke_test: bool, words: Iterable[str] = ()) -> ExperimentResult:
    """The result as a smoke test writes and prints it (see the module docstring), its texts marked at every
    verdict word and every one of ``words`` (the experiment's vocabulary); ``result`` itself when ``smoke_test`` is
    False."""
    if not smoke_test:
        return result
    pattern = verdict_pattern([*VERDICTS, *words, *verdicts_in(result.metrics), *verdicts_in(result.per_image)])
    sentences = sentence_pattern(headline_sentences(result.metrics), pattern)
    return ExperimentResult(
        metrics={"smoke_test": banner(), **mark_tree(result.metrics)},
        per_image=[mark_tree(row) for row in result.per_image],
        summary=banner() + "\n" + mark_text(result.summary, pattern, sentences),
        report_sections=mark_sections(list(result.report_sections), pattern, sentences),
        answer=[mark_text(line, pattern, sentences) for line in result.answer],
        details=mark_text(result.details, pattern, sentences) if result.details else "",
    )
