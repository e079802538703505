"""The report of ``pse`` (``report.html``) and the summary printed at the end of a run, rendered from the findings.

Pure: :func:`render` reads the settings, the findings and which figures :mod:`.figures` drew; nothing here computes
a statistic, so ``advspatial report DIR`` re-renders a finished run.
"""

from __future__ import annotations

from pathlib import Path

from ...analysis.pse_types import TYPE_NAMES
from ...report.html import Section, Table
from ...report.sections import drawn_figure, explainer_verdict, faithfulness_section
from ...report.verdicts import fmt, verdict_legend, verdict_table, what_this_run_shows
from ...statistics.claims import NOT_INTERPRETABLE_ROI, sentence_case
from ...statistics.verdicts import sesoi_text
from ...statistics.wording import how_many
from ..measurement.roi import gate_rule
from ..results import Rendered
from .claims import PRIMARY_TYPE, TYPING_NULL, UNEXPLAINED, claim_text, forest_claims, is_typing_claim
from .config import PGD_UPPER_BOUND, PSEConfig, adaptive_description
from .figures import DISSECTION, FOREST, MASKING, TYPES, UNIT_SENSITIVITY, examples_file
from .findings import MASKING_LABEL, NO_ADAPTIVE_ATTACK, DissectionFindings, PSEFindings, VariantFindings
from .stability import superpixels_available

TERMS = ("Region of Importance (RoI): the pixels the model looks at when it classifies, here the top fraction of a "
         "class activation map (CAM) - CAM_t0(x) of the true class t0 on the clean image x, CAM_t(x') of the "
         "pre-specified class t (a targeted attack's target, else the clean runner-up) on the adversarial image "
         "x'. Region of Attack (RoA): the pixels the attacker's perturbation acts through, here its pixel groups, "
         "typed by what each does on its own: suppression (lowers the true-class logit), promotion (raises the "
         "logit of t), balanced or opposing; untyped when both effects are under the noise floor.")


def render(config: PSEConfig, findings: PSEFindings, figures: Path) -> Rendered:
    """The printed summary and the report's sections in reading order: the verdicts first, then the gate, then
    the analyses; a figure appears when :mod:`.figures` drew its file into ``figures``."""
    f = findings
    return Rendered(summary_text(f), [
        verdict_section(config, f, figures), gate_section(config, f), setup_section(config, f),
        types_section(config, f, figures), stability_section(config, f), image_section(config, f),
        unit_section(config, f, figures), dissection_section(config, f.dissection, figures), limits_section(config, f),
    ])


def not_interpretable_text(f: PSEFindings) -> str:
    """The sentence every CAM-dependent part of the report carries when the gate failed ('' when it passed)."""
    if f.roi.usable:
        return ""
    reason = f.faithfulness[f.roi.method].reason
    return (f"{sentence_case(NOT_INTERPRETABLE_ROI)} ({f.roi.method}{'; ' + reason if reason else ''}): where the "
            "group types fall relative to the CAMs says nothing about what the model looks at.")


def verdict_section(cfg: PSEConfig, f: PSEFindings, folder: Path) -> Section:
    """The top of the report: the terms, what this run shows (from the verdict words), the primary verdicts."""
    claims = f.claims
    primary = [c for c in claims if c.primary]
    paragraphs = [TERMS,
                  "Primary claims, declared before the run, one per CAM and attack variant: "
                  f"\"{claim_text('true_cam', PRIMARY_TYPE['true_cam'])}\" (the share of the suppression-dominated "
                  "groups' perturbation energy inside the top region of CAM_t0(x)) and "
                  f"\"{claim_text('target_cam', PRIMARY_TYPE['target_cam'])}\" (the same for promotion-dominated "
                  "groups and CAM_t(x')), each against the "
                  f"{cfg.baseline} null: the type map of an image paired with the CAM regions of the other images "
                  f"of its {'true class' if cfg.baseline == 'same-class' else 'set'}. Every share is also compared "
                  "with the rest of the engine's hierarchy of nulls (uniform placement of the CAM region's own shape, "
                  "any-class and same-class partners, object-conditioned partners where the images' foreground "
                  "share allows), as spatial's co-location claims are: secondary rows.",
                  "The typing is a claim too, per attack variant: the share of the perturbation's energy in "
                  "suppression-dominated groups, and in promotion-dominated groups (primary; balanced: secondary), "
                  f"against a control of the same per-group energy with random signs ({TYPING_NULL}: each element "
                  "of delta keeps its magnitude and place and gets a random sign, so the control keeps where the "
                  "energy is and destroys its direction; it is typed with the attack's own noise floor; "
                  f"{how_many(cfg.control_draws, 'draw')} per image, seeded by its global sample id). The energy "
                  "shares are of the whole perturbation, untyped groups included. Beside them a secondary claim with a "
                  f"fixed rule: \"{UNEXPLAINED}\", the untyped energy share against one half.",
                  "What this run shows:"]
    paragraphs += what_this_run_shows(claims)
    paragraphs += [f"{v}: no claim - {how_many(m.successful, 'successful image')}, too few for the image-level test."
                   for v, m in f.variants.items() if m.cam_test is None]
    if not forest_claims(claims, cfg.baseline):
        paragraphs.append(f"No forest plot: no attack variant has a CAM claim against the {cfg.baseline} null.")
    warning = not_interpretable_text(f) or (
        f"{sentence_case(f.roi.caveat)} ({f.roi.method}): the CAM verdicts below stand, read with this caveat."
        if f.roi.caveat else "")
    if warning:
        paragraphs.insert(1, warning)
    notes = [verdict_legend() + f" Holm across the {len(primary)} primary claims; the other (CAM, group type, "
             f"null) rows Benjamini-Hochberg (image-level section); significance level {cfg.significance}; "
             f"{sesoi_text(cfg.sesoi)}; n >= 30 images that have the type."]
    figures = drawn_figure(folder, FOREST, f"Forest plot per attack variant: each (CAM, group type) share against "
                                           f"the {cfg.baseline} null (the other nulls: image-level table). Right of 0: "
                                           "the type falls in the CAM region more than chance. Grey: a gate failed, "
                                           "the row is not interpretable.")
    typing = [c for c in claims if is_typing_claim(c)]
    tables = [verdict_table(primary, "Verdicts: one row per pre-declared primary claim"),
              verdict_table(typing, "The typing as a claim: each type's share of the perturbation energy against "
                                    "random signs of the same per-group energy; the untyped share against one half"),
              controls_table(f)]
    return Section("Verdicts", paragraphs, tables=tables, figures=figures, notes=notes, anchor="verdicts")


def controls_table(f: PSEFindings) -> Table:
    """The controls of each variant at a glance: pre-specified target, noise floor, leave-one-out agreement,
    the adaptive attack on the masked model, and the dissection's status."""
    d = f.dissection
    dissection = ("skipped" if d is None else
                  f"rho {fmt(d.spearman_rho)} (p {fmt(d.p_value, 4)})" if d.dissected else "not dissectable")
    rows = []
    for v, m in f.variants.items():
        a = m.adaptive
        loo = m.stability.get("leave-one-out")
        rows.append([v, fmt(m.reached_target), f"{m.untyped_groups} / {m.perturbed_groups}",
                     fmt(None if loo is None else loo.kappa), f"top-{a.masked.k}: {fmt(a.fixed_robust_acc)} -> "
                     f"{fmt(a.masked.robust_acc)} (unmasked {fmt(a.unmasked.robust_acc)})", dissection])
    return Table("Controls: reached the pre-specified t; groups under the noise floor (untyped / perturbed); "
                 "Cohen's kappa of isolated vs leave-one-out typing; masking accuracy on fixed x' -> attacked on "
                 "the masked model (not a robustness claim); dissection of the analysed model",
                 ["variant", "reached t", "untyped groups", "kappa (leave-one-out)", "masking: fixed -> adaptive",
                  "dissection"], rows)


def gate_section(cfg: PSEConfig, f: PSEFindings) -> Section:
    """The faithfulness gate of the CAM explainer and the cascading model-randomization check."""
    roi = f.roi
    gate = f.faithfulness[roi.method]
    return faithfulness_section([
        explainer_verdict("CAM explainer", roi.method, roi.why, gate.status, None if gate.passed else gate.reason),
        gate_rule(cfg, min(cfg.gate_n, f.n), cfg.top_fraction, cfg.eps, "CAM_t0(x)")
        + " eps is the experiment's own PGD budget.",
        "The gate judges the explainer on clean images and the true class, exactly the cached CAM_t0(x) the "
        "image-level analysis uses. CAM_t(x') is the same explainer on the adversarial image and class; it is not "
        "gated separately and carries this gate's verdict.",
    ], f.faithfulness, per_class_of=[roi.method])


def setup_section(cfg: PSEConfig, f: PSEFindings) -> Section:
    """The model, the images, the attacks and how the groups are measured and typed."""
    table = Table("Attack variants (success rate on correctly classified images; norms over successful attacks)",
                  ["variant", "images", "success rate", "successful", "mean L2", "mean Linf"],
                  [[v, m.images, fmt(m.success_rate), m.successful, fmt(m.mean_l2), fmt(m.mean_linf)]
                   for v, m in f.variants.items()])
    return Section("Setup", [
        f"Model {cfg.model} on the first {f.n} {cfg.dataset} test images; clean accuracy {fmt(f.clean_accuracy)}. "
        f"Seed {cfg.seed}.",
        f"Attacks: {', '.join(cfg.attacks)} ({', '.join(cfg.modes)}); PGD L-inf eps {cfg.eps}, {cfg.steps} steps; "
        f"CW-L2 {cfg.cw_search_steps} x {cfg.cw_steps} steps. Targeted attacks aim at a {cfg.target_mode} class "
        "other than the label. The class t whose promotion is measured is fixed before the attack is seen: the "
        "target of a targeted attack, the clean runner-up class (highest clean logit after the label's) of an "
        "untargeted one; the class an untargeted attack happens to reach (post-hoc argmax of x') is a labelled "
        "secondary view only, since it won because it was promoted most.",
        f"For a pixel group G ({cfg.block}x{cfg.block} blocks), suppression s_G = z_t0(x) - z_t0(x + delta_G) and "
        f"promotion p_G = z_t(x + delta_G) - z_t(x), where delta_G keeps only G's part of the perturbation "
        f"({cfg.pse_method} evaluation). A group is typed only when |s_G| or |p_G| exceeds the noise floor, "
        f"{cfg.noise_floor:g} x (|s| + |p|) of its whole perturbation (the others are counted as untyped); then it "
        f"is suppression-dominated if s+ > {cfg.kappa} p+, promotion-dominated if p+ > {cfg.kappa} s+, opposing if "
        "both positive parts are 0, else balanced. The leave-one-out variant removes G's part from x' instead "
        "(s_G = z_t0(x' - delta_G) - z_t0(x'), p_G = z_t(x') - z_t(x' - delta_G)): the group's marginal effect "
        "given the others.",
        f"CAMs: {f.roi.method} ({f.roi.why}); region = top {cfg.top_fraction:.0%} of each CAM (strictly positive "
        "pixels only, ties at the cut broken by an order seeded by the global sample id).",
        "Statistics are over images the model classifies correctly and the attack fools (targeted: reaches the "
        "target) - the successful attacks.",
    ], tables=[table])


def types_section(cfg: PSEConfig, f: PSEFindings, folder: Path) -> Section:
    """The perturbation types of each variant (three views), the example figures and the additivity table."""
    variants = f.variants
    figures = drawn_figure(folder, TYPES, "Left: share of successful perturbations whose energy is mostly in groups "
                                          "of each type. Right: mean energy share of each type.")
    for v in variants:
        figures += drawn_figure(folder, examples_file(v), f"{v}: clean and adversarial image; the group types coloured "
                                                          f"over {f.roi.method} of the true class on x and of t on x'."
                                + ("" if f.roi.usable else " " + not_interpretable_text(f)))
    views = ("pre-specified t, isolated (primary)", "pre-specified t, leave-one-out",
             "post-hoc t = argmax f(x') (secondary view, biased towards promotion)")
    rows = [[v, label] + [fmt(fractions[t]) for t in TYPE_NAMES] + [fmt(shares[t]) for t in TYPE_NAMES]
            for v, m in variants.items() for label, (fractions, shares) in zip(views, typing_views(m), strict=True)]
    table = Table("Perturbation typing over successful attacks",
                  ["variant", "view"] + [f"dominant: {t}" for t in TYPE_NAMES]
                  + [f"energy share: {t}" for t in TYPE_NAMES], rows)
    sums = Table("Additivity and the noise floor (successful attacks)",
                 ["variant", "reached t", "s (whole delta)", "sum of s_G", "sum of s_G (leave-one-out)",
                  "p (whole delta)", "sum of p_G", "sum of p_G (leave-one-out)", "untyped groups",
                  "untyped (leave-one-out)"],
                 [[v, fmt(m.reached_target), fmt(m.mean_s_total), fmt(m.mean_s_groups_sum),
                   fmt(m.mean_loo_s_groups_sum), fmt(m.mean_p_total), fmt(m.mean_p_groups_sum),
                   fmt(m.mean_loo_p_groups_sum), f"{m.untyped_groups} of {m.perturbed_groups}",
                   f"{m.loo_untyped_groups} of {m.perturbed_groups}"] for v, m in variants.items()])
    return Section("Perturbation types", [
        "Each perturbation is typed by the energy-weighted shares of its typed groups' types. The primary view "
        "measures promotion of the pre-specified t; the post-hoc view (t = the class the attack reached) is "
        "shown for comparison only: that class won because it was promoted most, so its promotion shares are "
        "biased upwards. 'reached t': share of successful attacks whose prediction is the pre-specified t.",
        "The whole-delta s and p next to the sums over groups show how far the effect is additive over groups "
        "(equal for a linear model, for both the isolated and the leave-one-out sums).",
        "Energy shares of the whole perturbation (untyped groups included) beside the random-sign control, the "
        "untyped share by count and by energy, and whether the typing explains the perturbation: 'does not explain "
        "most' when the untyped energy share is above one half (the claim's verdict word). The additivity gap: the "
        "sums of the isolated and of the leave-one-out group effects as fractions of the whole-delta effect (1 = "
        "additive; promotion far from 1 means typing groups one at a time misses how they promote together).",
    ], tables=[table, explained_table(f), sums], figures=figures, anchor="perturbation-types")


def typing_views(m: VariantFindings) -> list[tuple[dict[str, float], dict[str, float]]]:
    """(dominant-type fractions, mean shares) of the three views of the typing: isolated, leave-one-out, post-hoc."""
    return [(m.type_fractions, m.mean_shares), (m.type_fractions_loo, m.mean_shares_loo),
            (m.type_fractions_posthoc, m.mean_shares_posthoc)]


def explained_table(f: PSEFindings) -> Table:
    """Per variant: the energy shares of the typing and its control, the untyped share, the unexplained verdict and
    the additivity gap, all from ``metrics.json``."""
    rows = []
    for v, m in f.variants.items():
        t = m.typing
        obs, ctl, add = t.energy_shares, t.control_energy_shares, t.additivity
        rows.append([v] + [f"{fmt(obs[n])} ({fmt(ctl[n])})" for n in ("suppression", "promotion", "balanced")]
                    + [fmt(t.untyped_share.by_count), fmt(t.untyped_share.by_energy),
                       m.typing_verdicts.get("untyped energy share", "-"),
                       f"{fmt(add.s_isolated_over_total)} / {fmt(add.s_leave_one_out_over_total)}",
                       f"{fmt(add.p_isolated_over_total)} / {fmt(add.p_leave_one_out_over_total)}"])
    return Table("What the typing explains (successful attacks): energy share of the whole perturbation (random-sign "
                 "control); untyped share; 'does not explain most' verdict; sums of group effects over the whole-delta "
                 "effect (isolated / leave-one-out)",
                 ["variant", "suppression (control)", "promotion (control)", "balanced (control)", "untyped: count",
                  "untyped: energy", "typing does not explain most", "s: sums / total", "p: sums / total"], rows)


def stability_section(cfg: PSEConfig, f: PSEFindings) -> Section:
    """How much the typing depends on kappa, on the pixel groups and on isolated vs leave-one-out measurement."""
    rows = [[v, name, st.n, fmt(st.fraction), fmt(st.kappa)]
            for v, m in f.variants.items() for name, st in m.stability.items()]
    notes = []
    if "superpixels" in cfg.stability_groups and not superpixels_available():
        notes.append("Superpixels were left out: scikit-image is not installed (pip install scikit-image).")
    return Section("Typing stability", [
        f"The primary typing ({cfg.block}x{cfg.block} blocks, kappa {cfg.kappa:g}, isolated, noise floor "
        f"{cfg.noise_floor:g}) against each other choice: agreement fraction and Cohen's kappa (1 = the same "
        "types, 0 = chance level) over the elements both type. kappa=... and leave-one-out: group by group over "
        "all successful attacks; other pixel groups: pixel by pixel over the perturbed pixels of the successful "
        f"attacks among the first {cfg.stability_images} test images.",
        "Low agreement means a type is a property of the analysis choices more than of the perturbation.",
    ], tables=[Table("Typing agreement with the primary typing", ["variant", "compared with", "n",
                                                                  "agreement", "Cohen's kappa"], rows)],
        notes=notes, anchor="typing-stability")


def image_section(cfg: PSEConfig, f: PSEFindings) -> Section:
    """Every (CAM, group type) share against its null, with corrected p-values and verdicts (folded)."""
    weight = "perturbation energy" if cfg.cam_weight == "energy" else "pixels"
    table = verdict_table(f.claims, f"Share of each type's {weight} inside the top {cfg.top_fraction:.0%} of the CAM, "
                                    f"vs every null of the hierarchy ({cfg.permutations} permutations or placements; "
                                    f"primary null {cfg.baseline}; two-sided p; p_adj: Holm for the primary rows, "
                                    "Benjamini-Hochberg for the rest)", folded=True)
    notes = [not_interpretable_text(f)] if not f.roi.usable else []
    return Section("Image level", [
        f"Where do the group types fall relative to what the model looks at? CAM_t0(x) is {f.roi.method} of the true "
        f"class on the clean image, CAM_t(x') of the pre-specified class t on the adversarial image. For each "
        f"type the statistic is the share of that type's {weight} inside the CAM's top region, averaged over the first "
        f"{cfg.permutation_images} successful images that have the type. Null: per image, the mean share over the "
        f"CAM regions of its partners ({cfg.baseline}: the other images of its "
        f"{'true class' if cfg.baseline == 'same-class' else 'set'}), exact; Δ is the mean per-image excess over it "
        "with a 95% bootstrap (BCa) CI over images. The same share is compared with every null of the engine's "
        "hierarchy, as spatial's co-location is: uniform (the image's own CAM region at random cyclic shifts: "
        "where would the type's energy fall if the region could be anywhere), any-class, same-class, and "
        "object-conditioned partners (same class and foreground share) where the foreground share is informative.",
        "Observed below the null means the type avoids the CAM region more than chance: a finding in its own right.",
    ], tables=[table], notes=notes, anchor="image-level")


def unit_section(cfg: PSEConfig, f: PSEFindings, folder: Path) -> Section:
    """Unit sensitivity, the masking curve against random units, and the adaptive attack on the masked model."""
    top_rows = [[v, ", ".join(str(u) for u in m.top_units[:8])] for v, m in f.variants.items()]
    mask_rows = [[v, int(k), fmt(c.clean_acc[i]), fmt(c.robust_acc[i]), fmt(c.random_clean_acc[i]),
                  fmt(c.random_robust_acc[i])] for v, m in f.variants.items() for c in [m.masking]
                 for i, k in enumerate(c.ks)]
    adaptive_rows = [[v, a.masked.k, fmt(a.masked.clean_acc), fmt(a.fixed_robust_acc), fmt(a.masked.robust_acc),
                      fmt(a.unmasked.robust_acc)] for v, m in f.variants.items() for a in [m.adaptive]]
    ranking = next(iter(f.variants.values())).units_ranked_on
    return Section("Unit level", [
        f"Units are the {f.units} channels of layer {f.layer}. Sensitivity of a unit: mean |A(x') - A(x)| over "
        f"positions and successful attacks on {ranking.images} training images (class-stratified, never the "
        f"test images); units ranked by {cfg.rank_by}. The masking curve is then measured on the {f.n} "
        "test images, so the ranking is not fitted to the images it is evaluated on.",
        "The masking curve zeroes the k most sensitive units and measures accuracy on the clean images and on the "
        f"fixed adversarial images; the control masks k random units ({cfg.mask_random} draws).",
        "Adaptive check: at the k where the curve looks best for masking (highest accuracy on the fixed adversarial "
        f"images), {adaptive_description(cfg)} is run on the masked model itself, on the first "
        f"{min(cfg.adaptive_n, f.n)} test images.",
    ], notes=[f"Masking as a defence - {MASKING_LABEL}. Only the adaptive column attacks the masked model"
              + (f"; it is PGD, {PGD_UPPER_BOUND} (adaptive_attack=autoattack runs the ensemble)"
                 if cfg.adaptive_attack == "pgd" else "")
              + ": masking is not a robustness claim."],
        tables=[Table("Adaptive attack on the masked model (accuracy on the test images)",
                      ["variant", "k masked", "clean (masked)", "fixed x' (not robustness)",
                       "attacked on the masked model", "attacked, no masking"], adaptive_rows),
                Table("Most sensitive units per variant (most sensitive first)", ["variant", "units"], top_rows),
                Table("Masking curve: accuracy with k units zeroed (adversarial columns: no adaptive attack yet, not "
                      "robustness)", ["variant", "k", "clean (top-k)", "adversarial (top-k)", "clean (random k)",
                                      "adversarial (random k)"], mask_rows, folded=True)],
        figures=drawn_figure(folder, UNIT_SENSITIVITY, "Per-unit activation change under each attack variant "
                                                       "(training images).")
        + drawn_figure(folder, MASKING, "Clean and adversarial accuracy as more of the most sensitive units are "
                                        "masked (solid) vs as many random units (dashed)."),
        anchor="unit-level")


def dissection_section(cfg: PSEConfig, d: DissectionFindings | None, folder: Path) -> Section:
    """Dissection of the analysed model, or the reason it could not be dissected."""
    if d is None:
        return Section("Dissection", ["Dissection was skipped (dissection=false)."], anchor="dissection")
    if not d.dissected:
        return Section("Dissection", [f"Not dissected: {d.reason}"], anchor="dissection")
    active = [u for u, on in enumerate(d.active) if on]
    order = sorted(active, key=lambda u: -d.relative_sensitivity[u])[:10]
    rows = [[u, fmt(d.relative_sensitivity[u], 4), d.best_concepts[u], fmt(d.best_iou[u])] for u in order]
    return Section("Dissection", [
        f"Network dissection of layer {d.layer} of the analysed model itself, on its {d.images} test images, with "
        f"concept masks from {d.concept_source}: {', '.join(d.concepts)}. None of them is a class "
        "label, so a unit is not interpretable by construction. A unit's region is where its upsampled activation "
        f"exceeds its {cfg.dissection_quantile} quantile over the set; IoU with each concept is summed over the set.",
        f"Unit sensitivity, relative to the unit's own clean scale: mean |A(x') - A(x)| / mean |A(x)| under "
        f"untargeted {cfg.dissection_attack} over {d.successful} successful attacks. {d.units_never_active} of "
        f"{len(d.active)} units were never active on these images (or had an empty region) and are left out. "
        f"Spearman correlation of relative sensitivity with the best IoU over the {len(active)} others: "
        f"rho = {fmt(d.spearman_rho)}, permutation p = {fmt(d.p_value, 4)} ({cfg.correlation_permutations} "
        "permutations).",
    ], tables=[Table("The 10 most sensitive active units and their best concept",
                     ["unit", "relative sensitivity", "best concept", "IoU"], rows)],
        figures=drawn_figure(folder, DISSECTION, "Each active unit: relative sensitivity to the attack vs its "
                                                 "best dissection IoU."),
        anchor="dissection")


def limits_section(cfg: PSEConfig, f: PSEFindings) -> Section:
    """What the analysis cannot show."""
    return Section("Limits", [
        f"Group effects are measured one group at a time ({cfg.block}x{cfg.block} blocks), alone on x and left out "
        "of x'; the sums over groups differ from the whole-perturbation s and p wherever the model is non-linear "
        "(see the additivity table), and the typing stability section shows how much the types depend on kappa, "
        "on the groups and on the measurement.",
        "For untargeted attacks t is the clean runner-up class, fixed in advance; an attack that reached another "
        "class still lowered the true class, but its promotion of t can be small. For failed attacks the "
        "images are excluded from the statistics.",
        f"CAMs are explanations, not ground truth: {f.roi.method} on a coarse feature map. They are read only when the "
        "explainer passes the faithfulness gate, and only observed-vs-null differences are interpreted.",
        f"Unit masking is evaluated on fixed adversarial images ({NO_ADAPTIVE_ATTACK}) plus one attack on the masked "
        f"model, {adaptive_description(cfg)}: it is not a robustness claim.",
        "Dissection needs concept masks of the analysed model's own data; without them (e.g. Fashion-MNIST) the "
        "report says so and dissects nothing.",
        f"Statistics rest on {f.n} images; small success counts make the shares noisy.",
    ], anchor="limits")


def typing_line(variant: str, m: VariantFindings) -> str:
    """One summary line of what the typing explains: energy shares vs the random-sign control with their verdicts,
    the untyped share, and the isolated / leave-one-out / whole-delta promotion."""
    t, verdicts = m.typing, m.typing_verdicts
    obs, ctl, add = t.energy_shares, t.control_energy_shares, t.additivity
    shares = "; ".join(f"{n} energy {fmt(obs[n])} (random signs {fmt(ctl[n])}) -> "
                       f"{verdicts.get(f'{n} energy share', '-')}" for n in ("suppression", "promotion"))
    return (f"{variant:<18} typing: {shares}; untyped {fmt(t.untyped_share.by_energy)} of the energy, "
            f"{fmt(t.untyped_share.by_count)} of the groups -> does not explain most: "
            f"{verdicts.get('untyped energy share', '-')}; promotion sums isolated {fmt(add.p_isolated_sum)}, "
            f"leave-one-out {fmt(add.p_leave_one_out_sum)}, whole delta {fmt(add.p_total)}")


def summary_text(f: PSEFindings) -> str:
    """The summary printed at the end of ``advspatial run``."""
    header = (f"{'variant':<18} {'success':>8} {'n_ok':>5} {'supp':>6} {'prom':>6} {'bal':>6} {'opp':>6} "
              f"{'S-in-CAMt0':>11} {'P-in-CAMt':>10} {'rob@top':>8} {'rob@rand':>9}")
    lines = [f"clean accuracy {fmt(f.clean_accuracy, 4)} on {f.n} images; units: {f.units} channels of {f.layer}",
             header, "-" * len(header)]
    k_shown = "-"
    for v, m in f.variants.items():
        frac, mask = m.type_fractions, m.masking
        mid = len(mask.ks) // 2
        k_shown = str(mask.ks[mid])
        lines.append(f"{v:<18} {fmt(m.success_rate):>8} {m.successful:>5} {fmt(frac['suppression']):>6} "
                     f"{fmt(frac['promotion']):>6} {fmt(frac['balanced']):>6} {fmt(frac['opposing']):>6} "
                     f"{fmt(m.true_cam_observed['suppression']):>11} {fmt(m.target_cam_observed['promotion']):>10} "
                     f"{fmt(mask.robust_acc[mid]):>8} {fmt(mask.random_robust_acc[mid]):>9}")
    for v, m in f.variants.items():
        a = m.adaptive
        lines.append(f"{v:<18} units ranked on {m.units_ranked_on.images} training images; masking top-"
                     f"{a.masked.k}: fixed-x' accuracy {fmt(a.fixed_robust_acc)}, attacked on the masked "
                     f"model {fmt(a.masked.robust_acc)} (unmasked {fmt(a.unmasked.robust_acc)}); typing vs "
                     f"leave-one-out kappa {fmt(m.stability['leave-one-out'].kappa)}")
    lines += [typing_line(v, m) for v, m in f.variants.items()]
    lines.append("supp/prom/bal/opp: fraction of successful perturbations of each dominant type (pre-specified t); "
                 "S-in-CAMt0: share of suppression energy in the top of CAM_t0(x); P-in-CAMt: promotion energy in "
                 f"CAM_t(x'); rob@top/rand: adversarial accuracy with k={k_shown} top-sensitive / random units masked "
                 "(no adaptive attack yet: not robustness)")
    roi = f.roi
    lines.append(f"CAM {roi.method}: faithfulness gate {roi.status}"
                 + ("" if roi.faithful else f"; S-in-CAMt0, P-in-CAMt and every CAM verdict: {roi.interpretation}"))
    lines += [f"  {c.subject:<18} {c.statistic:<30} -> {c.verdict}" for c in f.claims if c.primary]
    d = f.dissection
    if d is not None and d.dissected:
        lines.append(f"dissection (analysed model, {d.layer}; {d.units_never_active} never-active units left out): "
                     f"Spearman(relative sensitivity, best IoU) = {fmt(d.spearman_rho)}, p = {fmt(d.p_value, 4)}")
    elif d is not None:
        lines.append(f"dissection: not done - {d.reason}")
    return "\n".join(lines)
