"""Decision curves (Vickers & Elkin, Medical Decision Making 2006): the net benefit of referring for DXA the
subjects whose predicted probability reaches a threshold probability pt, against referring everyone or no one.

Net benefit = sensitivity x π - (1 - specificity) x (1 - π) x pt / (1 - pt), with π the prevalence in the
population screened. With π the cohort's own prevalence this is TP/n - FP/n x pt/(1 - pt), the usual form;
`prevalence` lets a user give the screened population's π instead, since an enriched research cohort (here 70 %
osteoporosis, against roughly 15-30 % among women over 50) overstates PPV and the benefit of referring.
pt is the risk at which a clinician is indifferent between referring and not: pt/(1 - pt) is the harm of an
unnecessary DXA relative to the benefit of finding one case.
"""

from __future__ import annotations

import numpy as np

THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)  # threshold probabilities the report tabulates and plots


def net_benefit(y_true: np.ndarray, p: np.ndarray, thresholds: np.ndarray = THRESHOLDS,
                prevalence: float | None = None) -> dict:
    """{"threshold", "model", "refer_all", "refer_none"}: lists of net benefit per threshold probability.

    y_true [n] 0/1, p [n] predicted probabilities; prevalence: of the screened population (default: the
    cohort's). Referring all has sensitivity 1 and specificity 0 at every threshold.
    """
    y, p = np.asarray(y_true, int), np.asarray(p, float)
    prior = float(y.mean()) if prevalence is None else float(prevalence)
    odds = thresholds / (1 - thresholds)
    positives, negatives = max(int(y.sum()), 1), max(int((1 - y).sum()), 1)
    referred = p[None, :] >= thresholds[:, None]  # [thresholds, n]
    sensitivity = (referred & (y == 1)).sum(axis=1) / positives
    false_positive_rate = (referred & (y == 0)).sum(axis=1) / negatives
    return {"threshold": thresholds.tolist(), "prevalence": prior,
            "model": (sensitivity * prior - false_positive_rate * (1 - prior) * odds).tolist(),
            "refer_all": (prior - (1 - prior) * odds).tolist(), "refer_none": [0.0] * len(thresholds)}
