"""The landmark evaluation's outputs: a self-contained report.html (the accuracy table, the worst cases drawn),
metrics.json and errors.csv (one row per subject and landmark)."""

from __future__ import annotations

import csv
import html
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from osteoscreen.core.landmarks import LANDMARKS
from osteoscreen.io.outputs import strict_json
from osteoscreen.landmarking.evaluation import P_CHANGE, SDR_MM, LandmarkEvaluation
from osteoscreen.reporting.visualise import figure_uri

WORST_CASES = 4


def write_evaluation(evaluation: LandmarkEvaluation, folder: Path) -> None:
    """report.html, metrics.json and errors.csv into `folder`."""
    summary = evaluation.summary()
    (folder / "metrics.json").write_text(strict_json({**summary, "targets_met": evaluation.targets_met()}))
    with open(folder / "errors.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["subject_id", "fold", "landmark", "x_annotated", "y_annotated", "x_suggested",
                         "y_suggested", f"error_{evaluation.unit}", "confidence", "flagged", "patch_overlap"])
        for i, subject_id in enumerate(evaluation.subject_ids):
            suggestion = evaluation.suggestions[i]
            for k, name in enumerate(LANDMARKS):
                writer.writerow([subject_id, int(evaluation.folds[i]), name, *np.round(evaluation.annotated[i, k], 1),
                                 *np.round(suggestion.points[k], 1), f"{evaluation.errors[i, k]:.3f}",
                                 f"{suggestion.confidence[k]:.3f}", int(suggestion.flagged[k]),
                                 f"{evaluation.overlap[i, k]:.3f}"])
    (folder / "report.html").write_text(report_html(evaluation, summary))


def format_table(summary: dict) -> str:
    """The accuracy table as text (what the CLI prints)."""
    unit = summary["unit"]
    limits = [f"<={limit:g}" for limit in SDR_MM] if unit == "mm" else []
    lines = [f"{'landmark':<18}{'MRE ' + unit:>9}{'SD':>7}" + "".join(f"{x:>7}" for x in limits)
             + f"{'overlap':>9}{'flagged':>9}"]
    for name, entry in [*summary["landmarks"].items(), ("overall", summary["overall"])]:
        rates = "".join(f"{100 * entry[f'sdr_{limit:g}mm']:>6.1f}%" for limit in SDR_MM) if unit == "mm" else ""
        lines.append(f"{name:<18}{entry['mre']:>9.2f}{entry['sd']:>7.2f}{rates}{entry['overlap_mean']:>9.3f}"
                     f"{100 * entry['flagged']:>8.1f}%")
    if "p_change" in summary:
        change = summary["p_change"]
        lines.append(f"screening p change: median {change['median']:.4f}, 90th percentile {change['p90']:.4f}, "
                     f"{100 * change[f'share_within_{P_CHANGE:g}']:.0f}% of subjects within {P_CHANGE:g}")
    return "\n".join(lines)


def _case_figure(evaluation: LandmarkEvaluation, index: int) -> Figure:
    """One radiograph (its working level) with annotated and suggested points and their errors."""
    image = evaluation.images[index]
    scale = image.level.shape[1] / image.shape[1]
    figure = Figure(figsize=(10, 5.4), dpi=100)
    axis = figure.add_subplot()
    axis.imshow(image.level.numpy(), cmap="gray", vmin=0, vmax=1)
    suggestion = evaluation.suggestions[index]
    for k, name in enumerate(LANDMARKS):
        (xa, ya) = (evaluation.annotated[index, k] + 0.5) * scale - 0.5
        (xs, ys) = (suggestion.points[k] + 0.5) * scale - 0.5
        axis.plot([xa, xs], [ya, ys], "-", color="#e67e22", linewidth=1)
        axis.plot(xa, ya, "o", markerfacecolor="none", markeredgecolor="#2ecc71", markersize=9, markeredgewidth=2)
        axis.plot(xs, ys, "x", color="#e74c3c" if suggestion.flagged[k] else "#f1c40f", markersize=9,
                  markeredgewidth=2)
        axis.annotate(f"{name} {evaluation.errors[index, k]:.1f} {evaluation.unit}", (xs, ys), xytext=(5, -7),
                      textcoords="offset points", color="#f1c40f", fontsize=7)
    fold = f" (fold {evaluation.folds[index]})" if evaluation.config["protocol"] == "k-fold" else ""
    axis.set_title(f"{evaluation.subject_ids[index]}{fold}: annotated o, suggested x (red: flagged)", fontsize=9)
    axis.set_axis_off()
    figure.tight_layout()
    return figure


def report_html(evaluation: LandmarkEvaluation, summary: dict) -> str:
    worst = np.argsort(-evaluation.errors.max(axis=1))[:WORST_CASES]
    cases = "".join(f'<figure><img src="{figure_uri(_case_figure(evaluation, int(i)))}" '
                    f'alt="{html.escape(evaluation.subject_ids[i])}"></figure>' for i in worst)
    config = html.escape(strict_json(summary["config"]))
    if summary["protocol"] == "k-fold":
        title = f"{summary['folds']}-fold cross-validation on {summary['n']} radiographs"
        how = "Each radiograph's landmarks were suggested by a model trained on the other folds only."
    else:
        trained = summary["config"]["landmark_model"]
        title = f"a trained model on {summary['n']} radiographs it never saw"
        how = (f"Every radiograph's landmarks were suggested by one model, trained on the {trained['n']} radiographs "
               f"of {html.escape(str(trained['path']))}.")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>osteoscreen landmark evaluation</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
pre{{background:#f4f4f4;padding:1em;overflow-x:auto}}img{{max-width:100%}}</style></head><body>
<h1>Landmark suggestion: {title}</h1>
<p>Research software, not a medical device. {how} Radial error in {summary['unit']}; success detection rates within
2, 2.5, 3 and 4 mm (ISBI 2015 convention); overlap: intersection over union of the suggested and annotated screening
patches; flagged: points the model marked as unsure.</p>
<pre>{html.escape(format_table(summary))}</pre>
<h2>The {len(worst)} worst radiographs (largest single error)</h2>{cases}
<h2>Configuration</h2><pre>{config}</pre>
</body></html>
"""
