"""Which candidate a version uses, chosen on the validation fold only (the most recent 20% of the training
part, time-ordered like the test: modeling.train).

Candidates, simplest first: logistic regression on the model's attributes alone (what a plain scikit-learn
user would fit), logistic regression with the derived features too (past win rates, similar deals, time in
stage...; not the past-deal counts: candidate_spec), then HistGradientBoosting on the attributes alone and
with the derived features. The plain ones are there because a drifting org can make the derived features
(which follow past outcomes) or the trees (which cannot extrapolate) worse than a plain model on the coming
deals.

The one-standard-error rule (Breiman et al., "Classification and Regression Trees", 1984; Hastie,
Tibshirani & Friedman, "The Elements of Statistical Learning", section 7.10): the chosen candidate is the
simplest one whose validation AUC is within one standard error of the best candidate's. The noise is
measured as the standard error of the paired AUC difference (best minus this candidate) over BOOTSTRAP
resamples of the validation fold, with a fixed seed, so a more complex candidate wins only when it leads by
more than the validation fold can tell apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from modeling.features import STAGE_COLUMN
from modeling.scoring import PAST_COUNTS

ATTRIBUTES = "attributes"  # the candidate-name suffix of a candidate without derived features
CANDIDATES = (
    "logistic_regression:attributes",
    "logistic_regression",
    "hist_gradient_boosting:attributes",
    "hist_gradient_boosting",
)
BOOTSTRAP = 200


def kind_of(candidate: str) -> str:
    """The learner of a candidate name ("hist_gradient_boosting:attributes" -> "hist_gradient_boosting")."""
    return candidate.split(":", 1)[0]


def candidate_spec(spec: Mapping[str, Any], candidate: str) -> dict[str, Any]:
    """The feature spec a candidate fits on: every feature, or (":attributes") those not derived by the
    product; a per-stage model's stage column stays in both.

    Logistic regression never gets the past-deal counts (PAST_COUNTS: how many deals the owner, the account
    or similar deals closed before). They are there so that trees can tell a rate measured on two deals from
    one measured on two hundred; a linear model cannot weigh one feature by another, so it can only read a
    count as a trend of its own, and an owner's count grows with time: a clock, which the scored deals
    (counts at the end of training and beyond) all read as "late". The rates it gets are smoothed already."""
    features = spec["features"]
    if candidate.endswith(":" + ATTRIBUTES):
        features = [f for f in features if not f.get("derived") or f["name"] == STAGE_COLUMN]
    if kind_of(candidate) == "logistic_regression":
        features = [f for f in features if f["name"] not in PAST_COUNTS]
    return {**spec, "features": list(features)}


def distinct_candidates(spec: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """`names` without the ones whose features repeat a simpler candidate's of the same learner (no derived
    feature kept: the attributes-only candidate is the same model)."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    out = []
    for name in names:
        key = (kind_of(name), tuple(f["input"] for f in candidate_spec(spec, name)["features"]))
        if key not in seen and key[1]:
            seen.add(key)
            out.append(name)
    return out


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else 0.5


def paired_se(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, seed: int = 0, rounds: int = BOOTSTRAP) -> float:
    """Bootstrap standard error of AUC(a) - AUC(b) on the same records (resampled together)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    diffs = []
    for _ in range(rounds):
        i = rng.integers(0, n, n)
        if len(np.unique(y[i])) == 2:
            diffs.append(_auc(y[i], p_a[i]) - _auc(y[i], p_b[i]))
    return float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0


def choose(
    predictions: Mapping[str, np.ndarray], y_val: np.ndarray, seed: int = 0
) -> tuple[str, dict[str, dict[str, float]]]:
    """(chosen candidate, per candidate its validation AUC, its lag behind the best and that lag's standard
    error). `predictions` maps candidate names, simplest first, to their validation-fold probabilities."""
    y = np.asarray(y_val, dtype=int)
    aucs = {name: _auc(y, p) for name, p in predictions.items()}
    best = max(aucs, key=lambda k: aucs[k])
    trace: dict[str, dict[str, float]] = {}
    chosen = None
    for name, p in predictions.items():
        lag = aucs[best] - aucs[name]
        se = 0.0 if name == best else paired_se(y, predictions[best], p, seed)
        trace[name] = {"validation_auc": round(aucs[name], 4), "behind_best": round(lag, 4), "se": round(se, 4)}
        if chosen is None and lag <= se:
            chosen = name
    return chosen or best, trace
