"""Metrics of calibrated probabilities against outcomes: expected calibration error, the calibration table,
ROC points, the F1-optimal threshold and the whole set a version reports on its test records (`evaluate`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

DEFAULT_READINESS = (0.75, 0.65)  # AUC >= 0.75 Ready, >= 0.65 OK, else Not ready


def ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(p) * abs(float(p[m].mean()) - float(y[m].mean()))
    return float(total)


def calibration_table(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        out.append(
            {
                "from": b / bins,
                "to": (b + 1) / bins,
                "count": int(m.sum()),
                "mean_predicted": round(float(p[m].mean()), 4) if m.any() else None,
                "won_rate": round(float(y[m].mean()), 4) if m.any() else None,
            }
        )
    return out


def roc_points(p: np.ndarray, y: np.ndarray, step: int = 5) -> list[dict[str, Any]]:
    """The ROC curve on a grid of score cuts (0, 5, ..., 100 by default): at each cut, the share of won
    records scored above it (`tpr`) and of lost ones (`fpr`); from (1, 1) at cut 0 down to (0, 0) at 100."""
    y = y.astype(int)
    won, lost = max(int(y.sum()), 1), max(int((1 - y).sum()), 1)
    out = []
    for cut in range(0, 101, step):
        pred = p * 100 > cut if cut else np.ones(len(p), dtype=bool)
        out.append(
            {
                "threshold": cut,
                "tpr": round(float((pred & (y == 1)).sum()) / won, 4),
                "fpr": round(float((pred & (y == 0)).sum()) / lost, 4),
            }
        )
    return out


def f1_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """The cut (on a 1%-grid of scores) that maximises F1 when scores above it are predicted won."""
    y = y.astype(int)
    best = (-1.0, 0.5)
    for thr in np.unique(np.round(p, 2)):
        pred = p > thr
        tp = int((pred & (y == 1)).sum())
        fp = int((pred & (y == 0)).sum())
        fn = int((~pred & (y == 1)).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if f1 > best[0]:
            best = (f1, float(thr))
    return best[1]


def evaluate(
    p: np.ndarray,
    y: np.ndarray,
    readiness: Sequence[float] = DEFAULT_READINESS,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Metrics at `threshold` (scores above it are predicted won) + AUC, Brier, ECE.

    The threshold must be chosen on other records (train_model takes the F1-optimal cut on the validation
    fold); without one, the F1-optimal cut on these records is used and the F1 reported is optimistic.
    """
    y = y.astype(int)
    thr = f1_threshold(p, y) if threshold is None else float(threshold)
    pred = p > thr
    tp = int((pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    n = len(y)
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    ready, ok = readiness
    status = "Ready" if auc >= ready else "OK" if auc >= ok else "Not ready"
    return {
        "threshold": round(thr * 100),
        "accuracy": round((tp + tn) / n, 4) if n else None,
        "precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 0.0,
        "f1": round(2 * tp / (2 * tp + fp + fn), 4) if tp else 0.0,
        "threshold_chosen_on": "validation" if threshold is not None else "these records",
        "conversion_rate": round((tp + fn) / n, 4) if n else None,
        "confusion_matrix": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "auc": round(auc, 4),
        "brier": round(float(brier_score_loss(y, p)), 4),
        "ece": round(ece(p, y), 4),
        "calibration": calibration_table(p, y),
        "roc": roc_points(p, y),
        "readiness": status,
        "readiness_cutoffs": {"ready": ready, "ok": ok},
        "test_rows": n,
    }
