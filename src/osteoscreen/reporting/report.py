"""The terminal table and report.html: one self-contained page (figures embedded as PNG data URIs).

Sections: the Table-1-style comparison with Wilson intervals, confusion matrices, ROC curves (pooled out-of-fold
scores), calibration (Brier score, calibration intercept and slope, reliability diagram), decision curves (net
benefit against threshold probability), attention weights by group and class, training curves of fine-tuned
methods (loss and training accuracy per epoch over the folds), and patch montages of correctly and wrongly
classified subjects (the paper's Figures 4 and 5).
"""

from __future__ import annotations

import html
import math

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from osteoscreen.core.landmarks import CLASSES, GROUPS, THRESHOLD, flagged
from osteoscreen.data.cohort import Cohort
from osteoscreen.evaluation.experiment import CVResult
from osteoscreen.evaluation.tables import SPREAD_COLUMNS, percent, spread_cell, with_interval
from osteoscreen.io.outputs import strict_json
from osteoscreen.reporting.visualise import CLASS_COLOURS, figure_uri, image_uri, subject_montage
from osteoscreen.training.recipes import recipe_text

PAPER_TABLE_1 = {"knn-lbp": (0.653, 0.429, 0.586), "ensemble-lbp": (0.796, 0.191, 0.614),
                 "concat": (0.667, 0.878, 0.814), "group-attention": (0.714, 0.939, 0.871)}
SECTIONS = ("Comparison", "Operating point", "Confusion matrices", "ROC curves", "Calibration", "Decision curves",
            "Attention by group and class", "Training curves", "Correctly and wrongly classified subjects",
            "Reporting checklist", "Configuration")


def _spread_html(spread: dict) -> str:
    seeds = next(iter(next(iter(spread.values())).values()))["n_seeds"]
    head = "".join(f"<th>{title} mean ± sd [min–max]</th>" for _, title in SPREAD_COLUMNS)
    rows = "".join(f"<tr><td>{html.escape(method)}</td>" + "".join(f"<td>{spread_cell(entry[key])}</td>"
                                                                   for key, _ in SPREAD_COLUMNS) + "</tr>"
                   for method, entry in spread.items())
    return (f"<h3>Across {seeds} seeds</h3><p>The table above is the first seed's. Each seed re-draws "
            "initialisations, augmentations and (k-fold) the split; the spread shows how much of a difference "
            f"between methods is seed noise.</p><table><tr><th>method</th>{head}</tr>{rows}</table>")


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _confusion_figure(metrics: dict):
    count = len(metrics)
    figure = Figure(figsize=(2.4 * count, 2.6))
    axes = figure.subplots(1, count, squeeze=False)
    for axis, (method, m) in zip(axes[0], metrics.items(), strict=True):
        matrix = np.array([[m["tp"], m["fn"]], [m["fp"], m["tn"]]])
        axis.imshow(matrix, cmap="Blues")
        for (row, col), value in np.ndenumerate(matrix):
            axis.text(col, row, str(value), ha="center", va="center", fontsize=12,
                      color="white" if value > matrix.max() / 2 else "black")
        axis.set_xticks([0, 1], ["pred. OP", "pred. N"], fontsize=8)
        axis.set_yticks([0, 1], ["true OP", "true N"], fontsize=8)
        axis.set_title(method, fontsize=9)
    figure.tight_layout()
    return figure


def _roc_figure(per_subject: dict, labels: np.ndarray):
    figure = Figure(figsize=(5, 4.6))
    axis = figure.subplots()
    for method, result in per_subject.items():
        fpr, tpr, _ = roc_curve(labels, result["p"])
        axis.plot(fpr, tpr, label=method, lw=1.6)
    axis.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    axis.set_xlabel("1 − NOPA (false-positive rate)")
    axis.set_ylabel("OPA (sensitivity)")
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title("ROC, pooled out-of-fold scores")
    return figure


def _attention_figure(per_subject: dict, labels: np.ndarray):
    methods = [m for m, r in per_subject.items() if r["attention"] is not None]
    if not methods:
        return None
    figure = Figure(figsize=(3.4 * len(methods), 3))
    axes = figure.subplots(1, len(methods), squeeze=False, sharey=True)
    width = 0.38
    for axis, method in zip(axes[0], methods, strict=True):
        attention = per_subject[method]["attention"]
        for offset, label in ((-width / 2, 1), (width / 2, 0)):
            rows = attention[labels == label]
            axis.bar(np.arange(4) + offset, rows.mean(axis=0), width, yerr=rows.std(axis=0), capsize=2,
                     color=CLASS_COLOURS[CLASSES[label]], label=CLASSES[label])
        axis.set_xticks(range(4), GROUPS, fontsize=8, rotation=20)
        axis.set_title(method, fontsize=9)
    axes[0, 0].set_ylabel("mean attention (± SD)")
    axes[0, 0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def _number(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _operating_html(metrics: dict, rule_text: str | None) -> str:
    rows = []
    for method, m in metrics.items():
        points = [(f"{THRESHOLD:g}", m)]
        if "at_rule_threshold" in m:
            spread = m["at_rule_threshold"]["threshold"]
            points.append((f"fitted per fold: median {spread['median']:.3f} [{spread['min']:.3f}–{spread['max']:.3f}]",
                           m["at_rule_threshold"]))
        for name, entry in points:
            rows.append(f"<tr><td>{html.escape(method)}</td><td>{name}</td>" + "".join(
                f"<td>{with_interval(entry, key)}</td>" for key in ("OPA", "NOPA", "PPV", "NPV")) +
                f"<td>{entry['tp']}/{entry['fn']}/{entry['tn']}/{entry['fp']}</td></tr>")
    rule = (f"<p>Decision rule: {html.escape(rule_text)}. Each fold's threshold (and calibration) was fitted on "
            "inner out-of-fold scores of that fold's training subjects only, and applied to its test subjects; "
            "with repeated k-fold the table gives the first repeat (each repeat flags every subject once) and "
            "metrics.json every repeat's OPA and NOPA.</p>" if rule_text else
            f"<p>Only the fixed threshold {THRESHOLD:g} was run. <code>--target-sensitivity 0.9</code> chooses a "
            "threshold "
            "for a sensitivity inside each training fold (inner cross-validation), and "
            "<code>--calibrate platt|temperature</code> recalibrates the probabilities the same way.</p>")
    return ("<table><tr><th>method</th><th>threshold</th><th>OPA % [95% CI]</th><th>NOPA % [95% CI]</th>"
            "<th>PPV % [95% CI]</th><th>NPV % [95% CI]</th><th>TP/FN/TN/FP</th></tr>" + "".join(rows) + "</table>"
            + rule + "<p>PPV and NPV hold at this cohort's prevalence only; an enriched cohort overstates PPV.</p>")


#: Reporting items (STARD-AI 2025, TRIPOD+AI 2024, CLAIM 2024) a cross-validation run cannot answer.
AUTHOR_ITEMS = (
    "study design, setting and dates of data collection",
    "eligibility criteria and how participants were recruited or selected",
    "reference standard: how and when DXA was done, T-score cut-off, blinding to the radiograph",
    "index test: radiograph devices, acquisition and who placed the landmarks, blind to the reference standard",
    "sample size rationale",
    "handling of indeterminate or missing results beyond what the software refuses",
    "intended use and place in the clinical pathway",
    "ethics approval, consent, funding, conflicts of interest, data and code availability",
    "limitations, harms of false positives and negatives, generalisability to other devices and populations",
)


def _checklist_html(config: dict, dataset: dict, metrics: dict) -> str:
    """The reporting items this run answers, each with its answer and where in the report, then the items the
    authors must write."""
    n, positives, negatives = dataset.get("n"), dataset.get("positives"), dataset.get("negatives")
    protocol = config.get("protocol")
    partition = ("leave-one-out" if protocol == "loo" else
                 f"stratified {config.get('folds')}-fold cross-validation x {config.get('repeats')} repeats")
    seeds = ", ".join(map(str, config.get("seeds", ())))
    versions = config.get("versions", {})
    listed, excluded = dataset.get("listed", n), dataset.get("excluded") or {}
    dropped = ", ".join(f"{count} {name}" for name, count in excluded.items()) or "none"
    items = [
        ("Participant flow and exclusions", f"{listed} subjects in subjects.csv; excluded by the task "
         f"{config.get('task')}: {dropped}; {n} analysed. Nothing else is dropped: the run refuses a dataset with "
         "unreadable images, missing landmarks, unknown labels or labels that contradict their T-score",
         "header; Comparison (n per method)"),
        ("Class counts", f"{positives} positive, {negatives} negative for the task (prevalence "
         f"{positives / max(n, 1):.2f})",
         "header"),
        ("Reference standard as given", "the label column of subjects.csv; how it was established is not known to "
         "the software (see the items below)", "Configuration (dataset)"),
        ("Data partition and subject overlap", f"{partition}, seed(s) {seeds}; every fold checked: no subject id "
         "on both the training and the test side, no radiograph shared by two subjects", "Configuration"),
        ("2x2 tables", f"per method, at threshold {THRESHOLD:g} and at the operating point",
         "Confusion matrices; Operating point"),
        ("Estimates with uncertainty", "OPA, NOPA, OA, PPV, NPV with Wilson 95 % intervals; AUROC pooled, and per "
         "repeat with a bootstrap interval for repeated k-fold; exact McNemar tests against group-attention",
         "Comparison; Operating point"),
        ("Calibration", "Brier score, calibration intercept and slope, reliability diagram", "Calibration"),
        ("Operating point and how it was chosen",
         config.get("rule_text") or f"fixed threshold {THRESHOLD:g}, chosen in advance", "Operating point"),
        ("Clinical usefulness", "decision curves (net benefit) at the stated prevalence", "Decision curves"),
        ("Model and training details", f"methods {', '.join(metrics)}; recipe {_recipe_text(config)}; every "
         "hyperparameter fixed in advance, none "
         "tuned on test folds; training curves for fine-tuned methods", "Configuration; Training curves"),
        ("Software versions and seeds", ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; seeds {seeds}",
         "Configuration"),
        ("Numerics (what decides the last digits)", _numerics_text(config), "Configuration (kernels)"),
    ]
    rows = "".join(f"<tr><td>{html.escape(item)}</td><td>{html.escape(str(answer))}</td><td>{html.escape(where)}"
                   "</td></tr>" for item, answer, where in items)
    authors = "".join(f"<li>{html.escape(item)}: to be written by the authors</li>" for item in AUTHOR_ITEMS)
    return ("<p>Items of STARD-AI (2025), TRIPOD+AI (2024) and CLAIM (2024) that this run can answer, filled from "
            "it, and where the report answers them.</p><table><tr><th>item</th><th>from this run</th>"
            f"<th>where</th></tr>{rows}</table><p>Items no software run can answer:</p><ul>{authors}</ul>")


def _recipe_text(config: dict) -> str:
    return recipe_text(config["recipe"]) if config.get("recipe") else "not recorded"


def _numerics_text(config: dict) -> str:
    train, kernels = config.get("train", {}), config.get("kernels") or {}
    pinned = ("AVX2 kernels pinned (the same code on any x86-64 CPU with AVX2)" if kernels.get("pinned") else
              "the libraries' own kernels (not pinned: other CPUs may differ in the last digits)")
    mkl = (kernels.get("variables") or {}).get("MKL_CBWR")
    return (f"precision {train.get('precision')}, {train.get('threads')} intra-op thread(s) per computation, "
            f"torch CPU capability {kernels.get('torch_cpu_capability')}, MKL branch {mkl or 'auto'}, {pinned}; "
            f"kernel fingerprint {kernels.get('fingerprint', 'not recorded')}; CPU {kernels.get('cpu')}")


def _calibration_html(metrics: dict) -> str:
    def row(label: str, c: dict) -> str:
        slope = "n/a (the score separates the classes)" if c["separated"] else _number(c["calibration_slope"], 2)
        return (f"<tr><td>{html.escape(label)}</td><td>{_number(c['brier'])}</td>"
                f"<td>{_number(c['brier_prevalence'])}</td><td>{_number(c['calibration_intercept'], 2)}</td>"
                f"<td>{slope}</td></tr>")

    rows = "".join((row(f"{method}, before calibration", m["calibration_uncalibrated"])
                    if "calibration_uncalibrated" in m else "") + row(method, m["calibration"])
                   for method, m in metrics.items())
    return ("<table><tr><th>method</th><th>Brier score</th><th>Brier of always saying the prevalence</th>"
            "<th>calibration intercept (ideal 0)</th><th>calibration slope (ideal 1)</th></tr>" + rows + "</table>"
            "<p>On the pooled out-of-fold probabilities. Brier: mean squared difference between probability and "
            "outcome (lower is better; a model no better than the prevalence scores the second column). Slope: "
            "logistic regression of the outcome on logit(p); below 1 the probabilities are too extreme (a head "
            "that says 1.00 for a subject it gets wrong), near 0 they carry no information. Intercept: the same "
            "with the slope fixed at 1; above 0 the model under-predicts osteoporosis on average. The reliability "
            "diagram puts subjects into 5 groups of equal size by predicted probability: with n this small, read "
            "each point with an interval of about ±0.2 in mind.</p>")


def _reliability_figure(metrics: dict):
    figure = Figure(figsize=(5, 4.6))
    axis = figure.subplots()
    for method, m in metrics.items():
        bins = m["calibration"]["reliability"]
        line, = axis.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], marker="o", lw=1.4,
                          label=method)
        if "calibration_uncalibrated" in m:  # the same method before its per-fold recalibration
            bins = m["calibration_uncalibrated"]["reliability"]
            axis.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], marker="x", lw=1, ls="--",
                      color=line.get_color(), label=f"{method}, before calibration")
    axis.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="perfect calibration")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("mean predicted probability of osteoporosis")
    axis.set_ylabel("observed fraction with osteoporosis")
    axis.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    axis.set_title("Reliability, 5 equal-size groups")
    return figure


def _decision_figure(decisions: dict):
    figure = Figure(figsize=(6, 4.2))
    axis = figure.subplots()
    first = next(iter(decisions.values()))
    axis.plot(first["threshold"], first["refer_all"], color="black", lw=1.2, ls="--", label="refer all for DXA")
    axis.plot(first["threshold"], first["refer_none"], color="grey", lw=1.2, ls=":", label="refer none")
    for method, curve in decisions.items():
        if method != "majority":  # majority refers all or none: the two reference lines already
            axis.plot(curve["threshold"], curve["model"], lw=1.5, label=method)
    axis.set_ylim(-0.05, max(0.05, first["prevalence"]) + 0.05)
    axis.set_xlabel("threshold probability pt (refer when p ≥ pt)")
    axis.set_ylabel("net benefit")
    axis.legend(fontsize=8)
    axis.set_title(f"Decision curves at prevalence {first['prevalence']:.2f}")
    return figure


def _decision_html(decisions: dict, dataset: dict) -> str:
    prevalence = next(iter(decisions.values()))["prevalence"]
    cohort = dataset.get("positives", 0) / max(dataset.get("n", 1), 1)
    source = ("the cohort's own" if abs(prevalence - cohort) < 1e-9 else f"given (prevalence; the cohort's is "
              f"{cohort:.2f})")
    return (_img(figure_uri(_decision_figure(decisions)), "decision curves") +
            f"<p>Net benefit (Vickers &amp; Elkin 2006) of referring for DXA the subjects whose out-of-fold "
            f"probability reaches a threshold probability pt, at prevalence {prevalence:.2f} ({source}): "
            "sensitivity × prevalence − (1 − specificity) × (1 − prevalence) × pt / (1 − pt). pt is the risk at which "
            "a clinician would be indifferent to referring; a model is useful where its curve lies above both "
            "reference lines. An enriched research cohort (many more osteoporosis cases than the screened "
            "population) overstates the benefit and the PPV: give the screened population's prevalence with "
            "<code>--prevalence</code>.</p>")


def _curves_figure(curves: dict):
    """Training loss and accuracy per epoch of each fine-tuned method: mean over folds, band min–max."""
    figure = Figure(figsize=(10, 3.6))
    axes = figure.subplots(1, 2)
    for method, curve in curves.items():
        for axis, key in zip(axes, ("loss", "accuracy"), strict=True):
            epochs = np.arange(1, len(curve[key]["mean"]) + 1)
            line, = axis.plot(epochs, curve[key]["mean"], lw=1.6, label=f"{method} ({curve['folds']} folds)")
            axis.fill_between(epochs, curve[key]["min"], curve[key]["max"], color=line.get_color(), alpha=0.2, lw=0)
    axes[0].set_ylabel("training loss (cross-entropy, log scale)")
    axes[0].set_yscale("log")  # the late epochs' loss is orders of magnitude below the first
    axes[1].set_ylabel("training accuracy")
    axes[1].set_ylim(0, 1.03)
    for axis in axes:
        axis.set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def _example_subjects(result: dict, labels: np.ndarray) -> list[tuple[str, int]]:
    """Up to one subject per outcome (TP, TN, FN, FP): the most confident one."""
    prediction = flagged(result["p"]).astype(int)
    examples = []
    for name, truth, predicted in (("true positive", 1, 1), ("true negative", 0, 0),
                                   ("false negative", 1, 0), ("false positive", 0, 1)):
        candidates = np.flatnonzero((labels == truth) & (prediction == predicted))
        if len(candidates):
            confidence = np.abs(result["p"][candidates] - THRESHOLD)
            examples.append((name, int(candidates[np.argmax(confidence)])))
    return examples


COMPARISON_TEXT = ("<p>OPA: sensitivity for osteoporosis; NOPA: specificity; OA: accuracy; BA: balanced "
                   "accuracy. Intervals: Wilson 95%. AUROC is computed once on pooled out-of-fold scores; under "
                   "leave-one-out it is biased (a model that outputs the training-fold prevalence scores far "
                   f"from {THRESHOLD:g}), so read it beside balanced accuracy and, where run, the repeated k-fold "
                   "protocol. "
                   "DeLong's test compares each method's pooled AUROC with group-attention's on the same "
                   "subjects (DeLong et al. 1988). The repeated k-fold protocol's per-repeat AUROC (each repeat "
                   "scores every subject once; the mean over repeats, its interval from 2,000 bootstrap "
                   "resamples of subjects within each class) does not carry that bias, nor does the "
                   "leave-pair-out AUROC of a leave-one-out run (<code>--leave-pair-out</code>: every "
                   "osteoporosis-normal pair held out together and scored by one model; Airola et al. 2011). "
                   "The paper's numbers come from its private 70-subject cohort and are not comparable.</p>")


def _comparison_html(metrics: dict, comparisons: list[dict]) -> str:
    """The report's Table 1: rates with intervals, AUROCs, counts, the tests against group-attention, the paper's
    figures; and what each column means."""
    p_values = {c["method"]: c for c in comparisons}
    rows = []
    for method, m in metrics.items():
        paper = PAPER_TABLE_1.get(method)
        paper_text = " / ".join(percent(v) for v in paper) if paper else "—"
        test = p_values.get(method)
        mcnemar = f"b={test['b']}, c={test['c']}, p={test['p_value']:.3g}" if test else "reference"
        delong = (f"{test['delong']['difference']:+.3f}, p={test['delong']['p_value']:.3g}"
                  if test and test.get("delong") else "reference" if not test else "—")
        repeats, pairs = m.get("auroc_repeats"), m.get("auroc_lpo")
        repeat_cell = (f"<td>{repeats['mean']:.3f} [{repeats['ci95'][0]:.3f}–{repeats['ci95'][1]:.3f}] per "
                       "repeat</td>" if repeats else
                       f"<td>{pairs['auroc']:.3f} leave-pair-out ({pairs['pairs']} pairs)</td>" if pairs else
                       "<td>—</td>")
        rows.append(f"<tr><td>{html.escape(method)}</td><td>{with_interval(m, 'OPA')}</td>"
                    f"<td>{with_interval(m, 'NOPA')}</td><td>{with_interval(m, 'OA')}</td>"
                    f"<td>{percent(m['balanced_accuracy'])}</td><td>{m['auroc']:.3f}</td>{repeat_cell}"
                    f"<td>{m['tp']}/{m['fn']}/{m['tn']}/{m['fp']}</td><td>{mcnemar}</td><td>{delong}</td>"
                    f"<td>{paper_text}</td></tr>")
    return ("<table><tr><th>method</th><th>OPA % [95% CI]</th><th>NOPA % [95% CI]</th><th>OA % [95% CI]</th>"
            "<th>BA %</th><th>AUROC (pooled)</th><th>AUROC without the LOO bias</th>"
            "<th>TP/FN/TN/FP</th><th>McNemar vs group-attention</th><th>DeLong: AUROC difference vs "
            "group-attention</th><th>paper OPA/NOPA/OA %</th></tr>" + "".join(rows) + "</table>" + COMPARISON_TEXT)


def _examples_html(result: CVResult, cohort: Cohort, showcase: str) -> str:
    """The 8 patches of the most confident subject of each outcome (TP, FN, TN, FP) under the showcase method."""
    labels, subject_ids, scores = result.labels, result.subject_ids, result.per_subject[showcase]
    montages = []
    context = cohort.patch_config.context
    for outcome, index in _example_subjects(scores, labels):
        title = (f"{subject_ids[index]}: {outcome} — true {CLASSES[labels[index]]}, "
                 f"p(osteoporosis) = {scores['p'][index]:.2f}")
        if scores["attention"] is not None:
            title += "\nattention " + ", ".join(f"{g} {a:.2f}" for g, a in zip(GROUPS, scores["attention"][index],
                                                                               strict=True))
        montage = subject_montage(cohort.patches[index].plain_views(context), title, CLASSES[labels[index]])
        montages.append(f"<figure>{_img(image_uri(montage), title)}<figcaption>{html.escape(outcome)}"
                        "</figcaption></figure>")
    return (f"<p>Method: {html.escape(showcase)}. The 8 patches of the most confident subject of each outcome.</p>"
            + "".join(montages))


def _curves_html(curves: dict) -> str:
    if not curves:
        return ("<p>Training curves are recorded for fine-tuned methods (<code>--mode finetune</code>); frozen-mode "
                "heads train in a stacked computation that records none.</p>")
    return (_img(figure_uri(_curves_figure(curves)), "training curves") + "<p>Per epoch, on the training subjects "
            "of each fold: the mean cross-entropy of the augmented batches and the fraction of them classified right "
            "as the steps saw them (training mode); the line is the mean over folds, the band their minimum to "
            "maximum. They show convergence, not accuracy on unseen subjects.</p>")


def build_report(result: CVResult, cohort: Cohort, config: dict) -> str:
    """The whole report.html of a cross-validation as a string: result (its metrics, comparisons, out-of-fold
    scores, spread across seeds, training and decision curves), the cohort it ran on (its record and the patches of
    the example subjects) and config (the run's configuration as config.json records it, with recipe, kernels and
    the decision rule's text)."""
    metrics, per_subject, labels, dataset = result.metrics, result.per_subject, result.labels, cohort.info
    showcase = "group-attention" if "group-attention" in per_subject else next(iter(per_subject))
    attention = _attention_figure(per_subject, labels)
    decisions = result.decision_curves
    sections = {
        "Comparison": (_comparison_html(metrics, result.comparisons) + _task_html(config, metrics)
                       + (_spread_html(result.spread) if result.spread and len(config.get("seeds", ())) > 1 else "")),
        "Confusion matrices": _img(figure_uri(_confusion_figure(metrics)), "confusion matrices"),
        "ROC curves": _img(figure_uri(_roc_figure(per_subject, labels)), "ROC curves"),
        "Operating point": _operating_html(metrics, config.get("rule_text")),
        "Calibration": (_calibration_html(metrics) + _img(figure_uri(_reliability_figure(metrics)),
                                                          "reliability diagram")),
        "Decision curves": (_decision_html(decisions, dataset) if decisions else "<p>Not computed.</p>"),
        "Attention by group and class": (_img(figure_uri(attention), "attention by group and class")
                                         if attention is not None else "<p>No method with attention was run.</p>"),
        "Training curves": _curves_html(result.training_curves),
        "Correctly and wrongly classified subjects": _examples_html(result, cohort, showcase),
        "Reporting checklist": _checklist_html(config, dataset, metrics),
        "Configuration": "<pre>" + html.escape(_json_text({"dataset": dataset, "config": config})) + "</pre>",
    }
    banner = ("<p class='warn'>Synthetic phantom data: these figures say nothing about clinical performance.</p>"
              if dataset.get("synthetic") else "")
    body = "".join(f"<section><h2>{html.escape(title)}</h2>{sections[title]}</section>" for title in SECTIONS)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>osteoscreen cross-validation report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;font-size:0.9em}}td,th{{border:1px solid #bbb;padding:4px 8px;text-align:left}}
th{{background:#eef}}img{{max-width:100%}}figure{{display:inline-block;margin:0.5em}}
.warn{{background:#fff3cd;padding:0.5em;border:1px solid #e0c36b}}pre{{background:#f6f6f6;padding:1em;
overflow-x:auto;font-size:0.8em}}</style></head>
<body><h1>osteoscreen — cross-validation report</h1>
<p>Research pre-screening of osteoporosis from panoramic radiographs (Fan et al. 2021). Not a diagnostic device.
Dataset: {html.escape(str(dataset.get('path')))} — task {html.escape(str(config.get('task')))}:
{dataset.get('n')} subjects analysed ({_counts_text(dataset)}).
Protocol: {html.escape(str(config.get('protocol')))}; training recipe: {html.escape(_recipe_text(config))}.</p>
{banner}{body}</body></html>
"""


TASK_TEXT = {"osteoporosis-vs-normal": "osteoporosis positive, normal negative, osteopenia excluded (the paper's)",
             "osteoporosis-vs-rest": "osteoporosis positive, osteopenia and normal negative",
             "low-bmd-vs-normal": "osteopenia and osteoporosis positive, normal negative"}


def _task_html(config: dict, metrics: dict) -> str:
    """What the task counts as positive, and what the clinical methods in the table are."""
    task = config.get("task", "osteoporosis-vs-normal")
    text = (f"<p>Task <code>{html.escape(task)}</code>: {html.escape(TASK_TEXT.get(task, ''))}; OPA and NOPA are "
            "sensitivity and specificity for that question.")
    if "clinical" in metrics:
        without = metrics["clinical"].get("without_covariates", 0)
        text += (" <code>clinical</code> sees no image: logistic regression on age and sex (standardised inside each "
                 "fold); set beside the image methods (McNemar, DeLong) it answers whether the image adds anything "
                 "over age and sex." + (f" {without} subject(s) lacked age or sex and were scored at the training "
                                        "prevalence." if without else ""))
    if any(method.endswith("+clinical") for method in metrics):
        text += (" A <code>+clinical</code> method is its head with age and sex joined to the fused image "
                 "representation before the final layer.")
    return text + "</p>"


def _counts_text(dataset: dict) -> str:
    return f"{dataset.get('positives')} positive, {dataset.get('negatives')} negative" + _excluded_text(dataset)


def _excluded_text(dataset: dict) -> str:
    excluded = dataset.get("excluded") or {}
    if not excluded:
        return ""
    return "; excluded by the task: " + ", ".join(f"{count} {html.escape(name)}" for name, count in excluded.items())


def _json_text(payload) -> str:
    return strict_json(payload, default=str)
