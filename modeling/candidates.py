"""The candidate pipelines (modeling.choice names them and picks one): regularised LogisticRegression on
one-hot + scaled numbers, and HistGradientBoosting on one-hot features (categorical_features=None: HGB's
native categories convert to wrong ONNX, stack-pitfalls Q3.2); their fit on the validation fold (boosting
iterations chosen on its AUC) and their ONNX export."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modeling import choice
from modeling.features import number_inputs

log = logging.getLogger(__name__)

HGB_PARAMS = {"learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 100, "l2_regularization": 1.0}
HGB_MAX_ITER = 400
LR_C = 0.5
ONNX_TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


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


def fit_candidate(
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
