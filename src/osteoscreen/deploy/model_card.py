"""The model card: the README.md of a model directory, written from its model.json (intended use, training data,
method, decision rule, novelty check, cross-validated performance, limitations)."""

from __future__ import annotations

from osteoscreen.core.landmarks import DEFAULT_TASK
from osteoscreen.training.recipes import recipe_text


def model_card(info: dict) -> str:
    """The model card of a model.json's content, as Markdown."""
    data = info["training_data"]
    synthetic = data.get("synthetic")
    cv = info.get("cross_validation")
    lines = [f"# osteoscreen model: {info['method']} ({info['mode']}, {info['backbone']['name']})", "",
             "## Intended use",
             "Research pre-screening of osteoporosis from dental panoramic radiographs: a flag that a patient may "
             "benefit from a DXA referral. **Not a diagnostic device**; it does not replace DXA or clinical "
             "judgement, and its output must not be used to diagnose or treat anyone.", ""]
    if synthetic:
        lines += ["**Trained on synthetic phantom radiographs.** This model has no clinical validity whatsoever: "
                  "it has never seen a real patient. It exists to test the software.", ""]
    task = data.get("task", DEFAULT_TASK)
    excluded = ", ".join(f"{count} {name}" for name, count in (data.get("excluded") or {}).items())
    lines += ["## Training data",
              f"- task `{task}`: {data['n']} subjects ({data['positives']} positive, {data['negatives']} negative"
              f"{'; excluded: ' + excluded if excluded else ''}), "
              f"{'synthetic phantom' if synthetic else 'user-supplied'}; dataset SHA-256 `{data['hash']}`", "",
              "## Method",
              f"- Fan et al. 2021 pipeline: 8 landmark patches ({_patch_text(info)}), one shared "
              f"{info['backbone']['name']} backbone, head `{info['method']}`, mode `{info['mode']}`",
              f"- training recipe: {recipe_text(info['recipe']) if info.get('recipe') else 'not recorded'} "
              "(`paper`: Fan et al. 2021 as published; `osteoscreen`: this project's defaults; docs/method.md)",
              f"- backbone weights: {info['backbone']['weights'].get('weights')} "
              f"(file {info['backbone']['weights'].get('file')}, SHA-256 {info['backbone']['weights'].get('sha256')})",
              f"- decision: osteoporosis when p_osteoporosis >= {info['threshold']:.4g} "
              f"({info['decision_rule']['rule']})",
              "- novelty check: a radiograph whose features lie farther from the training subjects than any training "
              "subject from the others (Mahalanobis, Ledoit-Wolf covariance) is flagged `unlike_training`", "",
              "## Performance"]
    if cv:
        m = cv["metrics"]
        lines += [f"Cross-validated ({cv['protocol']}) on the training data: OPA (sensitivity) {m['OPA']:.3f}, "
                  f"NOPA (specificity) {m['NOPA']:.3f}, OA {m['OA']:.3f}, balanced accuracy "
                  f"{m['balanced_accuracy']:.3f}, AUROC {m['auroc']:.3f} (n = {m['n']}). 95% Wilson intervals "
                  f"are in model.json."]
    else:
        lines += ["Not measured: no cross-validation run was given at training time (`osteoscreen train --cv RUN`)."]
    lines += ["", "## Outputs and the patient's identity",
              "- `predictions.csv`, the figures, `prediction.json`, the web page's answers and every log carry the "
              "subject id and nothing from a DICOM header.",
              "- `predict --dicom-out` (and the page's DICOM buttons) write a DICOM SR and a key image per DICOM "
              "radiograph that **carry the input's patient and study identity** (name, id, birth date, sex, study "
              "and accession), deliberately, so that a PACS files them with the radiograph; nothing else of the "
              "input's header is copied. Store and send them only where the radiograph itself may go.",
              "", "## Limitations",
              "- Small training cohorts give wide uncertainty; performance on other devices, populations and "
              "landmark annotators is unknown until measured there.",
              "- Landmarks must be placed as in training; patches near the image border are reflect-padded.", ""]
    return "\n".join(lines)


def _patch_text(info: dict) -> str:
    patch = info["preprocessing"]["patch"]
    side = f"{patch['patch_mm']} mm" if patch["patch_mm"] else f"{patch['patch_px']} px"
    return f"{side}, fed at {info['preprocessing']['input_size']} px"
