"""The report of experiment ``localized-training``: verdicts, gates, setup, models, robustness, the importance map's
shift, examples and limits, rendered from the settings, the findings and the figures the run drew (pure: a finished
run re-renders from its files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...data.mnist import BACKGROUND_THRESHOLD
from ...report.gates import gate_tables
from ...report.html import Figure, Section, Table
from ...report.sections import drawn_figure, status_words
from ...report.verdicts import fmt, interval, verdict_legend, verdict_table, what_this_run_shows
from ...statistics.claims import NOT_INTERPRETABLE_ROI, sentence_case
from ...statistics.verdicts import MIN_SEEDS, sesoi_text
from ...statistics.wording import how_many
from ..measurement.roi import gate_rule, roi_label
from ..results import Rendered
from .attack_rows import SeedSpread
from .config import (
    EXAMPLE_MODES, MIXED, MODE_NAMES, MODES, TERMS, LocalizedConfig, budget_text, condition_labels, gate_eps,
    natural_epochs, region_names, train_config,
)
from .figures import ACCURACY_PNG, examples_png, importance_png
from .findings import FinetuneFacts, LocalizedFindings

#: datasets whose object masks are exact (the others' masks are a brightness threshold)
EXACT_MASKS = ("synthetic-shapes",)


@dataclass(frozen=True)
class ReportView:
    """What the report renders from: the settings, the findings, the folder the run drew its figures into."""

    config: LocalizedConfig
    findings: LocalizedFindings
    figures: Path

    def figure(self, name: str, caption: str) -> list[Figure]:
        """The figure ``name`` with its caption, when the run drew it; else none."""
        return drawn_figure(self.figures, name, caption)


def render(config: LocalizedConfig, findings: LocalizedFindings, figures: Path) -> Rendered:
    """The printed summary and the report's sections of a run, from its settings, findings and drawn figures."""
    view = ReportView(config, findings, figures)
    return Rendered(summary_table(config, findings), build_sections(view))


def build_sections(view: ReportView) -> list[Section]:
    """The report's sections, in order."""
    return [verdict_section(view), gate_section(view), setup_section(view), models_section(view),
            robustness_section(view), gradcam_section(view), limits_section(view)]


def method_names(view: ReportView) -> str:
    """The importance map(s) of every model, e.g. 'hirescam' or 'gradcam (natural), hirescam (pgd)'."""
    imp = view.findings.importance
    names = {imp[m].method for m in MODES}
    if len(names) == 1:
        return names.pop()
    return ", ".join(f"{imp[m].method} ({m})" for m in MODES)


def mask_source(view: ReportView) -> str:
    """Where the attacked region comes from, in words."""
    cfg = view.config
    if view.findings.mask_from_importance:
        return (f"cut from each model's own {method_names(view)} map of the true class (top {cfg.fraction:.0%}), so "
                "every result under this mask rests on that map and carries its RoI faithfulness gate")
    if cfg.mask in ("background", "foreground"):
        source = ("the dataset's exact object masks" if cfg.dataset in EXACT_MASKS else
                  f"the brightness threshold x <= {BACKGROUND_THRESHOLD:g} (the dataset's own foreground mask)")
        return f"{source}; no importance map is involved, so accuracy results under it carry no RoI gate"
    return "a mask file; no importance map is involved, so accuracy results under it carry no RoI gate"


def verdict_section(view: ReportView) -> Section:
    """The top of the report: terms, what the run shows (from the verdict words), the verdict tables."""
    cfg, claims = view.config, view.findings.claims
    imp = view.findings.importance
    paragraphs = [TERMS, models_sentence(view.config, view.findings)]
    for mode in MODES:
        if not imp[mode].usable:
            scope = (f"its {imp[mode].method}-energy shift and every accuracy under the {cfg.mask} mask"
                     if view.findings.mask_from_importance else f"its {imp[mode].method}-energy shift")
            label = roi_label(view.findings.faithfulness[mode]) or NOT_INTERPRETABLE_ROI
            paragraphs.append(f"{sentence_case(label)} (the {mode} model): {scope} is not evidence about the model.")
        elif imp[mode].caveat:
            paragraphs.append(f"{sentence_case(imp[mode].caveat)} (the {mode} model): its RoI-dependent verdicts "
                              "stand, read with this caveat.")
    paragraphs.append(f"The attacked region ({cfg.mask}) is {mask_source(view)}.")
    paragraphs += ["What this run shows:"] + what_this_run_shows(claims)
    primary = [c for c in claims if c.primary]
    secondary = [c for c in claims if not c.primary]
    notes = [verdict_legend() + f" Primary claims: Holm across the {len(primary)} of them; secondary claims: "
             f"Benjamini-Hochberg; significance level {cfg.significance}; {sesoi_text(cfg.sesoi)}; "
             "n >= 30 images (claims on fewer enter no correction family).",
             "Every claim is about a training procedure, so the training seed is its unit: within each seed the "
             "comparison is paired per image on the same test images (accuracy as correct(A) − correct(B), seed k of "
             "A against seed k of B; the energy shift as share after the attack − share on the clean image), and Δ "
             "is the mean over seeds and images with a 95% t-interval that carries the between-run variance (seeds "
             "crossed with images, Satterthwaite df: with 3 seeds close to a t with 2 df over the per-seed Δ), p "
             "the two-sided t-test of the same mean. 'k of n seeds agree' counts the seeds whose own Δ is above 0; "
             f"a claim is supported only when every seed agrees, and on fewer than {MIN_SEEDS} seeds it is "
             "'insufficient data'. Images whose map is zero everywhere on some seed's model are left out of the "
             "energy claims; the gate of the energy claims is the first seed's model's."]
    tables = [verdict_table(primary, "Verdicts: the primary claims (Holm)"),
              verdict_table(secondary, "Secondary claims (Benjamini-Hochberg)", folded=True)]
    return Section("Verdicts", paragraphs, tables=tables, notes=notes, anchor="verdicts")


def gate_section(view: ReportView) -> Section:
    """The faithfulness gate of each model's importance map, and the model-randomization check."""
    cfg, findings = view.config, view.findings
    gates, imp = findings.faithfulness, findings.importance
    paragraphs = [f"{mode} model: {imp[mode].method} ({imp[mode].why}); "
                  f"{status_words(imp[mode].status)} by the gate below."
                  for mode in MODES]
    paragraphs.append("On each model: " + gate_rule(cfg, min(cfg.gate_n, findings.n), cfg.fraction, gate_eps(cfg),
                                                    "the map of the true class"))
    keyed = {f"{mode}: {gates[mode].method}": gates[mode] for mode in MODES}
    ft = findings.finetune
    if ft and ft.start_gate is not None:
        paragraphs.append(f"Start model {ft.start} (its map cut the localized model's training background): "
                          f"{ft.mask_method} ({ft.mask_why}); "
                          f"{status_words(ft.start_gate.status)} by the same gate. It "
                          "enters no claim: the claims compare the fine-tuned models, each under its own map.")
        keyed[f"start ({ft.start}): {ft.mask_method}"] = ft.start_gate
    tables = gate_tables(keyed, per_class_of=list(keyed))
    return Section("Faithfulness gate", paragraphs, tables=tables, anchor="faithfulness")


def models_sentence(cfg: LocalizedConfig, findings: LocalizedFindings) -> str:
    """One plain sentence: how every model was made (trained from scratch, or fine-tuned from what)."""
    ft = findings.finetune
    if not ft:
        limit = f"the first {cfg.train_limit}" if cfg.train_limit else "all"
        natural = natural_epochs(cfg)
        return (f"The {len(MODES)} {cfg.model} models are trained from scratch on {limit} {cfg.dataset} training "
                f"images (natural {how_many(natural, 'epoch')}, the others {cfg.train_epochs}).")
    return (f"The {len(MODES)} models are fine-tuned from the same pretrained {ft.start} (not trained from "
            f"scratch): {how_many(ft.epochs, 'epoch')} each ({ft.steps} SGD steps, lr {ft.lr:g}) on "
            f"{ft.train_images} training images, {ft.train_source}.")


def setup_section(view: ReportView) -> Section:
    cfg = view.config
    region, complement = region_names(cfg.mask)
    limit = f"the first {cfg.train_limit}" if cfg.train_limit else "all"
    ft = view.findings.finetune
    loss = (f"loss = {1 - cfg.mix:g} x clean cross-entropy + {cfg.mix:g} x cross-entropy of background-only PGD "
            "examples")
    if ft:
        gate = ("" if ft.start_gate is None else
                f"; that map's faithfulness gate on the start model: {ft.start_gate.status} "
                "(section above)")
        training = [
            f"{len(MODES)} models fine-tuned from the same pretrained {ft.start} (weights sha256 {ft.start_sha256[:16]}"
            f"; clean accuracy {fmt(ft.start_clean_accuracy)} on the {view.findings.n} evaluated images): natural "
            "fine-tuning (clean cross-entropy), PGD adversarial fine-tuning (Madry), localized adversarial fine-tuning "
            f"({loss}) and its two controls: mixed PGD fine-tuning (the same mixture, full-image examples) and "
            "random-mask localized fine-tuning (the same loss on a random region of the same area per image, redrawn "
            f"every batch). Each starts from a copy of the same weights and gets {how_many(ft.epochs, 'epoch')} = "
            f"{ft.steps} optimizer steps on the same {ft.train_images} {cfg.dataset} training images in the same "
            f"order: {ft.train_source}. Recipe: SGD, lr {ft.lr:g} decayed to 0 by a cosine, momentum "
            f"{ft.momentum:g}, weight decay {ft.weight_decay:g}, batch {ft.batch_size}, batch-norm running statistics "
            f"{'frozen at the start' if ft.bn == 'frozen' else 're-estimated on the training batches'}; seed "
            f"{ft.seed}. Training attacks: PGD {budget_text(cfg)}, {cfg.train_attack_steps} steps, random start.",
            f"Training background of the localized model: {ft.mask_source}, computed once per training image on "
            f"the start model, so all models share the start and the data{gate}.",
        ]
    else:
        training = [
            f"{len(MODES)} {cfg.model} models trained on {limit} {cfg.dataset} training images: natural "
            f"({natural_epochs(cfg)} epochs), PGD adversarial training (Madry; {cfg.train_epochs} epochs), localized "
            f"adversarial training ({cfg.train_epochs} epochs; {loss}) and its two controls ({cfg.train_epochs} "
            f"epochs each): mixed PGD training (the same mixture with full-image PGD examples) and random-mask "
            f"localized training (the same loss on a region of the same area per image at random positions, redrawn "
            f"every batch). Training attacks: PGD {budget_text(cfg)}, {cfg.train_attack_steps} steps, random start."]
    return Section("Setup", [
        *training,
        f"Evaluation on the {view.findings.n} test images ({cfg.subset} subset, seed {cfg.seed}): PGD "
        f"{budget_text(cfg)}, {cfg.steps} steps of 2.5*eps/steps, random start (seed {cfg.seed}), on the whole image, "
        f"only on the {region} "
        f"(mask '{cfg.mask}')" + (f", and only on the {complement}." if cfg.complement else "."),
        "Background (METHODS 4): for grey MNIST-like data, the pixels with x <= 0.05 (the dataset's own foreground "
        "mask, also used by localized training); exact object masks for synthetic-shapes; otherwise the "
        f"complement of the top {cfg.fraction:.0%} region of the importance map of the true class.",
        f"Importance map (the RoI, setting importance={cfg.importance}): {method_names(view)} of the true class, "
        "chosen per model by its head type when 'auto' (the reasons are in the faithfulness gate section).",
    ])


def models_section(view: ReportView) -> Section:
    cfg = view.config
    ft = view.findings.finetune
    if ft:
        return finetuned_models_section(view, ft)
    rows = []
    for mode in MODES:
        m = view.findings.models[mode].training
        tc = train_config(cfg, mode)
        attack = "-" if mode == "natural" else f"PGD {budget_text(cfg)}, {tc.attack_steps} steps"
        rows.append([mode, m.epochs, attack, "-" if mode not in MIXED else f"{tc.mix:g}",
                     fmt(m.test_accuracy, 4), fmt(m.train_seconds, 1), Path(m.checkpoint).name or "-"])
    table = Table("Models (test accuracy on the full test split, as stored with the cached checkpoint)",
                  ["model", "epochs", "training attack", "mix", "test accuracy", "training seconds", "checkpoint"],
                  rows)
    return Section("Models", ["Checkpoints are cached by every training setting and the seed; training seconds are "
                              "those of the run that trained the model."], tables=[table])


def finetuned_models_section(view: ReportView, ft: FinetuneFacts) -> Section:
    """The start and the fine-tuned models: recipe, steps, last-epoch loss, time, where stored."""
    cfg, models = view.config, view.findings.models
    rows = [["start (pretrained)", ft.start, 0, 0, "-", "-", "-", fmt(ft.start_clean_accuracy), "-", "-"]]
    for mode in MODES:
        m = models[mode]
        attack = "-" if mode == "natural" else f"PGD {budget_text(cfg)}, {cfg.train_attack_steps} steps"
        t = m.training
        rows.append([mode, f"fine-tuned from {ft.start}", t.epochs, t.steps, attack,
                     "-" if mode not in MIXED else f"{cfg.mix:g}", fmt(t.last_epoch_loss),
                     fmt(m.stats.accuracy["clean"]), fmt(t.train_seconds, 1), Path(t.checkpoint).name or "-"])
    table = Table(f"Models (clean accuracy on the {view.findings.n} evaluated images)",
                  ["model", "start", "epochs", "steps", "training attack", "mix", "last-epoch training loss",
                   "clean accuracy", "training seconds", "stored as"], rows)
    return Section("Models", [
        models_sentence(cfg, view.findings),
        "Fine-tuned weights are stored in the run directory (stages/finetune/), keyed by every setting, the start's "
        "weights checksum and the training image ids, so --resume does not train again; training seconds are those "
        "of the run that trained the model. No full test-set accuracy is measured: the clean accuracy on the "
        "evaluated images is in the robustness table too."], tables=[table])


def robustness_section(view: ReportView) -> Section:
    cfg, models = view.config, view.findings.models
    labels = condition_labels(cfg)
    rows = [[mode] + [fmt(models[mode].stats.accuracy[c]) for c in labels] + [models[mode].mask_interpretation]
            for mode in MODES]
    table = Table(f"Accuracy on {view.findings.n} test images (PGD {budget_text(cfg)}, {cfg.steps} steps; the first "
                  "training seed's models)", ["model", *labels.values(), "mask"], rows)
    tables = [table]
    if cfg.training_seeds > 1:
        spread = [[mode] + [seed_cell(models[mode].seeds.get(c)) for c in labels] for mode in MODES]
        tables.append(Table(f"Accuracy over {cfg.training_seeds} training seeds (seeds {cfg.model_seed}.."
                            f"{cfg.model_seed + cfg.training_seeds - 1}): mean ± sd",
                            ["model", *labels.values()], spread))
    region = region_names(cfg.mask)[0]
    nat = models["natural"]
    ensemble = (f"{sentence_case(region)}-only ensemble (APGD-CE, APGD-DLR, Square restricted to the {region}; "
                f"the primary endpoint, first {min(cfg.ensemble_n, view.findings.n)} images): "
                + ", ".join(f"{MODE_NAMES[m]} {fmt(models[m].stats.accuracy['region-ensemble'])}" for m in MODES) + ". "
                if cfg.ensemble_n else "")
    paragraphs = [
        ensemble + f"{sentence_case(region)}-only PGD-{cfg.steps} (a diagnostic: a weaker attack on the same "
        "region): " + ", ".join(f"{MODE_NAMES[m]} {fmt(models[m].stats.accuracy['region'])}" for m in MODES)
        + ". Full-image PGD: " + ", ".join(f"{MODE_NAMES[m]} {fmt(models[m].stats.accuracy['full'])}" for m in MODES)
        + ". Whether a difference between models counts is decided in the verdict tables (paired per image, with a "
        "CI), not by these means. The two controls separate what localized training does through its region from "
        "what its clean share does (mixed PGD: the same mixture with full-image examples) and from training against "
        "any region of that size (random-mask localized).",
        f"The attacked region covers on average {fmt(nat.stats.region_share)} of the image. Robust accuracies are "
        f"upper bounds: they hold against this PGD ({cfg.steps} steps, one random start), not against every attack.",
    ]
    notes = []
    if view.findings.mask_from_importance and any(not view.findings.importance[m].usable for m in MODES):
        notes.append(f"{sentence_case(NOT_INTERPRETABLE_ROI)} (column 'mask'): the {cfg.mask} mask is cut from the "
                     "importance map, so the region-only and complement-only accuracies of those models are not "
                     "evidence about their background.")
    return Section("Robustness", paragraphs, tables=tables, notes=notes,
                   figures=view.figure(ACCURACY_PNG, "Accuracy of every model on clean images and under each attack."),
                   anchor="robustness")


def seed_cell(spread: SeedSpread | None) -> str:
    """``mean ± sd`` of one condition over the training seeds ("-" when absent)."""
    return f"{fmt(spread.mean)} ± {fmt(spread.sd)}" if spread else "-"


def gradcam_section(view: ReportView) -> Section:
    cfg, models = view.config, view.findings.models
    region, complement = region_names(cfg.mask)
    names = method_names(view)
    stats = {mode: models[mode].stats for mode in MODES}
    rows = [[mode, view.findings.importance[mode].method, fmt(s.cam_energy_clean), fmt(s.cam_energy_region_adv),
             fmt(s.cam_energy_region_adv - s.cam_energy_clean), int(s.cam_zero_images), models[mode].cam_interpretation]
            for mode, s in stats.items()]
    table = Table(f"Share of the true class's importance map inside the {complement} (mean over images), before and "
                  f"after the {region}-only attack",
                  ["model", "map", "clean", f"after {region}-only PGD", "change", "images left out (map all zero)",
                   "interpretation"], rows)
    figures = [figure for mode in EXAMPLE_MODES for figure in example_figures(view, mode, region, complement)]
    paragraphs = [
        f"A {region}-only attack changes no {complement} pixel, yet it can move where the model looks: the table "
        f"gives how much of the {names} energy of the true class stays in the {complement} after the attack. The "
        "energy-shift claims in the verdict table are these changes, paired per image.",
    ]
    notes = [f"{sentence_case(NOT_INTERPRETABLE_ROI)} on the {mode} model: its rows and figures here show where its "
             f"{view.findings.importance[mode].method} map lies, not where the model looks."
             for mode in MODES if not view.findings.importance[mode].usable]
    return Section(f"Background attacks and {names}", paragraphs, tables=[table], figures=figures, notes=notes,
                   anchor="background-attacks")


def example_figures(view: ReportView, mode: str, region: str, complement: str) -> list[Figure]:
    """Example images of the region-only attack against ``mode`` and its importance map before/after (as drawn)."""
    method = view.findings.importance[mode].method
    label = roi_label(view.findings.faithfulness[mode])
    return [*view.figure(examples_png(mode), f"{mode} model: clean image, {region}-only adversarial image, the signed "
                         "perturbation and the region the attack may change (white). Rows: images the attack fools "
                         "first."),
            *view.figure(importance_png(mode), f"{mode} model: {method} of the true class on the clean and the "
                         f"attacked image, and the change; titles give the share of its energy in the {complement}."
                         + (f" {sentence_case(label)}." if label else ""))]


def limits_section(view: ReportView) -> Section:
    cfg = view.config
    ft = view.findings.finetune
    if ft:
        training = [
            f"The models are fine-tuned from a pretrained {ft.start} for only {how_many(ft.epochs, 'epoch')} "
            f"({ft.steps} steps on {ft.train_images} images) with {cfg.train_attack_steps}-step PGD: a few "
            "epochs of adversarial fine-tuning give far less robustness than full adversarial training, and the "
            "ranking of every model, not the absolute numbers, is what this run shows.",
            "The localized model's training background is cut once from the start model's map and is not updated as "
            "the model changes; the evaluation's background is cut from each fine-tuned model's own map.",
        ]
        differ = "while the start, data, order and number of steps are the same for all models"
    else:
        training = [
            f"The adversarially trained models get {how_many(cfg.train_epochs, 'epoch')} with "
            f"{cfg.train_attack_steps}-step PGD so that the whole run fits a laptop; longer training (and more attack "
            "steps) gives more robust models, and the ranking of every model, not the absolute numbers, is what this "
            "run shows."]
        differ = ("and every model gets the same epochs" if natural_epochs(cfg) == cfg.train_epochs else
                  f"and the epochs differ (natural {natural_epochs(cfg)}, the others {cfg.train_epochs})")
    paragraphs = [
        *training,
        (f"{cfg.training_seeds} training seeds per model: accuracies are given as mean ± sd over them, and every "
         "claim's CI is over seeds and test images, so it carries the run-to-run variation of training; with "
         f"{cfg.training_seeds} seeds that variation is estimated on {cfg.training_seeds - 1} degrees of freedom, "
         "which makes the CIs wide. The gate uses the first seed's models."
         if cfg.training_seeds >= MIN_SEEDS else
         f"{how_many(cfg.training_seeds, 'training seed')}: the run-to-run variation of training cannot be told "
         f"from the procedure, so every claim is 'insufficient data' (set training_seeds to {MIN_SEEDS} or more)."),
        "The accuracy claims compare training recipes, not the background alone: the localized model is trained "
        f"against the very background-only attack it is evaluated with (same mask and budget), keeps "
        f"{1 - cfg.mix:g} of its loss on clean images while PGD training keeps none, {differ}. The mixed PGD control "
        "keeps the same clean share, and the random-mask control the same loss on a region of the same size: only "
        "a difference from both points at the background itself.",
        "PGD with one random start is not the strongest attack; robust accuracies are upper bounds.",
        "The background of MNIST-like data is a brightness threshold (x <= 0.05): dark pixels inside the object count "
        "as background, and on the background an L-inf attack can mostly only brighten (pixels are at or near 0).",
        f"The importance map ({method_names(view)}) is an explanation, not ground truth: it is read as where the model "
        "looks only on a model whose map passes the faithfulness gate, and it is coarse (the resolution of the last "
        "convolutional block, upsampled).",
    ]
    if cfg.mask != "background":
        source = ft.mask_source if ft else "the dataset's foreground masks"
        paragraphs.append(f"The localized model is always trained against background-only examples ({source}); here "
                          f"it is evaluated with mask '{cfg.mask}', which it was not trained against.")
    return Section("Limits", paragraphs, anchor="limits")


def summary_table(config: LocalizedConfig, findings: LocalizedFindings) -> str:
    """The table printed at the end of ``advspatial run localized``, and the primary verdicts."""
    labels = condition_labels(config)
    widths = {c: max(len(v), 13) + 2 for c, v in labels.items()}  # every label readable, cells right-aligned
    first = max(len("model"), *(len(mode) for mode in findings.models)) + 1
    header = f"{'model':<{first}}" + "".join(f"{v:>{widths[c]}}" for c, v in labels.items())
    lines = [f"accuracy on {findings.n} images, PGD {budget_text(config)}, {config.steps} steps", header,
             "-" * len(header)]
    ft = findings.finetune
    if ft:
        where = ("excluding the evaluated images" if ft.excludes_evaluated else "from the training split")
        lines.insert(0, f"models fine-tuned from the pretrained {ft.start}: {how_many(ft.epochs, 'epoch')}, SGD lr "
                        f"{ft.lr:g}, {ft.train_images} training images ({where}); start clean accuracy "
                        f"{fmt(ft.start_clean_accuracy)}")
    for mode, m in findings.models.items():
        lines.append(f"{mode:<{first}}" + "".join(f"{fmt(m.stats.accuracy[c]):>{widths[c]}}" for c in labels))
    if config.training_seeds > 1:
        lines.append(f"over {config.training_seeds} training seeds (mean ± sd):")
        for mode, m in findings.models.items():
            lines.append(f"{mode:<{first}}" + "".join(f"{seed_cell(m.seeds.get(c)):>{widths[c]}}" for c in labels))
    for mode, imp in findings.importance.items():
        lines.append(f"RoI of the {mode} model: {imp.method}, faithfulness gate "
                     f"{imp.status}")
    if ft and ft.start_gate is not None:
        lines.append(f"RoI of the start model (the localized training background): {ft.mask_method}, faithfulness "
                     f"gate {ft.start_gate.status}")
    for c in findings.claims:
        if c.primary:
            seeds = f", {c.seeds_text()}" if c.per_seed is not None else ""
            lines.append(f"[{c.verdict}] {c.subject}: {c.claim}: Δ {interval(c.effect)}{seeds}")
    return "\n".join(lines)
