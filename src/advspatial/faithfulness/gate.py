"""The faithfulness gate: is an importance map a Region of Importance (RoI) for *this* model?

An importance map (Grad-CAM, saliency, ...) is only a picture until it is shown
to pick the pixels the model uses. "Better than a random place" is not enough:
on centred data a fixed centre disc, the image's own intensity or its edges all
beat a randomly placed region, without knowing anything about the model (science
review P0-1). So the gate asks whether the map beats everything that needs no
model. Paired per image, on the correctly classified images, the RoI (the map's
top ``fraction``, :func:`advspatial.regions.top_fraction_mask`) is compared with
regions of exactly the same pixel count (:func:`gate_regions`):

======================  ===========================================================
comparison              the other region
======================  ===========================================================
beats location          the RoI's own shape cyclically shifted to a random place
beats scatter           as many pixels at random places (judged with fills that
                        create no edges: ``road``, ``blur``, ``inpaint``)
beats class layout      the top pixels of the mean map of the *other* images of
                        the class (cross-fitted; :mod:`~advspatial.regions.references`)
beats dataset layout    the same over the other images of every class
beats the centre prior  a centred Gaussian
beats image intensity   the image's brightest pixels
beats image edges       the image's strongest Sobel edges
beats randomization     the map changes when the model's weights are destroyed
======================  ===========================================================

"Beats" means, for that comparison, every measure's paired effect has its 95%
bootstrap CI above 0:

1. **deletion**, per fill: filling the RoI lowers the true-class logit more
   than filling the other region (``drop_other - ...`` as ``drop_roi -
   drop_other``);
2. **restricted attack**: the experiment's own attack (L-inf PGD) confined to
   the RoI lowers the true-label margin more than the same attack confined to
   the other region (``margin_other - margin_roi``).

The gate passes only when the map beats all of them and ``n >= min_n``: an
intersection-union test, so no correction for the number of comparisons is
needed (each must hold on its own). A failure names what the map did not beat
("not interpretable: the RoI is no better than the class layout"). The
randomization row is the cascading model-parameter randomization check
(Adebayo et al. 2018): after every layer is re-initialized, the map's |Spearman|
with the trained model's map must be below :data:`SURVIVES_RANDOMIZATION`, and
(when the gate stage runs them) smooth MPRT and efficient MPRT (Hedström et
al. 2024, :func:`~advspatial.faithfulness.mprt.randomization_checks`) must
pass: the denoised maps lose their rank agreement with the fully randomized
model's, and the maps' complexity changes (either direction) under full randomization.

Beside the verdict, not part of it: a **blur control** -- the same comparisons
for a Gaussian-blurred copy of the map (:func:`blurred_map`); when the blurred
copy beats everything the map beats, the report says that passing may come
from smoothness alone -- and the maps' **complexity** (Gini sparseness, 0 =
flat, 1 = one pixel).

Fills (:data:`DELETION_FILLS`; parameters through ``fill_params={fill: {...}}``):

- ``zero``: 0 (Fashion-MNIST's background);
- ``mean``: a per-channel dataset mean (needs ``{"mean": {"dataset_mean": (m,)}}``);
- ``blur``: a Gaussian blur of the image (``sigma``; default one pixel per 32
  pixels of the shorter side, at least 1,
  :func:`~advspatial.faithfulness.deletion.deletion_blur_sigma`);
- ``inpaint``: diffusion inpainting from the pixels around the region;
- ``noise``: additive Gaussian noise, ``x + sigma*eps`` clipped to [0, 1]
  (``sigma`` default 0.3), ``eps`` drawn per image from (seed, sample id).

Sequential looks (:mod:`.sequential`): an experiment's gate stage computes the columns look by look and stops once
an effect decides the verdict; :func:`comparison_differences` gives the per-image differences it looks at and
:func:`comparison_failures` what the columns alone already fail (then the randomization checks are ``skipped``).

Streaming: :func:`deletion_columns` and :func:`restricted_attack_columns` work
on one batch of named regions and return per-image columns (``dict`` of (N,)
CPU tensors), which an experiment caches per batch under global sample ids and
concatenates (:func:`concat_columns`) before :func:`summarize_gate`. Pass the
global ``sample_ids`` of the batch, or the random regions depend on the batching.
:func:`deletion_curve` gives true-class scores after deleting growing top
fractions (the pixel-flipping curve; it matches ``quantus.PixelFlipping`` for
one-channel images, see the tests).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ShapeError, check_range, unknown_name
from .deletion import BLURRED, REFERENCE_PREFIX, ROI
from ..regions.references import REFERENCE_MAPS, REFERENCE_WORDS
from ..statistics.inference import Estimate, bootstrap_mean_ci, paired_p
from .randomization import CASCADE_MAX_SPEARMAN, nan_mean, cascade_verdict
from .record import BlurControl, ClassGate, Comparison, GateResult, PairedEffect

#: named here too: deletion.py's measurements, randomization.py's test, make_deletion_fill (for tests)
__all__ = [
    "COMPARISONS", "EDGE_FREE_FILLS", "MIN_N", "SKIPPABLE_CHECKS", "SURVIVES_RANDOMIZATION",
    "comparison_differences", "comparison_failures", "gini_sparseness", "paired_effect", "randomization_passed",
    "summarize_gate",
]

#: default minimum number of images for a verdict (METHODS.md: n < 30 is "insufficient data")
MIN_N = 30

# -- summary ------------------------------------------------------------------------

def paired_effect(differences: torch.Tensor, seed: int = 0) -> PairedEffect:
    """:class:`PairedEffect` of per-image differences (NaN left out)."""
    return PairedEffect(bootstrap_mean_ci(differences, seed), paired_p(differences))



#: fills that create no edges where they delete: the only ones the scattered control is judged with
#: (zero-filling scattered pixels creates edges that hurt a model on natural images whatever the pixels show)
EDGE_FREE_FILLS = ("road", "blur", "inpaint")

#: |Spearman| with the trained model's map after every layer is randomized from which a map "survives"
SURVIVES_RANDOMIZATION = CASCADE_MAX_SPEARMAN


@dataclass(frozen=True)
class ComparisonSpec:
    """One row of the gate: the RoI against ``region`` (a column tag), worded "beats ``words``"."""

    name: str
    region: str
    words: str
    edge_free_only: bool = False


#: the gate's comparisons in report order (the randomization row is added from the randomization check)
COMPARISONS = (
    ComparisonSpec("location", "shifted", "location (its shape at a random place)"),
    ComparisonSpec("scatter", "scattered", "scatter (as many random pixels)", edge_free_only=True),
    *(ComparisonSpec(name, REFERENCE_PREFIX + name, REFERENCE_WORDS[name]) for name in REFERENCE_MAPS),
)


def _fills_in(columns: Mapping[str, torch.Tensor]) -> list[str]:
    found = []
    for key in columns:
        parts = key.split(":")
        if len(parts) == 4 and parts[0] == "deletion" and parts[2] == "drop" and parts[3] == ROI \
                and parts[1] not in found:
            found.append(parts[1])
    return found


def _differences(cols: Mapping[str, torch.Tensor], fills: Sequence[str], mine: str, other: str,
                 edge_free_only: bool) -> dict[str, torch.Tensor]:
    """Per-image differences of region ``mine`` against region ``other`` (> 0: ``mine`` matters more), per measure
    whose columns are present: ``deletion:FILL`` (logit drops) and ``attack`` (margins after the restricted attack)."""
    out = {}
    for f in fills:
        if edge_free_only and f not in EDGE_FREE_FILLS:
            continue
        a, b = cols.get(f"deletion:{f}:drop:{mine}"), cols.get(f"deletion:{f}:drop:{other}")
        if a is not None and b is not None:
            out[f"deletion:{f}"] = a.double() - b.double()
    a, b = cols.get(f"attack:margin:{mine}"), cols.get(f"attack:margin:{other}")
    if a is not None and b is not None:
        out["attack"] = b.double() - a.double()
    return out


def _compare(cols: Mapping[str, torch.Tensor], fills: Sequence[str], mine: str, other: str,
             edge_free_only: bool, seed: int) -> dict[str, PairedEffect]:
    """Effects of region ``mine`` against region ``other`` (> 0: ``mine`` matters more), for the columns present."""
    return {k: paired_effect(d, seed) for k, d in _differences(cols, fills, mine, other, edge_free_only).items()}


def comparison_differences(columns: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The per-image differences behind every comparison of :data:`COMPARISONS` (not the randomization row):
    ``{comparison: {measure: (n,) differences}}``, > 0 where the RoI does more damage (what
    :mod:`~advspatial.faithfulness.sequential` looks at)."""
    cols = {k: torch.as_tensor(v).cpu() for k, v in columns.items()}
    fills = _fills_in(cols)
    return {spec.name: _differences(cols, fills, ROI, spec.region, spec.edge_free_only) for spec in COMPARISONS}


def _comparisons(cols: Mapping[str, torch.Tensor], fills: Sequence[str], mine: str, seed: int
                 ) -> dict[str, Comparison]:
    out = {}
    for spec in COMPARISONS:
        if spec.region == mine:
            continue
        effects = _compare(cols, fills, mine, spec.region, spec.edge_free_only, seed)
        checked = bool(effects)
        out[spec.name] = Comparison(spec.name, spec.words, effects,
                                    beats=checked and all(e.above_zero() for e in effects.values()), checked=checked)
    return out


def randomization_passed(rows: Sequence[Mapping[str, Any]] | None) -> bool | None:
    """The cascading check's pass rule: |Spearman| after the last step below :data:`SURVIVES_RANDOMIZATION`.

    None when there are no rows (not checked); False when the last Spearman is NaN (nothing to judge by).
    """
    # randomization.cascade_verdict only reads its rows: its list[dict] annotation is narrower than it needs
    return cascade_verdict(list(rows))["passed"] if rows else None  # type: ignore[arg-type]


#: the randomization checks a gate may leave out once its verdict is decided (:mod:`.sequential`): the cascading
#: check and smooth/efficient MPRT
SKIPPABLE_CHECKS = ("randomization", "mprt")
RANDOMIZATION_WORDS = "randomization (the map changes when the weights are destroyed)"


def _randomization_comparison(rows: Sequence[Mapping[str, Any]] | None,
                              mprt: Mapping[str, Any] | None = None, skipped: Sequence[str] = ()) -> Comparison:
    """The randomization row: the cascading check (:func:`randomization_passed`) and, when given, smooth and
    efficient MPRT (``RandomizationResult.as_dict()``); every one must pass. ``failed`` names each check that
    did not, with its number and bound. With ``"randomization"`` in ``skipped`` the row was not run (the gate had
    already failed): ``skipped``, neither beaten nor a failure of its own."""
    def value(v: float, n: int) -> PairedEffect:
        return PairedEffect(Estimate(v, v, v, n), math.nan)

    if "randomization" in skipped:
        return Comparison("randomization", RANDOMIZATION_WORDS, {}, beats=False, checked=False, failed=[],
                          skipped=True)

    cascade = randomization_passed(rows)
    last = float(rows[-1].get("spearman", math.nan)) if rows else math.nan
    effects = {"cascade spearman": value(last, 1 if rows else 0)}
    failed = [] if cascade is None or cascade else [
        f"cascade |Spearman| after every layer {abs(last):.2f} (>= {SURVIVES_RANDOMIZATION:g} fails)"]
    if mprt is not None:
        smooth, efficient = mprt["smooth_mprt"], mprt["efficient_mprt"]
        effects["smooth MPRT spearman"] = value(float(smooth["spearman"]), 1)
        effects["efficient MPRT rise"] = value(float(efficient["rise"]), 1)
        if not smooth.get("passed", False):
            failed.append(f"smooth MPRT Spearman {float(smooth['spearman']):.2f} "
                          f"(>= {smooth.get('bound', 0.5):g} fails)")
        if not efficient.get("passed", False):
            failed.append(f"efficient MPRT complexity change {float(efficient['rise']):+.2f} "
                          f"(within +-{efficient.get('bound', 0.05):g} fails)")
    checked = cascade is not None
    return Comparison("randomization", RANDOMIZATION_WORDS, effects, beats=checked and not failed, checked=checked,
                      failed=failed)


def _location_layout(cols: Mapping[str, torch.Tensor], fills: Sequence[str], seed: int
                     ) -> tuple[dict[str, dict[str, PairedEffect]], dict[str, PairedEffect]]:
    """The location comparison in the legacy layout: deletion {fill: {logit, accuracy}}, attack {margin, accuracy}."""
    deletion, attack = {}, {}
    for f in fills:
        drop_roi, drop_shifted = (cols.get(f"deletion:{f}:drop:{r}") for r in (ROI, "shifted"))
        right_roi, right_shifted = (cols.get(f"deletion:{f}:correct:{r}") for r in (ROI, "shifted"))
        if drop_roi is not None and drop_shifted is not None and right_roi is not None and right_shifted is not None:
            deletion[f] = {"logit": paired_effect(drop_roi.double() - drop_shifted.double(), seed),
                           "accuracy": paired_effect(right_shifted.double() - right_roi.double(), seed)}
    margin_roi, margin_shifted = (cols.get(f"attack:margin:{r}") for r in (ROI, "shifted"))
    right_roi, right_shifted = (cols.get(f"attack:correct:{r}") for r in (ROI, "shifted"))
    if margin_roi is not None and margin_shifted is not None and right_roi is not None and right_shifted is not None:
        attack = {"margin": paired_effect(margin_shifted.double() - margin_roi.double(), seed),
                  "accuracy": paired_effect(right_shifted.double() - right_roi.double(), seed)}
    return deletion, attack


def _blur_control(cols: Mapping[str, torch.Tensor], fills: Sequence[str], seed: int,
                  comparisons: Mapping[str, Comparison]) -> BlurControl | None:
    """The blurred copy's comparisons, and whether it does as well as the map (None: no blurred columns)."""
    if not any(k.endswith(f":{BLURRED}") for k in cols):
        return None
    mine = _comparisons(cols, fills, BLURRED, seed)
    beaten_by_map = [k for k, c in comparisons.items() if c.beats and k in mine]
    return BlurControl({k: bool(c.beats) for k, c in mine.items()},
                       bool(beaten_by_map) and all(mine[k].beats for k in beaten_by_map),
                       _compare(cols, fills, ROI, BLURRED, False, seed))


def _failure_words(comparisons: Mapping[str, Comparison]) -> list[str]:
    failed = []
    for c in comparisons.values():
        if c.skipped:
            continue
        if not c.checked:
            failed.append(f"{c.name}: not checked")
        elif not c.beats:
            failed.append(f"no better than {c.words}: " + ", ".join(c.failing()))
    return failed


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
    decisive: Sequence[str] = (),
) -> GateResult:
    """The gate's verdict from concatenated columns (:func:`deletion_columns`, :func:`restricted_attack_columns`).

    ``passed`` needs ``n >= min_n``, at least ``min_fills`` deletion fills, and a
    win on every comparison of :data:`COMPARISONS` plus the randomization check
    (``randomization`` rows of the cascading check and, when given, ``mprt``:
    smooth and efficient MPRT, :func:`~advspatial.faithfulness.mprt.randomization_checks`;
    missing columns or rows count as "not checked", which fails). Effects are paired per image with a bootstrap 95% CI
    (``seed``); per class (``labels``, named by ``class_names``) for the
    location comparison. ``skipped`` names the checks of :data:`SKIPPABLE_CHECKS` left out because the gate had
    already failed (:mod:`.sequential`); a gate with a skipped check never passes. ``decisive`` names the comparisons
    that stopped the gate at an interim look: the failure is theirs, and the others, on fewer images than planned,
    are left undecided (neither named as not beaten nor in the reason).
    """
    check_range("min_n", min_n, 1)
    check_range("min_fills", min_fills, 1)
    for name in skipped:
        if name not in SKIPPABLE_CHECKS:
            raise unknown_name("skipped check", name, SKIPPABLE_CHECKS)
    labels, cols = _checked_columns(columns, labels)
    n = int(labels.shape[0])
    fills = _fills_in(cols)
    comparisons = _comparisons(cols, fills, ROI, seed)
    comparisons["randomization"] = _randomization_comparison(randomization, mprt, skipped)

    decided = {k: c for k, c in comparisons.items() if k in decisive} if decisive else comparisons
    failed = _prerequisite_failures(n, fills, min_n, min_fills) + (
        _failure_words(decided) or _failure_words(comparisons))
    if skipped and not failed:
        failed.append(f"not decided: {', '.join(skipped)} not run")

    deletion, attack = _location_layout(cols, fills, seed)
    per_class: dict[str, ClassGate] = {}
    for c in torch.unique(labels).tolist():
        keep = labels == c
        d, a = _location_layout({k: v[keep] for k, v in cols.items()}, fills, seed)
        name = str(class_names[c]) if class_names is not None else str(c)
        per_class[name] = ClassGate(int(keep.sum()), d, a)

    return GateResult(
        passed=not failed, reason="passed" if not failed else "; ".join(failed), fraction=fraction, n=n,
        comparisons=comparisons, deletion=deletion, attack=attack,
        blurred=_blur_control(cols, fills, seed, comparisons),
        complexity={k.split(":", 1)[1]: nan_mean(v) for k, v in cols.items() if k.startswith("complexity:")},
        means=_means(cols, fills), per_class=per_class, randomization=randomization,
        mprt=dict(mprt) if mprt is not None else None, skipped=list(skipped), decisive=list(decisive),
    )


def _checked_columns(columns: Mapping[str, torch.Tensor], labels: torch.Tensor | Sequence[int]
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(labels, columns) as CPU tensors, every column one value per label."""
    labels = torch.as_tensor(labels).cpu().long().reshape(-1)
    n = int(labels.shape[0])
    for key, col in columns.items():
        if tuple(torch.as_tensor(col).shape) != (n,):
            raise ShapeError(f"column {key!r} has shape {tuple(torch.as_tensor(col).shape)}; labels have ({n},)")
    return labels, {k: torch.as_tensor(v).cpu() for k, v in columns.items()}


def _prerequisite_failures(n: int, fills: Sequence[str], min_n: int, min_fills: int) -> list[str]:
    failed = []
    if n < min_n:
        failed.append(f"insufficient data: n={n} < {min_n}")
    if len(fills) < min_fills:
        failed.append(f"deletion: {len(fills)} fill(s) {fills}, need >= {min_fills}")
    return failed


def comparison_failures(columns: Mapping[str, torch.Tensor], labels: torch.Tensor | Sequence[int], seed: int = 0,
                        min_n: int = MIN_N, min_fills: int = 2) -> list[str]:
    """What the gate fails from its columns alone (:func:`summarize_gate`'s words, the randomization row aside):
    empty when the comparisons pass, so that only the randomization checks can still fail it."""
    labels, cols = _checked_columns(columns, labels)
    fills = _fills_in(cols)
    return _prerequisite_failures(int(labels.shape[0]), fills, min_n, min_fills) + _failure_words(
        _comparisons(cols, fills, ROI, seed))


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
