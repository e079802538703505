"""The faithfulness gate: is an importance map a Region of Importance (RoI) for *this* model?

An importance map (Grad-CAM, saliency, ...) is only a picture until it is shown to pick the pixels the model uses.
Two questions are kept apart, each with its own rule (:mod:`advspatial.statistics.outcomes`):

**Faithfulness** (the gate; it decides whether RoI-dependent results mean anything). Paired per image, on the
correctly classified images, the RoI (the map's top ``fraction``, :func:`advspatial.regions.top_fraction_mask`) is
compared with regions of exactly the same pixel count that know nothing of the map's content
(:func:`~advspatial.faithfulness.deletion.gate_regions`):

======================  ===========================================================
comparison              the other region
======================  ===========================================================
beats location          the RoI's own shape cyclically shifted to a random place
beats scatter           as many pixels at random places (judged with fills that
                        create no edges: ``road``, ``blur``, ``inpaint``)
beats randomization     the map changes when the model's weights are destroyed
======================  ===========================================================

by **deletion**, per fill (:mod:`.measures`: filling the RoI lowers the true-class logit more than filling the
other region). Each fill reads *beats* (95% CI above 0), *not better* (90% CI below the margin: a stated share of
the RoI's own damage) or *undecided*.

The **restricted attack** (L-inf PGD confined to the RoI removes more of the true-label margin than the same attack
confined to the other region; its budget calibrated so that the unrestricted attack flips about half of the
images, :mod:`.calibration`) is measured on every row and reported apart: at that budget it reads first-order
gradient mass (the margin removed in a region is, to first order, the budget times the margin's input gradient
summed over the region; docs/methods.md, "What the restricted-attack row measures"), a second construct rather
than a second measurement of use, so it counts neither in a row's outcome nor in the pass rule
(:data:`~advspatial.faithfulness.record.GRADIENT_MASS`).

A **positive control** is gated beside the map on the same images (:mod:`.controls`): occlusion under the gate's
own blur fill, a map faithful by construction to deletion. Where the control does not beat a comparison either,
the map's result there is not evidence about the map: that cell reads *cannot judge*.

The gate's status (:data:`~advspatial.faithfulness.record.GATE_STATUSES`; its cells are the faithfulness rows'
deletion fills): **passed** when every cell beats, the
map survives randomization and ``n >= min_n``; **failed** when some cell is *not better* (where the control
beats) or a randomization check fails; **cannot judge** when every cell the map does not beat is one the control
cannot pass either; otherwise **undecided**, with the images that would decide it
(:meth:`~advspatial.faithfulness.record.GateResult.images_to_decide`). The rows are an intersection-union test: no
correction for their number is needed (each must hold on its own). The randomization row is the cascading
model-parameter randomization check (Adebayo et al. 2018): after every layer is re-initialized, the map's |Spearman|
with the trained model's map must be below :data:`SURVIVES_RANDOMIZATION`, and (when the gate stage runs them)
smooth MPRT and efficient MPRT (Hedström et al. 2024, :func:`~advspatial.faithfulness.mprt.randomization_checks`).

**Specificity** (a finding about the model, never a veto): the same measures against regions that need no model
at all, the class and dataset layout (cross-fitted mean maps of the other images), a centre prior, the image's
brightest pixels and its strongest edges (:mod:`advspatial.regions.references`). Each reads *beats*, *equivalent*
(90% CI inside ± the margin), *does less* or *undecided*. A faithful map of a model that reads a garment's
silhouette points at its edges: being as damaging as the edges says where this model looks, not that the map is
wrong (:mod:`.specificity` words it).

Beside the verdict, not part of it: a **blur control** (the same comparisons for a Gaussian-blurred copy of the
map; when it beats everything the map beats, passing may come from smoothness alone) and the maps' **complexity**
(Gini sparseness, 0 = flat, 1 = one pixel).

Fills (:data:`~advspatial.faithfulness.deletion.DELETION_FILLS`; parameters through ``fill_params={fill: {...}}``):
``zero``, ``mean`` (needs ``{"mean": {"dataset_mean": (m,)}}``), ``blur`` (a Gaussian blur of the image, sigma one
pixel per 32 of the shorter side, :func:`~advspatial.faithfulness.deletion.deletion_blur_sigma`), ``road`` (noisy
linear imputation), ``inpaint`` (diffusion inpainting), ``noise`` (``x + sigma*eps`` clipped, eps per sample id).

Streaming: :func:`~advspatial.faithfulness.deletion.deletion_columns` and
:func:`~advspatial.faithfulness.deletion.restricted_attack_columns` work on one batch of named regions and return
per-image columns, which an experiment caches per batch under global sample ids and concatenates before
:func:`summarize_gate`. Sequential looks (:mod:`.sequential`) stop the columns once every row is decided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ShapeError, check_range, unknown_name
from ..regions.references import REFERENCE_MAPS, REFERENCE_WORDS
from ..statistics.estimates import bootstrap_mean_ci, paired_p
from ..statistics.outcomes import (
    BEATS, FAITHFULNESS, NOT_BETTER, SPECIFICITY, UNDECIDED, decide,
)
from .controls import CONTROL_MEASURES, control_tag
from .deletion import BLURRED, REFERENCE_PREFIX, ROI
from .measures import EDGE_FREE_FILLS, differences, fills_in, margins
from .randomization import CASCADE_MAX_SPEARMAN, nan_mean
from .record import (
    CANNOT_JUDGE, FAILED, GATE_UNDECIDED, PASSED, BlurControl, ClassGate, Comparison, GateResult, PairedEffect,
    counted,
)
from .sanity import SKIPPABLE_CHECKS, randomization_comparison

__all__ = [
    "COMPARISONS", "DEFAULT_MARGIN", "EDGE_FREE_FILLS", "MIN_N", "SURVIVES_RANDOMIZATION",
    "comparison_decisions", "comparison_failures", "control_cells", "gini_sparseness", "paired_effect",
    "summarize_gate",
]

#: default minimum number of images for a verdict (METHODS.md: n < 30 is "insufficient data")
MIN_N = 30
#: default margin of the rows' rules: a share of the RoI's own mean damage on each measure (docs/methods.md,
#: "Three outcomes per comparison")
DEFAULT_MARGIN = 0.1
#: |Spearman| with the trained model's map after every layer is randomized from which a map "survives"
SURVIVES_RANDOMIZATION = CASCADE_MAX_SPEARMAN


def paired_effect(differences: torch.Tensor, seed: int = 0) -> PairedEffect:
    """:class:`PairedEffect` of per-image differences (NaN left out)."""
    return PairedEffect(bootstrap_mean_ci(differences, seed), paired_p(differences))


@dataclass(frozen=True)
class ComparisonSpec:
    """One row of the gate: the RoI against ``region`` (a column tag), worded "beats ``words``", read by the rule
    of its ``role`` (``faithfulness`` or ``specificity``)."""

    name: str
    region: str
    words: str
    role: str
    edge_free_only: bool = False


#: the gate's comparisons in report order (the randomization row is added from the randomization check)
COMPARISONS = (
    ComparisonSpec("location", "shifted", "location (its shape at a random place)", FAITHFULNESS),
    ComparisonSpec("scatter", "scattered", "scatter (as many random pixels)", FAITHFULNESS, edge_free_only=True),
    *(ComparisonSpec(name, REFERENCE_PREFIX + name, REFERENCE_WORDS[name], SPECIFICITY) for name in REFERENCE_MAPS),
)
FAITHFULNESS_ROWS = tuple(s.name for s in COMPARISONS if s.role == FAITHFULNESS)


def _columns(columns: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v).cpu() for k, v in columns.items()}


def comparison_decisions(columns: Mapping[str, torch.Tensor], margin: float = DEFAULT_MARGIN, seed: int = 0,
                         region: str = ROI) -> dict[str, dict[str, tuple[torch.Tensor, float, str]]]:
    """The per-image differences behind every comparison of :data:`COMPARISONS` for the map of ``region`` (not
    the randomization row), on the measures that count (:func:`~advspatial.faithfulness.record.counted`):
    ``{comparison: {measure: (differences, margin, rule)}}``, > 0 where the map's region does more damage (what
    :mod:`~advspatial.faithfulness.sequential` looks at)."""
    cols = _columns(columns)
    fills = fills_in(cols)
    own = margins(cols, fills, region, margin)
    return {spec.name: {m: (d, own.get(m, 0.0), spec.role)
                        for m, d in differences(cols, fills, region, spec.region, spec.edge_free_only).items()
                        if counted(m)}
            for spec in COMPARISONS}


def _comparison(spec: ComparisonSpec, diffs: Mapping[str, torch.Tensor], own: Mapping[str, float], seed: int
                ) -> Comparison:
    decisions = {m: decide(d, spec.role, own.get(m, 0.0), seed) for m, d in diffs.items()}
    effects = {m: PairedEffect(decisions[m].estimate, paired_p(d)) for m, d in diffs.items()}
    own_rule = [d for m, d in decisions.items() if counted(m)]
    beats = bool(own_rule) and all(d.outcome == BEATS for d in own_rule)
    return Comparison(spec.name, spec.words, effects, beats, bool(own_rule), role=spec.role, decisions=decisions)


def _comparisons(cols: Mapping[str, torch.Tensor], fills: Sequence[str], mine: str, seed: int, margin: float,
                 roles: Sequence[str] = (FAITHFULNESS, SPECIFICITY), measures: Sequence[str] | None = None,
                 regions: Mapping[str, str] | None = None) -> dict[str, Comparison]:
    """The comparisons of region ``mine`` whose role is in ``roles`` (``regions``: other region tags by name)."""
    own = margins(cols, fills, mine, margin)
    out = {}
    for spec in COMPARISONS:
        if spec.role not in roles:
            continue
        other = (regions or {}).get(spec.name, spec.region)
        if other == mine:
            continue
        out[spec.name] = _comparison(spec, differences(cols, fills, mine, other, spec.edge_free_only, measures),
                                     own, seed)
    return out


def control_cells(columns: Mapping[str, torch.Tensor], margin: float = DEFAULT_MARGIN
                  ) -> dict[str, dict[str, tuple[torch.Tensor, float, str]]]:
    """The positive control's faithfulness cells, each control map on the measures it is built for
    (:data:`~advspatial.faithfulness.controls.CONTROL_MEASURES`), in :func:`comparison_decisions`' layout; empty
    without control columns."""
    cols = _columns(columns)
    out: dict[str, dict[str, tuple[torch.Tensor, float, str]]] = {}
    for kind, measures in CONTROL_MEASURES.items():
        tag = control_tag(kind)
        if not any(k.endswith(":" + tag) for k in cols):
            continue
        fills = fills_in(cols, tag)
        wanted = [f"deletion:{f}" for f in fills] if measures == "deletion" else [measures]
        own = margins(cols, fills, tag, margin)
        for spec in COMPARISONS:
            if spec.role != FAITHFULNESS:
                continue
            for m, d in differences(cols, fills, tag, control_tag(kind, spec.region), spec.edge_free_only,
                                    wanted).items():
                out.setdefault(spec.name, {})[m] = (d, own.get(m, 0.0), FAITHFULNESS)
    return out


def _control_comparisons(cols: Mapping[str, torch.Tensor], seed: int, margin: float) -> dict[str, Comparison]:
    """The positive control's faithfulness comparisons (:func:`control_cells`, each read by the rule)."""
    specs = {s.name: s for s in COMPARISONS}
    return {name: _comparison(specs[name], {m: d for m, (d, _, _) in cells.items()},
                              {m: own for m, (_, own, _) in cells.items()}, seed)
            for name, cells in control_cells(cols, margin).items()}


def _blur_control(cols: Mapping[str, torch.Tensor], fills: Sequence[str], seed: int, margin: float,
                  comparisons: Mapping[str, Comparison]) -> BlurControl | None:
    """The blurred copy's comparisons, and whether it does as well as the map (None: no blurred columns)."""
    if not any(k.endswith(f":{BLURRED}") for k in cols):
        return None
    mine = _comparisons(cols, fills, BLURRED, seed, margin)
    beaten_by_map = [k for k, c in comparisons.items() if c.beats and k in mine]
    return BlurControl({k: bool(c.beats) for k, c in mine.items()},
                       bool(beaten_by_map) and all(mine[k].beats for k in beaten_by_map),
                       {m: paired_effect(d, seed) for m, d in differences(cols, fills, ROI, BLURRED).items()})


def _cell_text(gate: GateResult, reading: str) -> list[str]:
    cells = [c for c in gate.cells() if c.reading == reading]
    return [f"{gate.comparisons[c.comparison].short} x {c.measure} {c.decision.mean:+.3g} "
            f"[{c.decision.low:+.3g}, {c.decision.high:+.3g}]" for c in cells]


def _status(gate: GateResult, prerequisites: Sequence[str], fills_ok: bool) -> tuple[str, str]:
    """(status, reason) of a gate record whose comparisons are set (module docstring)."""
    rand = gate.comparisons["randomization"]
    rand_failed = rand.checked and bool(rand.failed) and not rand.skipped
    not_better, cannot, undecided = (_cell_text(gate, r) for r in (NOT_BETTER, CANNOT_JUDGE, UNDECIDED))
    missing = [gate.comparisons[k].short for k in FAITHFULNESS_ROWS
               if k in gate.comparisons and not gate.comparisons[k].checked]
    if not fills_ok or not_better or rand_failed:
        reasons = list(prerequisites) + [f"not better than {t}" for t in not_better] + (
            ["fails randomization: " + "; ".join(rand.failing())] if rand_failed else [])
        return FAILED, "; ".join(reasons)
    open_checks = list(prerequisites) + [f"{name}: not checked" for name in missing] + (
        [f"randomization {'not run' if rand.skipped else 'not checked' if not rand.checked else 'undecided: '}"
         + "; ".join(rand.undecided)] if not rand.beats else [])
    if undecided or open_checks:
        need = gate.images_to_decide()
        tail = f" (about {int(need):,} correct images would decide)" if math.isfinite(need) else ""
        return GATE_UNDECIDED, "undecided: " + "; ".join(open_checks + undecided) + tail
    if cannot:
        return CANNOT_JUDGE, ("the gate cannot judge this setting: the positive control does not beat "
                              + "; ".join(cannot) + " either")
    return PASSED, "passed"


def _checked_columns(columns: Mapping[str, torch.Tensor], labels: torch.Tensor | Sequence[int]
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(labels, columns) as CPU tensors, every column one value per label."""
    labels = torch.as_tensor(labels).cpu().long().reshape(-1)
    n = int(labels.shape[0])
    for key, col in columns.items():
        if tuple(torch.as_tensor(col).shape) != (n,):
            raise ShapeError(f"column {key!r} has shape {tuple(torch.as_tensor(col).shape)}; labels have ({n},)")
    return labels, _columns(columns)


def _prerequisites(n: int, fills: Sequence[str], min_n: int, min_fills: int) -> tuple[list[str], bool]:
    """(what is missing in words, whether the fills suffice)."""
    missing = []
    if n < min_n:
        missing.append(f"insufficient data: n={n} < {min_n}")
    fills_ok = len(fills) >= min_fills
    if not fills_ok:
        missing.append(f"deletion: {len(fills)} fill(s) {list(fills)}, need >= {min_fills}")
    return missing, fills_ok


def comparison_failures(columns: Mapping[str, torch.Tensor], labels: torch.Tensor | Sequence[int], seed: int = 0,
                        min_n: int = MIN_N, min_fills: int = 2, margin: float = DEFAULT_MARGIN) -> list[str]:
    """What shows the map unfaithful from its columns alone (the randomization row aside): the faithfulness cells
    that are *not better* where the positive control beats; empty when none is, so that the randomization checks
    can still change the verdict."""
    labels, cols = _checked_columns(columns, labels)
    fills = fills_in(cols)
    gate = GateResult(False, "", status=GATE_UNDECIDED, comparisons=_comparisons(cols, fills, ROI, seed, margin,
                                                                                  (FAITHFULNESS,)),
                      control=_control_comparisons(cols, seed, margin))
    _, fills_ok = _prerequisites(int(labels.shape[0]), fills, min_n, min_fills)
    return ([] if fills_ok else ["too few deletion fills"]) + _cell_text(gate, NOT_BETTER)


def _per_class(cols: Mapping[str, torch.Tensor], fills: Sequence[str], labels: torch.Tensor, seed: int,
               class_names: Sequence[str] | Mapping[int, str] | None) -> dict[str, ClassGate]:
    """The location comparison on each class's images."""
    out = {}
    for c in torch.unique(labels).tolist():
        keep = labels == c
        diffs = differences({k: v[keep] for k, v in cols.items()}, fills, ROI, "shifted")
        name = str(class_names[c]) if class_names is not None else str(c)
        out[name] = ClassGate(int(keep.sum()), {m: paired_effect(d, seed) for m, d in diffs.items()})
    return out


def summarize_gate(
    columns: Mapping[str, torch.Tensor],
    labels: torch.Tensor | Sequence[int],
    seed: int = 0,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    min_n: int = MIN_N,
    *,
    fraction: float | None = None,
    min_fills: int = 2,
    randomization: list[dict[str, Any]] | None = None,
    mprt: Mapping[str, Any] | None = None,
    skipped: Sequence[str] = (),
    margin: float = DEFAULT_MARGIN,
    restricted_attack: Mapping[str, Any] | None = None,
) -> GateResult:
    """The gate's record from concatenated columns (:func:`~advspatial.faithfulness.deletion.deletion_columns`,
    :func:`~advspatial.faithfulness.deletion.restricted_attack_columns`, and the positive control's columns when
    present, :mod:`.controls`).

    Its status follows the module docstring's rule, with ``n >= min_n`` images and at least ``min_fills`` deletion
    fills; ``margin`` is the rules' margin as a share of the RoI's own damage per measure. ``randomization``: the
    cascading check's rows; ``mprt``: smooth and efficient MPRT (:func:`~advspatial.faithfulness.mprt.
    randomization_checks`); missing rows leave the gate undecided. Effects are paired per image with a bootstrap
    CI (``seed``); per class (``labels``, named by ``class_names``) for the location comparison. ``skipped`` names
    the checks of :data:`SKIPPABLE_CHECKS` left out because the gate had already failed (:mod:`.sequential`).
    ``restricted_attack`` records the restricted attack's budget (:mod:`.calibration`).

    Examples:
        >>> import torch
        >>> from advspatial.faithfulness.gate import summarize_gate
        >>> gen = torch.Generator().manual_seed(0)
        >>> n = 60
        >>> cols = {"clean:correct": torch.ones(n), "attack:margin_clean": torch.full((n,), 4.0)}
        >>> for fill in ("road", "blur"):   # the RoI's deletion lowers the logit by ~2, any other region by ~0.5
        ...     for region in ("roi", "shifted", "scattered"):
        ...         base = 2.0 if region == "roi" else 0.5
        ...         cols[f"deletion:{fill}:drop:{region}"] = base + 0.3 * torch.randn(n, generator=gen)
        >>> for region in ("roi", "shifted", "scattered"):  # the attack inside the RoI flips, elsewhere it does not
        ...     after = -1.0 if region == "roi" else 3.0
        ...     cols[f"attack:margin:{region}"] = after + 0.3 * torch.randn(n, generator=gen)
        >>> rows = [{"spearman": 0.05}]   # the map changes when the weights are destroyed
        >>> gate = summarize_gate(cols, torch.zeros(n, dtype=torch.long), randomization=rows)
        >>> gate.status, gate.comparisons["location"].outcome
        ('passed', 'beats')
    """
    check_range("min_n", min_n, 1)
    check_range("min_fills", min_fills, 1)
    check_range("margin", margin, 0, 1)
    for name in skipped:
        if name not in SKIPPABLE_CHECKS:
            raise unknown_name("skipped check", name, SKIPPABLE_CHECKS)
    labels, cols = _checked_columns(columns, labels)
    n = int(labels.shape[0])
    fills = fills_in(cols)
    comparisons = _comparisons(cols, fills, ROI, seed, margin)
    comparisons["randomization"] = randomization_comparison(randomization, mprt, skipped, min_n)
    gate = GateResult(
        passed=False, reason="", status=GATE_UNDECIDED, fraction=fraction, n=n, comparisons=comparisons,
        control=_control_comparisons(cols, seed, margin), margin=margin,
        restricted_attack=dict(restricted_attack or {}),
        blurred=_blur_control(cols, fills, seed, margin, comparisons),
        complexity={k.split(":", 1)[1]: nan_mean(v) for k, v in cols.items() if k.startswith("complexity:")},
        means=_means(cols, fills), per_class=_per_class(cols, fills, labels, seed, class_names),
        randomization=randomization, mprt=dict(mprt) if mprt is not None else None, skipped=list(skipped),
    )
    prerequisites, fills_ok = _prerequisites(n, fills, min_n, min_fills)
    gate.status, gate.reason = _status(gate, prerequisites, fills_ok)
    gate.passed = gate.status == PASSED
    return gate


def _means(cols: Mapping[str, torch.Tensor], fills: Sequence[str]) -> dict[str, Any]:
    return {
        "roi_pixels": nan_mean(cols["roi:pixels"]) if "roi:pixels" in cols else math.nan,
        "deletion": {f: {k.removeprefix(f"deletion:{f}:drop:"): nan_mean(v) for k, v in cols.items()
                         if k.startswith(f"deletion:{f}:drop:")} for f in fills},
        "attack": {k.removeprefix("attack:margin:"): nan_mean(v) for k, v in cols.items()
                   if k.startswith("attack:margin:")},
    }


def gini_sparseness(maps: torch.Tensor) -> torch.Tensor:
    """(N,) Gini index of each map's values (Chalasani et al. 2020): 0 = flat, near 1 = one pixel carries all.

    The complexity a report shows beside the gate (a blurrier map is less sparse).
    """
    flat = maps.detach().flatten(1).double().clamp_min(0).sort(dim=1).values
    d = flat.shape[1]
    total = flat.sum(1)
    k = torch.arange(1, d + 1, dtype=torch.float64, device=flat.device)
    gini = ((2 * k - d - 1) * flat).sum(1) / (d * total.clamp_min(1e-300))
    return torch.where(total > 0, gini, torch.zeros_like(gini)).float()
