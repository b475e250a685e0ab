"""Training one version: the time-ordered split, the feature spec, the candidates' fit and choice, the
calibration, the evaluation on the test part, the ONNX export (checked against scikit-learn) and the meta.

Splits (time-ordered by close date): test = the most recent 20% of closed records (Dynamics' rule);
the older 80% is the training part, whose most recent 20% is the validation fold used to choose the
candidate and its number of boosting iterations and to fit the calibration. The chosen candidate is
then refitted on the whole training part; the test set is never used for a choice.

The candidates and their ONNX export: modeling.candidates; the choice between them (one-standard-error rule):
modeling.choice; the calibration: modeling.calibration; the metrics: modeling.evaluation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from modeling import choice, drift, insights, phrases, segments
from modeling.calibration import choose_calibration
from modeling.candidates import HGB_MAX_ITER, export_onnx, fit_candidate, make_candidate
from modeling.config import ModelConfig
from modeling.dataset import TrainingData
from modeling.dataset.split import TEST_SHARE, test_split
from modeling.errors import ExportError, InsufficientDataError
from modeling.evaluation import DEFAULT_READINESS, ece, evaluate, f1_threshold
from modeling.features import MISSING, STAGE_COLUMN, build_spec, feed_to_frame, prepare
from modeling.leakage import leakage_report
from modeling.scoring import PAST_COUNTS, PAST_RATES, Scorer, calibrate, raw_probabilities, session

log = logging.getLogger(__name__)


VALID_SHARE = 0.2
PARITY_TOLERANCE = 1e-4
INFLUENCE_SAMPLE = 3000


@dataclass
class TrainedModel:
    onnx_bytes: bytes
    meta: dict[str, Any]
    # positions in TrainingData.frame of the final test records (the most recent TEST_SHARE by close time);
    # the same records' opportunity ids are in meta["test"]["ids"]
    test_index: np.ndarray | None = None


@dataclass
class _Split:
    """The closed records in close-time order: [:n_fit] fits the candidates, [n_fit:n_train] is the
    validation fold, [:n_train] the training part and [n_train:] the test part."""

    frame: pd.DataFrame
    y: np.ndarray
    closed_at: pd.Series
    order: np.ndarray  # positions in TrainingData.frame, in close-time order
    n_fit: int
    n_val: int
    n_train: int


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
    split = _time_split(data)
    n_fit, n_train = split.n_fit, split.n_train
    spec, leak = _feature_spec(data, config, split)
    feed = prepare(split.frame, spec)
    x = feed_to_frame(feed, spec)
    y_val = split.y[n_fit:n_train]

    results, chosen, trace = _fit_and_choose(spec, x, split, candidates, seed)
    kind = choice.kind_of(chosen)
    spec = choice.candidate_spec(spec, chosen)
    feed = {f["input"]: feed[f["input"]] for f in spec["features"]}
    cal = choose_calibration(results[chosen]["p_val"], y_val)
    final = make_candidate(kind, spec, seed, max_iter=results[chosen]["iterations"] or HGB_MAX_ITER)
    final.fit(x.iloc[:n_train], split.y[:n_train])

    x_test, y_test = x.iloc[n_train:], split.y[n_train:]
    p_test_raw = final.predict_proba(x_test)[:, 1]
    onnx_bytes, sess, diff = _export_checked(final, spec, {k: v[n_train:] for k, v in feed.items()}, p_test_raw)
    p_test = calibrate(p_test_raw, cal)
    # the cut is chosen on the validation fold, so precision / recall / F1 on the test set are honest
    threshold = f1_threshold(calibrate(results[chosen]["p_val"], cal), y_val)
    metrics = evaluate(p_test, y_test, readiness, threshold=threshold)
    metrics["auc_uncalibrated"] = round(float(roc_auc_score(y_test, p_test_raw)), 4)
    metrics["ece_uncalibrated"] = round(ece(p_test_raw, y_test), 4)

    _set_baselines(spec, feed, n_train, data.stats)
    described = _describe(data, spec, cal, feed, split, sess, onnx_bytes, p_test, seed, explain)
    meta = _meta(
        data, config, split, spec=spec, kind=kind, chosen=chosen, results=results, trace=trace, cal=cal,
        metrics=metrics, diff=diff, leak=leak, described=described, p_test=p_test, seed=seed, t0=t0,
    )  # fmt: skip
    log.info(
        "model=%s candidate=%s rows=%d auc=%.4f seconds=%.1f",
        config.name,
        chosen,
        len(split.frame),
        metrics["auc"],
        meta["training_seconds"],
    )
    return TrainedModel(onnx_bytes=onnx_bytes, meta=meta, test_index=np.sort(split.order[n_train:]))


def _time_split(data: TrainingData) -> _Split:
    """The closed records in close-time order, cut into the fit part, the validation fold (the most recent
    VALID_SHARE of the training part) and the test part; each part must have both outcomes."""
    y_all = np.asarray(data.labels, dtype=int)
    closed = pd.to_datetime(pd.Series(data.closed_at), utc=True)
    order, n_train, _ = test_split(closed.to_numpy())  # the split the dataset froze its counts at
    frame = data.frame.iloc[order].reset_index(drop=True)
    y_all = y_all[order]
    closed_at = closed.iloc[order].reset_index(drop=True)
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
    return _Split(frame=frame, y=y_all, closed_at=closed_at, order=order, n_fit=n_fit, n_val=n_val, n_train=n_train)


def _feature_spec(
    data: TrainingData, config: ModelConfig, split: _Split
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The spec built on the training part without the attributes the leakage guard excludes or that were
    never filled in training (+ the stage for per-stage models), and the leakage report."""
    n_train = split.n_train
    train_frame = split.frame.iloc[:n_train]
    stage_app = {s: list(v) for s, v in config.stage_attributes.items()} if config.per_stage else None
    if stage_app:  # derived features always apply
        derived = [f["name"] for f in data.features if f.get("derived")]
        stage_app = {s: list(v) + derived for s, v in stage_app.items()}
    spec_all = build_spec(train_frame, data.features, stage_applicability=stage_app)
    leak = leakage_report(train_frame, split.y[:n_train], data.open_frame, spec_all, late=data.late)
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
    return spec, leak


def _fit_and_choose(
    spec: Mapping[str, Any], x: pd.DataFrame, split: _Split, candidates: Sequence[str] | None, seed: int
) -> tuple[dict[str, dict[str, Any]], str, dict[str, Any]]:
    """Every distinct candidate fitted on the fit part and judged on the validation fold: (their results,
    the chosen candidate's name, the choice's trace)."""
    n_fit, n_train = split.n_fit, split.n_train
    x_fit, y_fit = x.iloc[:n_fit], split.y[:n_fit]
    x_val, y_val = x.iloc[n_fit:n_train], split.y[n_fit:n_train]
    names = choice.distinct_candidates(spec, list(candidates or choice.CANDIDATES))
    results = {name: fit_candidate(name, spec, x_fit, y_fit, x_val, y_val, seed) for name in names}
    chosen, trace = choice.choose({k: r["p_val"] for k, r in results.items()}, y_val, seed)
    return results, chosen, trace


def _export_checked(
    final: Pipeline, spec: Mapping[str, Any], test_feed: Mapping[str, np.ndarray], p_test_raw: np.ndarray
) -> tuple[bytes, Any, float]:
    """The ONNX export of the final model, its onnxruntime session and the largest difference from
    scikit-learn's probabilities on the test records; ExportError above PARITY_TOLERANCE."""
    onnx_bytes = export_onnx(final, spec)
    sess = session(onnx_bytes)
    p_onnx = raw_probabilities(sess, test_feed)
    diff = float(np.max(np.abs(p_onnx - p_test_raw))) if len(p_onnx) else 0.0
    if not diff <= PARITY_TOLERANCE:
        raise ExportError(f"onnxruntime differs from scikit-learn by {diff:.2e} (> {PARITY_TOLERANCE}) on the test set")
    return onnx_bytes, sess, diff


def _set_baselines(
    spec: Mapping[str, Any], feed: Mapping[str, np.ndarray], n_train: int, stats: Mapping[str, Any]
) -> None:
    """Baselines for reasons + insights, set on the spec's features from the training part."""
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
            f["baseline"] = float(stats.get("prior_win_rate", f["baseline"]))
        elif f["name"] in PAST_COUNTS:
            f["baseline"] = 0.0


def _describe(
    data: TrainingData,
    spec: Mapping[str, Any],
    cal: Mapping[str, Any],
    feed: Mapping[str, np.ndarray],
    split: _Split,
    sess: Any,
    onnx_bytes: bytes,
    p_test: np.ndarray,
    seed: int,
    explain: bool,
) -> dict[str, Any]:
    """What the version says about its data: value win rates, the drift profile and the insights (attribute
    influence overall and per stage, top attributes; empty without `explain`)."""
    n_train = split.n_train
    train_feed = {k: v[:n_train] for k, v in feed.items()}
    rates = insights.value_win_rates(train_feed, split.y[:n_train], spec)
    # drift: the training records' bucket shares; scores out of sample (the test records, not the fitted ones)
    # and of the open records at training time, the population later runs score (modeling/drift.py)
    p_open = p_test[:0]
    if len(data.open_frame):
        p_open = calibrate(raw_probabilities(sess, prepare(data.open_frame, spec)), cal)
    profile = drift.training_profile(train_feed, spec, p_test, p_open)
    partial = {"spec": spec, "calibration": cal, "value_rates": rates, "stats": data.stats}
    infl, infl_stage, top = (
        _influence(onnx_bytes, partial, train_feed, split.frame.iloc[:n_train], seed) if explain else ({}, {}, [])
    )
    table = insights.influence_table(infl, spec)
    per_stage = {s: insights.influence_table(v, spec) for s, v in infl_stage.items()}
    return {
        "insights": {
            "top_fields": insights.top_fields(table),
            "influence": table,
            "per_stage": per_stage,
            "value_rates": rates,
            "top_attributes": top,
        },
        "value_rates": rates,
        "drift": profile,
    }


def _meta(
    data: TrainingData,
    config: ModelConfig,
    split: _Split,
    *,
    spec: dict[str, Any],
    kind: str,
    chosen: str,
    results: Mapping[str, Mapping[str, Any]],
    trace: Mapping[str, Any],
    cal: dict[str, Any],
    metrics: dict[str, Any],
    diff: float,
    leak: dict[str, dict[str, Any]],
    described: Mapping[str, Any],
    p_test: np.ndarray,
    seed: int,
    t0: float,
) -> dict[str, Any]:
    """The version's meta (docs/CONTRACTS.md), `training_seconds` counted from `t0`."""
    closed_at, n_train, n_test = split.closed_at, split.n_train, len(split.frame) - split.n_train
    return {
        "format": 1,
        "model": config.name,
        "algorithm": kind,
        "candidate": chosen,
        "candidates": {
            k: {**trace[k], "iterations": r["iterations"], "seconds": r["seconds"]} for k, r in results.items()
        },
        "choice": {"rule": "one standard error", "bootstrap": choice.BOOTSTRAP, "validation_rows": int(split.n_val)},
        "spec": spec,
        "calibration": cal,
        "metrics": metrics,
        "readiness": metrics["readiness"],
        "onnx_parity_max_diff": diff,
        "leakage": leak,
        "excluded_attributes": [k for k, v in leak.items() if v["excluded"]],
        "insights": described["insights"],
        "value_rates": described["value_rates"],
        "grade_ranges": list(config.grade_ranges),
        "stats": data.stats,
        "counts": dict(
            data.counts, training_rows=int(n_train), test_rows=int(n_test), validation_rows=int(split.n_val)
        ),
        "data_range": {
            "first_close": str(closed_at.iloc[0]),
            "last_close": str(closed_at.iloc[-1]),
            "test_from": str(closed_at.iloc[n_train]),
            "period": data.period,
        },
        "test": _test_part(split, p_test),
        "drift": described["drift"],
        "per_stage": config.per_stage,
        "stages": list(data.stages),
        "seed": seed,
        "training_seconds": round(time.perf_counter() - t0, 2),
    }


def _test_part(split: _Split, p_test: np.ndarray) -> dict[str, Any]:
    """meta["test"]: which records the test part holds, and what accuracy by segment needs of them."""
    frame, closed_at, n_train = split.frame, split.closed_at, split.n_train
    return {
        "ids": list(dict.fromkeys(str(i) for i in frame["opportunityid"].iloc[n_train:])),
        "rows": int(len(frame) - n_train),
        "from": str(closed_at.iloc[n_train]),
        "to": str(closed_at.iloc[-1]),
        "share": TEST_SHARE,
        **segments.kept_records(
            frame["opportunityid"].iloc[n_train:].astype(str).tolist(),
            p_test,
            split.y[n_train:],
            _stages(frame, n_train),
        ),
    }


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
