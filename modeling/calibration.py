"""Calibration of a candidate's probabilities, chosen and fitted on the validation fold (choose_calibration):
none, Platt scaling on the logit or a blend of Platt and isotonic. Every offered method is strictly monotone,
so it keeps the ranking and AUC; a score of 70 means about 70% of such deals were won. Applied by
modeling.scoring.calibrate."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from modeling.evaluation import ece
from modeling.scoring import calibrate

# Only strictly monotone maps, so calibration keeps the ranking the candidate was chosen on: pure isotonic
# (still read by modeling.scoring for older versions) ties every deal that falls on one of its flat steps or
# beyond its fitted range, which drift makes common (UCI Bank Marketing: test AUC 0.692 with an isotonic map
# chosen against 0.783 with Platt on the same candidate); blend keeps Platt's slope under its steps.
CALIBRATION_METHODS = ("none", "platt", "blend")
CALIBRATION_RECENT = 0.5  # alternative fit: only the most recent half of the data given


def _fit_platt(p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    z = np.log(q / (1 - q)).reshape(-1, 1)
    if len(np.unique(y)) < 2:
        return {"method": "platt", "a": 1.0, "b": 0.0}
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(z, y)
    return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}


def _fit_calibration(p: np.ndarray, y: np.ndarray, method: str) -> dict[str, Any]:
    """One calibrator of `method` fitted on (p, y): platt, isotonic (scikit-learn's IsotonicRegression,
    stored as its fitted points), blend (half each) or none."""
    if method == "none" or len(np.unique(y)) < 2:
        return {"method": "none"}
    platt = _fit_platt(p, y)
    if method == "platt":
        return platt
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
    points = {
        "x": [round(float(v), 6) for v in iso.X_thresholds_],
        "y": [round(float(v), 6) for v in iso.y_thresholds_],
    }
    if method == "isotonic":
        return {"method": "isotonic", **points}
    return {"method": "blend", "weight": 0.5, "a": platt["a"], "b": platt["b"], **points}


def choose_calibration(p_val: np.ndarray, y_val: np.ndarray) -> dict[str, Any]:
    """Calibration chosen on a time-ordered split of the validation fold: every method is fitted on its
    older half and judged (ECE, then Brier) on its most recent half, where the drift shows; the winner
    is refitted on the most recent CALIBRATION_RECENT share of the fold (the win rate drifts, so the
    latest deals say most about the coming ones). The test records are never used."""
    n = len(p_val)
    half = n // 2
    trials: dict[str, dict[str, float]] = {}
    if half >= 50 and len(np.unique(y_val[:half])) == 2 and len(np.unique(y_val[half:])) == 2:
        for method in CALIBRATION_METHODS:
            for recent in (1.0, CALIBRATION_RECENT):
                start = half - int(half * recent)
                cal = _fit_calibration(p_val[start:half], y_val[start:half], method)
                q = calibrate(p_val[half:], cal)
                key = f"{method}@{recent:g}"
                trials[key] = {
                    "ece": round(ece(q, y_val[half:]), 5),
                    "brier": round(float(brier_score_loss(y_val[half:], q)), 5),
                }
    best = min(trials, key=lambda k: (trials[k]["ece"], trials[k]["brier"])) if trials else "platt@1"
    method, recent_s = best.split("@")
    start = n - int(n * float(recent_s))
    if len(np.unique(y_val[start:])) < 2:
        start = 0
    cal = _fit_calibration(p_val[start:], y_val[start:], method)
    cal["fitted_on"] = {"rows": int(n - start), "share_of_validation": float(recent_s)}
    cal["trials"] = trials
    return cal
