"""Drift of a published version (docs/MODELING.md "Drift"): is the population it scores still the one it
was trained on, and do its scores still come true?

- **Population stability index** (PSI) of each model input and of the score: sum over buckets of
  (actual - expected) * ln(actual / expected), expected = the share among the version's training records
  (stored in its meta at training: `training_profile`), actual = the share among the open opportunities a
  scoring run scores. Buckets: numbers on the training bins already in the spec (`f["bins"]`, the
  insights' quartile edges) plus missing; categories by value as the feed has them (rare and unseen values
  are `__other__`, empty ones `__missing__`); the score in SCORE_BINS equal-width bins of the calibrated
  probability. PSI < PSI_MODERATE is stable, up to PSI_SIGNIFICANT moderate, above it significant.
- **Realized performance**: the last score written for each opportunity that has closed since, against
  its outcome: AUC, expected calibration error (`modeling.evaluation.ece`), won rate and mean score, beside the
  version's test metrics. The model *has got worse* when, with at least MIN_REALIZED closed records (and
  MIN_REALIZED_PER_OUTCOME of each outcome), the realized AUC is more than AUC_MARGIN below the test AUC.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modeling.features import MISSING
from modeling.insights import value_keys
from modeling.segments import outcome_metrics

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
SCORE_BINS = 10
EMPTY_SHARE = 1e-4  # a bucket empty on one side counts as this share (PSI stays finite)
MIN_OPEN_RECORDS = 50  # fewer open records scored: PSI is not judged (too noisy to alert on)
AUC_MARGIN = 0.05
MIN_REALIZED = 100
MIN_REALIZED_PER_OUTCOME = 30  # with fewer of one outcome the AUC's standard error passes the margin
REALIZED_DAYS = 92  # closed records of the last 3 months (or since the version was trained, if later)
SHARE_DIGITS = 4


def shares(keys: np.ndarray) -> dict[str, float]:
    """Share of each distinct key (as a string), rounded to SHARE_DIGITS."""
    if len(keys) == 0:
        return {}
    values, counts = np.unique(np.asarray(keys, dtype=object).astype(str), return_counts=True)
    return {str(v): round(float(c) / len(keys), SHARE_DIGITS) for v, c in zip(values, counts, strict=True)}


def psi(expected: Mapping[str, float], actual: Mapping[str, float]) -> float:
    """Population stability index of `actual` against `expected` (shares by bucket; a bucket missing on
    one side has EMPTY_SHARE there)."""
    total = 0.0
    for key in set(expected) | set(actual):
        e = max(float(expected.get(key, 0.0)), EMPTY_SHARE)
        a = max(float(actual.get(key, 0.0)), EMPTY_SHARE)
        total += (a - e) * math.log(a / e)
    return total


def level(value: float | None) -> str | None:
    """stable (< PSI_MODERATE), moderate (up to PSI_SIGNIFICANT) or significant; None when not measured."""
    if value is None:
        return None
    return "significant" if value > PSI_SIGNIFICANT else "moderate" if value >= PSI_MODERATE else "stable"


def score_keys(p: np.ndarray) -> np.ndarray:
    """The score bucket of each calibrated probability (equal width, as `modeling.evaluation.ece` bins)."""
    q = np.asarray(p, dtype=float)
    return np.minimum((q * SCORE_BINS).astype(int), SCORE_BINS - 1).clip(0)


def attribute_shares(feed: Mapping[str, np.ndarray], spec: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per model input: the share of each bucket (number bins from the spec, category values, missing)."""
    return {f["name"]: shares(value_keys(feed[f["input"]], f)) for f in spec["features"]}


def training_profile(
    feed: Mapping[str, np.ndarray], spec: Mapping[str, Any], p_test: np.ndarray, p_open: np.ndarray
) -> dict[str, Any]:
    """What a version stores for drift (`meta["drift"]`): the bucket shares of every input over the training
    records of `feed`; the score shares of its test records (`p_test`, calibrated, out of sample) and of the
    open records at training time (`p_open`, the population a scoring run scores)."""
    rows = len(next(iter(feed.values()))) if feed else 0
    return {
        "attributes": attribute_shares(feed, spec),
        "scores": shares(score_keys(p_test)),
        "scoreRows": int(len(p_test)),
        "openScores": shares(score_keys(p_open)),
        "openRows": int(len(p_open)),
        "rows": int(rows),
        "scoreBins": SCORE_BINS,
    }


def score_drift(profile: Mapping[str, Any], p: np.ndarray) -> dict[str, Any] | None:
    """PSI of the scores `p` against the open records at training time (the same kind of records: open deals
    observed when scored), or, for lack of MIN_OPEN_RECORDS of them, against the test records; `vsTest`
    is always against the test records (closed deals observed inside their life score differently)."""
    actual = shares(score_keys(p))
    vs_test = psi(profile["scores"], actual) if profile.get("scores") else None
    if int(profile.get("openRows") or 0) >= MIN_OPEN_RECORDS:
        value, against = psi(profile["openScores"], actual), "open records at training"
    elif vs_test is not None:
        value, against = vs_test, "test records"
    else:
        return None
    return {
        "psi": round(value, 4),
        "level": level(value),
        "against": against,
        "vsTest": None if vs_test is None else round(vs_test, 4),
    }


def population(
    profile: Mapping[str, Any], feed: Mapping[str, np.ndarray], spec: Mapping[str, Any], p: np.ndarray
) -> dict[str, Any]:
    """PSI of every input and of the score of the open records (`feed`, their calibrated `p`) against the
    version's training profile, largest first; `drifted` names the org attributes (not the derived inputs:
    days open and past counts depend on when a deal is observed) whose PSI is significant."""
    n = int(len(p))
    if n < MIN_OPEN_RECORDS:
        return {"records": n, "measured": False, "attributes": [], "drifted": [], "moderate": [], "score": None}
    expected = profile.get("attributes") or {}
    actual = attribute_shares(feed, spec)
    rows = []
    for f in spec["features"]:
        if f["name"] not in expected:
            continue
        value = psi(expected[f["name"]], actual[f["name"]])
        rows.append(
            {
                "attribute": f["name"],
                "label": f["label"],
                "derived": bool(f.get("derived")),
                "psi": round(value, 4),
                "level": level(value),
                "topShift": _top_shift(expected[f["name"]], actual[f["name"]], f),
            }
        )
    rows.sort(key=lambda r: -r["psi"])
    return {
        "records": n,
        "measured": True,
        "attributes": rows,
        "drifted": [r["attribute"] for r in rows if r["level"] == "significant" and not r["derived"]],
        "moderate": [r["attribute"] for r in rows if r["level"] == "moderate" and not r["derived"]],
        "score": score_drift(profile, p),
    }


def _top_shift(expected: Mapping[str, float], actual: Mapping[str, float], item: Mapping[str, Any]) -> dict[str, Any]:
    """The bucket whose share moved most: {"value", "expected", "actual"} (option labels where known)."""
    key = max(set(expected) | set(actual), key=lambda k: abs(actual.get(k, 0.0) - expected.get(k, 0.0)))
    options = item.get("options") or {}
    shown = "(empty)" if key == MISSING else str(options.get(key, key))
    return {"value": shown, "expected": float(expected.get(key, 0.0)), "actual": float(actual.get(key, 0.0))}


def realized(p: np.ndarray, y: np.ndarray, test_metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What the version predicted for records that have closed since (`p`: their last written score / 100,
    `y`: 1 won, 0 lost) against its test metrics; `worse` per the module docstring."""
    found = outcome_metrics(np.asarray(p, dtype=float), np.asarray(y, dtype=int))
    test_auc, test_ece = test_metrics.get("auc"), test_metrics.get("ece")
    enough = (
        found["closed"] >= MIN_REALIZED
        and min(found["won"], found["lost"]) >= MIN_REALIZED_PER_OUTCOME
        and found["auc"] is not None
        and _finite(test_auc)
    )
    drop = None
    if found["auc"] is not None and isinstance(test_auc, (int, float)) and _finite(test_auc):
        drop = round(float(test_auc) - found["auc"], 4)
    return {
        **found,
        "testAuc": test_auc if _finite(test_auc) else None,
        "testEce": test_ece,
        "testWonRate": test_metrics.get("conversion_rate"),
        "aucDrop": drop,
        "enough": bool(enough),
        "worse": bool(enough and drop is not None and drop > AUC_MARGIN),
    }


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(float(value))


def assess(population_drift: Mapping[str, Any], realized_drift: Mapping[str, Any] | None) -> dict[str, Any]:
    """The alert of one version: `alert` when an org attribute or the score drifted significantly, or the
    model got worse; `retrain` (the auto-retrain's early trigger) when the score drifted significantly or
    the model got worse; `reasons` and a `message` suggesting to retrain."""
    reasons: list[str] = []
    drifted = list(population_drift.get("drifted") or [])
    if drifted:
        reasons.append("attributes drifted significantly: " + ", ".join(drifted))
    score = population_drift.get("score") or {}
    if score.get("level") == "significant":
        reasons.append(f"score distribution drifted significantly (PSI {score['psi']:.2f})")
    worse = bool(realized_drift and realized_drift.get("worse"))
    if worse and realized_drift is not None:
        reasons.append(
            f"the model has got worse: AUC {realized_drift['auc']:.3f} on {realized_drift['closed']} records "
            f"closed since, against {realized_drift['testAuc']:.3f} on its test records"
        )
    retrain = worse or score.get("level") == "significant"
    message = "; ".join(reasons) + "; retraining is suggested" if reasons else "no drift"
    return {"alert": bool(reasons), "retrain": retrain, "reasons": reasons, "message": message}


def thresholds() -> dict[str, Any]:
    """The documented thresholds, as reports show them."""
    return {
        "psiModerate": PSI_MODERATE,
        "psiSignificant": PSI_SIGNIFICANT,
        "aucMargin": AUC_MARGIN,
        "minRealized": MIN_REALIZED,
        "minRealizedPerOutcome": MIN_REALIZED_PER_OUTCOME,
        "minOpenRecords": MIN_OPEN_RECORDS,
    }


def summarize(per_model: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per model with an alert (the run's WARNING log)."""
    alerts = [d for d in per_model if d["assessment"]["alert"]]
    return [f"model={d['model']}@{d['version']}: {d['assessment']['message']}" for d in alerts]
