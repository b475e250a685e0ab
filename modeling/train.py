"""Training, model choice, calibration, evaluation and ONNX export.

Splits (time-ordered by close date): test = the most recent 20% of closed records (Dynamics' rule);
the older 80% is the training part, whose most recent 20% is the validation fold used to choose the
candidate and its number of boosting iterations and to fit the calibration. The chosen candidate is
then refitted on the whole training part; the test set is never used for a choice.

Candidates (modeling.choice, which also picks one by the one-standard-error rule): regularised
LogisticRegression on one-hot + scaled numbers, and HistGradientBoosting on one-hot features
(categorical_features=None: HGB's native categories convert to wrong ONNX, stack-pitfalls Q3.2), each on the
attributes alone and with the derived features. Calibration (choose_calibration): none, Platt scaling on the
logit or a blend of Platt and isotonic, fitted on the validation fold (strictly monotone, so it keeps the
ranking and AUC; a score of 70 means about 70% of such deals were won).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from modeling import choice, drift, insights, phrases, segments
from modeling.config import ModelConfig
from modeling.dataset import TrainingData
from modeling.dataset.split import TEST_SHARE, test_split
from modeling.errors import ExportError, InsufficientDataError
from modeling.features import (
    MISSING,
    STAGE_COLUMN,
    build_spec,
    feed_to_frame,
    number_inputs,
    prepare,
)
from modeling.leakage import leakage_report
from modeling.scoring import PAST_COUNTS, PAST_RATES, Scorer, calibrate, raw_probabilities, session

log = logging.getLogger(__name__)


VALID_SHARE = 0.2
PARITY_TOLERANCE = 1e-4
DEFAULT_READINESS = (0.75, 0.65)  # AUC >= 0.75 Ready, >= 0.65 OK, else Not ready
HGB_PARAMS = {"learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 100, "l2_regularization": 1.0}
HGB_MAX_ITER = 400
LR_C = 0.5
INFLUENCE_SAMPLE = 3000
# Only strictly monotone maps, so calibration keeps the ranking the candidate was chosen on: pure isotonic
# (still read by modeling.scoring for older versions) ties every deal that falls on one of its flat steps or
# beyond its fitted range, which drift makes common (UCI Bank Marketing: test AUC 0.692 with an isotonic map
# chosen against 0.783 with Platt on the same candidate); blend keeps Platt's slope under its steps.
CALIBRATION_METHODS = ("none", "platt", "blend")
CALIBRATION_RECENT = 0.5  # alternative fit: only the most recent half of the data given
ONNX_TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


@dataclass
class TrainedModel:
    onnx_bytes: bytes
    meta: dict[str, Any]
    # positions in TrainingData.frame of the final test records (the most recent TEST_SHARE by close time);
    # the same records' opportunity ids are in meta["test"]["ids"]
    test_index: np.ndarray | None = None


def _preprocessor(spec: Mapping[str, Any], scale: bool) -> ColumnTransformer:
    cats = [f for f in spec["features"] if f["kind"] == "category"]
    nums = number_inputs(spec)
    parts: list[tuple[str, Any, list[str]]] = []
    if cats:
        parts.append(
            (
                "cat",
                OneHotEncoder(
                    categories=[list(f["categories"]) for f in cats],
                    handle_unknown="ignore",
                    sparse_output=False,
                    dtype=np.float32,
                ),
                [f["input"] for f in cats],
            )
        )
    if nums:
        num_step: Any = (
            Pipeline(
                [
                    ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                    ("scale", StandardScaler()),
                ]
            )
            if scale
            else "passthrough"
        )
        parts.append(("num", num_step, nums))
    return ColumnTransformer(parts, sparse_threshold=0.0)


def make_candidate(kind: str, spec: Mapping[str, Any], seed: int, max_iter: int = HGB_MAX_ITER) -> Pipeline:
    if kind == "logistic_regression":
        return Pipeline(
            [("prep", _preprocessor(spec, scale=True)), ("model", LogisticRegression(C=LR_C, max_iter=2000))]
        )
    return Pipeline(
        [
            ("prep", _preprocessor(spec, scale=False)),
            (
                "model",
                HistGradientBoostingClassifier(
                    max_iter=max_iter, early_stopping=False, random_state=seed, **HGB_PARAMS
                ),
            ),
        ]
    )


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


def _fit_candidate(
    name: str,
    spec: Mapping[str, Any],
    x_fit: pd.DataFrame,
    y_fit: np.ndarray,
    x_val: pd.DataFrame,
    y_val: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    """One candidate fitted on the older part of the training part: its validation-fold probabilities, its
    boosting iterations (chosen on the validation AUC) and its fit time."""
    t = time.perf_counter()
    kind, cspec = choice.kind_of(name), choice.candidate_spec(spec, name)
    model = make_candidate(kind, cspec, seed)
    model.fit(x_fit, y_fit)
    iters = None
    if kind == "hist_gradient_boosting":
        iters, _ = _best_iterations(model, x_val, y_val)
        model = make_candidate(kind, cspec, seed, max_iter=iters)
        model.fit(x_fit, y_fit)
    p_val = model.predict_proba(x_val)[:, 1]
    seconds = round(time.perf_counter() - t, 2)
    log.info("candidate=%s validation_auc=%.4f seconds=%.1f", name, roc_auc_score(y_val, p_val), seconds)
    return {"iterations": iters, "p_val": p_val, "seconds": seconds}


def _best_iterations(model: Pipeline, x_val: pd.DataFrame, y_val: np.ndarray) -> tuple[int, float]:
    """Number of boosting iterations with the best validation AUC (checked every 10 iterations)."""
    hgb = model.named_steps["model"]
    xt = model.named_steps["prep"].transform(x_val)
    best_auc, best_it = -1.0, hgb.n_iter_
    for i, proba in enumerate(hgb.staged_predict_proba(xt), start=1):
        if i % 10 and i != hgb.n_iter_:
            continue
        auc = float(roc_auc_score(y_val, proba[:, 1]))
        if auc > best_auc + 1e-4:
            best_auc, best_it = auc, i
    return best_it, best_auc


def export_onnx(model: Pipeline, spec: Mapping[str, Any]) -> bytes:
    inputs: list[tuple[str, Any]] = []
    for f in spec["features"]:
        inputs.append(
            (
                f["input"],
                StringTensorType([None, 1]) if f["kind"] == "category" else FloatTensorType([None, 1]),
            )
        )
    onx = convert_sklearn(
        model, initial_types=inputs, options={id(model): {"zipmap": False}}, target_opset=ONNX_TARGET_OPSET
    )
    return bytes(onx.SerializeToString())


def train_model(
    data: TrainingData,
    config: ModelConfig,
    *,
    seed: int = 0,
    readiness: Sequence[float] = DEFAULT_READINESS,
    candidates: Sequence[str] | None = None,
    threads: int | None = None,
    explain: bool = True,
) -> TrainedModel:
    """Trains, evaluates and exports one version. Raises ExportError when ONNX parity fails.

    `explain=False` leaves out the attribute influence (meta["insights"] influence tables and top attributes
    empty): a third of a small training, for models nobody reads the insights of (a backtest's).

    `threads` caps the OpenMP / BLAS threads of the fits (None: the libraries' default, every core).
    HistGradientBoosting's OpenMP threads spin while waiting, so several trainings (or a training and a
    scoring run) sharing the cores slow each other down several-fold; the app passes TRAINING_THREADS.
    """
    with threadpool_limits(limits=threads):
        return _train_model(data, config, seed=seed, readiness=readiness, candidates=candidates, explain=explain)


def _train_model(
    data: TrainingData,
    config: ModelConfig,
    *,
    seed: int,
    readiness: Sequence[float],
    candidates: Sequence[str] | None,
    explain: bool = True,
) -> TrainedModel:
    t0 = time.perf_counter()
    y_all = np.asarray(data.labels, dtype=int)
    closed = pd.to_datetime(pd.Series(data.closed_at), utc=True)
    order, n_train, _ = test_split(closed.to_numpy())  # the split the dataset froze its counts at
    frame = data.frame.iloc[order].reset_index(drop=True)
    y_all = y_all[order]
    closed_at = closed.iloc[order].reset_index(drop=True)
    n = len(frame)
    n_test = n - n_train
    n_val = max(int(np.ceil(n_train * VALID_SHARE)), 1)
    n_fit = n_train - n_val
    for part, yy in (
        ("training", y_all[:n_fit]),
        ("validation", y_all[n_fit:n_train]),
        ("test", y_all[n_train:]),
    ):
        if len(np.unique(yy)) < 2:
            raise InsufficientDataError(
                f"the {part} part of the time-ordered split has only one outcome",
                found={part + "Won": int(yy.sum()), part + "Lost": int((1 - yy).sum())},
                needed={part + "Won": 1, part + "Lost": 1},
            )
    train_frame = frame.iloc[:n_train]
    stage_app = {s: list(v) for s, v in config.stage_attributes.items()} if config.per_stage else None
    if stage_app:  # derived features always apply
        derived = [f["name"] for f in data.features if f.get("derived")]
        stage_app = {s: list(v) + derived for s, v in stage_app.items()}
    spec_all = build_spec(train_frame, data.features, stage_applicability=stage_app)
    leak = leakage_report(train_frame, y_all[:n_train], data.open_frame, spec_all, late=data.late)
    spec = dict(spec_all)
    for entry in leak.values():  # an attribute never filled in training cannot help (and breaks HGB)
        if entry["fill_closed"] == 0 and not entry["excluded"]:
            entry["excluded"] = False
            entry["unused"] = "never filled in the training records"
    spec["features"] = [
        f for f in spec_all["features"] if not leak[f["name"]]["excluded"] and not leak[f["name"]].get("unused")
    ]
    if not spec["features"]:
        raise InsufficientDataError(
            "every attribute was excluded by the leakage guard",
            found={"attributes": 0},
            needed={"attributes": 1},
        )
    if config.per_stage:
        spec["features"].append(
            {
                "name": STAGE_COLUMN,
                "input": "stage",
                "kind": "category",
                "label": "Stage",
                "source": STAGE_COLUMN,
                "derived": True,
                "options": None,
                "presence": False,
                "categories": sorted(str(s) for s in data.stages) + ["__other__", MISSING],
            }
        )
    feed = prepare(frame, spec)
    x = feed_to_frame(feed, spec)
    x_fit, y_fit = x.iloc[:n_fit], y_all[:n_fit]
    x_val, y_val = x.iloc[n_fit:n_train], y_all[n_fit:n_train]

    names = choice.distinct_candidates(spec, list(candidates or choice.CANDIDATES))
    results = {name: _fit_candidate(name, spec, x_fit, y_fit, x_val, y_val, seed) for name in names}
    chosen, trace = choice.choose({k: r["p_val"] for k, r in results.items()}, y_val, seed)
    kind = choice.kind_of(chosen)
    spec = choice.candidate_spec(spec, chosen)
    feed = {f["input"]: feed[f["input"]] for f in spec["features"]}
    cal = choose_calibration(results[chosen]["p_val"], y_val)
    final = make_candidate(kind, spec, seed, max_iter=results[chosen]["iterations"] or HGB_MAX_ITER)
    final.fit(x.iloc[:n_train], y_all[:n_train])

    x_test, y_test = x.iloc[n_train:], y_all[n_train:]
    p_test_raw = final.predict_proba(x_test)[:, 1]
    onnx_bytes = export_onnx(final, spec)
    sess = session(onnx_bytes)
    test_feed = {k: v[n_train:] for k, v in feed.items()}
    p_onnx = raw_probabilities(sess, test_feed)
    diff = float(np.max(np.abs(p_onnx - p_test_raw))) if len(p_onnx) else 0.0
    if not diff <= PARITY_TOLERANCE:
        raise ExportError(f"onnxruntime differs from scikit-learn by {diff:.2e} (> {PARITY_TOLERANCE}) on the test set")
    p_test = calibrate(p_test_raw, cal)
    # the cut is chosen on the validation fold, so precision / recall / F1 on the test set are honest
    threshold = f1_threshold(calibrate(results[chosen]["p_val"], cal), y_val)
    metrics = evaluate(p_test, y_test, readiness, threshold=threshold)
    metrics["auc_uncalibrated"] = round(float(roc_auc_score(y_test, p_test_raw)), 4)
    metrics["ece_uncalibrated"] = round(ece(p_test_raw, y_test), 4)

    # baselines for reasons + insights
    for f in spec["features"]:
        v = feed[f["input"]][:n_train].ravel()
        if f["kind"] == "category":
            vals = pd.Series(v[v != MISSING]) if (v != MISSING).any() else pd.Series(v)
            f["baseline"] = str(vals.mode().iloc[0]) if len(vals) else MISSING
        else:
            finite = v[~np.isnan(v)]
            f["baseline"] = float(np.median(finite)) if len(finite) else 0.0
            f["bins"] = insights.number_bins(v.astype(float), phrases.unit_of(f))
        # past win rates are measured against knowing nothing (the training win rate, no deal closed): a
        # record without history is at its baseline (no reason), one with history says what it adds
        if f["name"] in PAST_RATES:
            f["baseline"] = float(data.stats.get("prior_win_rate", f["baseline"]))
        elif f["name"] in PAST_COUNTS:
            f["baseline"] = 0.0
    train_feed = {k: v[:n_train] for k, v in feed.items()}
    rates = insights.value_win_rates(train_feed, y_all[:n_train], spec)
    # drift: the training records' bucket shares; scores out of sample (the test records, not the fitted ones)
    # and of the open records at training time, the population later runs score (modeling/drift.py)
    p_open = p_test[:0]
    if len(data.open_frame):
        p_open = calibrate(raw_probabilities(sess, prepare(data.open_frame, spec)), cal)
    profile = drift.training_profile(train_feed, spec, p_test, p_open)
    partial = {"spec": spec, "calibration": cal, "value_rates": rates, "stats": data.stats}
    infl, infl_stage, top = (
        _influence(onnx_bytes, partial, train_feed, frame.iloc[:n_train], seed) if explain else ({}, {}, [])
    )
    table = insights.influence_table(infl, spec)
    per_stage = {s: insights.influence_table(v, spec) for s, v in infl_stage.items()}
    meta: dict[str, Any] = {
        "format": 1,
        "model": config.name,
        "algorithm": kind,
        "candidate": chosen,
        "candidates": {
            k: {**trace[k], "iterations": r["iterations"], "seconds": r["seconds"]} for k, r in results.items()
        },
        "choice": {"rule": "one standard error", "bootstrap": choice.BOOTSTRAP, "validation_rows": int(n_val)},
        "spec": spec,
        "calibration": cal,
        "metrics": metrics,
        "readiness": metrics["readiness"],
        "onnx_parity_max_diff": diff,
        "leakage": leak,
        "excluded_attributes": [k for k, v in leak.items() if v["excluded"]],
        "insights": {
            "top_fields": insights.top_fields(table),
            "influence": table,
            "per_stage": per_stage,
            "value_rates": rates,
            "top_attributes": top,
        },
        "value_rates": rates,
        "grade_ranges": list(config.grade_ranges),
        "stats": data.stats,
        "counts": dict(data.counts, training_rows=int(n_train), test_rows=int(n_test), validation_rows=int(n_val)),
        "data_range": {
            "first_close": str(closed_at.iloc[0]),
            "last_close": str(closed_at.iloc[-1]),
            "test_from": str(closed_at.iloc[n_train]),
            "period": data.period,
        },
        "test": {
            "ids": list(dict.fromkeys(str(i) for i in frame["opportunityid"].iloc[n_train:])),
            "rows": int(n_test),
            "from": str(closed_at.iloc[n_train]),
            "to": str(closed_at.iloc[-1]),
            "share": TEST_SHARE,
            **segments.kept_records(
                frame["opportunityid"].iloc[n_train:].astype(str).tolist(), p_test, y_test, _stages(frame, n_train)
            ),
        },
        "drift": profile,
        "per_stage": config.per_stage,
        "stages": list(data.stages),
        "seed": seed,
        "training_seconds": round(time.perf_counter() - t0, 2),
    }
    log.info(
        "model=%s candidate=%s rows=%d auc=%.4f seconds=%.1f",
        config.name,
        chosen,
        n,
        metrics["auc"],
        meta["training_seconds"],
    )
    return TrainedModel(onnx_bytes=onnx_bytes, meta=meta, test_index=np.sort(order[n_train:]))


def _stages(frame: pd.DataFrame, start: int) -> list[Any]:
    """The stage of each row from `start` on when it was observed (None where unknown)."""
    if STAGE_COLUMN not in frame.columns:
        return [None] * (len(frame) - start)
    return frame[STAGE_COLUMN].iloc[start:].tolist()


def _influence(
    onnx_bytes: bytes,
    meta: Mapping[str, Any],
    feed: Mapping[str, np.ndarray],
    frame: pd.DataFrame,
    seed: int,
) -> tuple[dict[str, float], dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Mean |contribution| in points of each fact over sampled training rows (overall and per stage), and
    the facts that impact scores most, with a sentence each (insights.top_attributes)."""
    n = len(next(iter(feed.values())))
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(n, INFLUENCE_SAMPLE), replace=False))
    sub = {k: v[idx] for k, v in feed.items()}
    scorer = Scorer(onnx_bytes, meta)
    _, points, _, _ = scorer.explain(sub)
    names = [f["name"] for f in scorer.primary]
    size = np.abs(points)
    overall = {nm: float(size[:, g].mean()) for g, nm in enumerate(names)}
    per_stage: dict[str, dict[str, float]] = {}
    if STAGE_COLUMN in frame.columns:
        stages = frame[STAGE_COLUMN].to_numpy(dtype=object)[idx]
        for s in pd.unique(stages):
            if s is None or (isinstance(s, float) and np.isnan(s)):
                continue
            m = stages == s
            per_stage[str(s)] = {nm: float(size[m, g].mean()) for g, nm in enumerate(names)}
    keys = [insights.value_keys(sub[f["input"]], f) for f in scorer.primary]
    return overall, per_stage, insights.top_attributes(points, keys, scorer.primary)
