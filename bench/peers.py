"""The peers the product is compared with, each fitted on exactly the product's training records and
columns (the ones its leakage guard kept) and scored on exactly its test records.

- `PlainLogisticRegression`: scikit-learn LogisticRegression on one-hot categoricals (min_frequency=5,
  unknown categories ignored) plus median-imputed, standard-scaled numerics. No tuning.
- `PlainHistGradientBoosting`: HistGradientBoostingClassifier with native categorical support
  (ordinal-encoded categoricals, unseen categories sent to missing), default hyperparameters.
- `OdooNaiveBayes`: the open-source CRM approach (Odoo's predictive lead scoring, re-implemented from
  its description in ../shared/reference/dynamics-scoring-rules.md §3): naive Bayes over per-field
  won/lost frequencies, +0.1 on both counts of every (field, value) seen, blanks skipped, values never
  seen in training skipped. Odoo only counts discrete fields; so that it sees the same columns as the
  others, numbers are cut into the training deciles (our one addition). Odoo's per-team split and stage
  encoding do not apply: the data sets have no sales team, and closed records carry their final stage.

Each peer's decision threshold is its own F1-optimal cut on out-of-fold predictions over the training
records (5-fold, stratified), never on the test records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from bench.common import f1_optimal_threshold

MISSING = "__missing__"
SMOOTHING = 0.1
NUMERIC_BINS = 10


class Peer(Protocol):
    name: str
    stochastic: bool

    def fit(self, X: pd.DataFrame, y: np.ndarray, seed: int = 0) -> Peer: ...

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray: ...


def split_columns(X: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(categorical, numeric) column names: numbers are numeric (bools count as categories)."""
    cats, nums = [], []
    for col in X.columns:
        dtype = X[col].dtype
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            cats.append(str(col))
        else:
            nums.append(str(col))
    return cats, nums


def categorical_frame(X: pd.DataFrame, cats: Sequence[str], fill: str | None) -> pd.DataFrame:
    """Categoricals as plain object strings; missing -> `fill` (or NaN when fill is None)."""
    out = pd.DataFrame(index=X.index)
    for col in cats:
        s = X[col].astype(object)
        isnull = s.isna()
        s = s.map(str).where(~isnull, fill if fill is not None else np.nan)
        out[col] = s.astype(object)
    return out


def numeric_frame(X: pd.DataFrame, nums: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.to_numeric(X[c], errors="coerce").astype(float) for c in nums}, index=X.index)


class _SklearnPeer:
    name = "sklearn"
    stochastic = False

    def __init__(self) -> None:
        self.cats: list[str] = []
        self.nums: list[str] = []
        self.model: Any = None

    def _frame(self, X: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError

    def _build(self, seed: int) -> Any:
        raise NotImplementedError

    def fit(self, X: pd.DataFrame, y: np.ndarray, seed: int = 0) -> _SklearnPeer:
        self.cats, self.nums = split_columns(X)
        if not self.cats and not self.nums:
            raise ValueError("no feature columns to fit on")
        self.model = self._build(seed)
        self.model.fit(self._frame(X), np.asarray(y).astype(int))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict_proba(self._frame(X))[:, 1], dtype=float)


class PlainLogisticRegression(_SklearnPeer):
    name = "Plain LogisticRegression"
    stochastic = False

    def _frame(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([categorical_frame(X, self.cats, MISSING), numeric_frame(X, self.nums)], axis=1)

    def _build(self, seed: int) -> Any:
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline, make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        parts: list[tuple[str, Any, list[str]]] = []
        if self.cats:
            parts.append(("cat", OneHotEncoder(handle_unknown="ignore", min_frequency=5), self.cats))
        if self.nums:
            numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
            parts.append(("num", numeric, self.nums))
        return Pipeline(
            [("prep", ColumnTransformer(parts)), ("lr", LogisticRegression(max_iter=2000, random_state=seed))]
        )


class PlainHistGradientBoosting(_SklearnPeer):
    name = "Plain HistGradientBoosting"
    stochastic = True  # early stopping on a random validation split above 10,000 records

    def _frame(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([categorical_frame(X, self.cats, None), numeric_frame(X, self.nums)], axis=1)

    def _build(self, seed: int) -> Any:
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OrdinalEncoder

        parts: list[tuple[str, Any, list[str]]] = []
        if self.cats:
            # max_categories keeps each feature within HGB's 255-bin limit (rare values grouped).
            enc = OrdinalEncoder(
                handle_unknown="use_encoded_value",
                unknown_value=np.nan,
                encoded_missing_value=np.nan,
                max_categories=250,
            )
            parts.append(("cat", enc, self.cats))
        if self.nums:
            parts.append(("num", "passthrough", self.nums))
        hgb = HistGradientBoostingClassifier(
            categorical_features=list(range(len(self.cats))) or None, random_state=seed
        )
        return Pipeline([("prep", ColumnTransformer(parts)), ("hgb", hgb)])


@dataclass
class OdooNaiveBayes:
    """p(won) = S_won / (S_won + S_lost), S_c = P(c) * prod over fields of count_c(v) / total_c(field)."""

    name: str = "Odoo-style naive Bayes"
    stochastic: bool = False
    smoothing: float = SMOOTHING
    prior_won: float = 0.5
    edges: dict[str, np.ndarray] = field(default_factory=dict)
    # field -> value -> (won count, lost count), smoothed; field -> (won total, lost total)
    counts: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    totals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def _discrete(self, X: pd.DataFrame) -> pd.DataFrame:
        cats, nums = split_columns(X)
        out = categorical_frame(X, cats, None)
        for col in nums:
            values = pd.to_numeric(X[col], errors="coerce").astype(float).to_numpy()
            edges = self.edges.get(col)
            if edges is None:
                continue
            codes = np.searchsorted(edges, values, side="right")
            labels = np.array([f"bin{c}" for c in codes], dtype=object)
            labels[~np.isfinite(values)] = np.nan
            out[col] = labels
        return out[[c for c in X.columns if c in out.columns]]

    def fit(self, X: pd.DataFrame, y: np.ndarray, seed: int = 0) -> OdooNaiveBayes:
        ya = np.asarray(y).astype(int)
        won, lost = int(ya.sum()), int(len(ya) - ya.sum())
        if won == 0 or lost == 0:
            raise ValueError("naive Bayes needs at least one won and one lost record")
        self.prior_won = won / len(ya)
        _, nums = split_columns(X)
        self.edges = {}
        for col in nums:
            values = pd.to_numeric(X[col], errors="coerce").astype(float).to_numpy()
            values = values[np.isfinite(values)]
            if len(values):
                qs = np.quantile(values, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1])
                self.edges[col] = np.unique(qs)
        D = self._discrete(X)
        self.counts, self.totals = {}, {}
        for col in D.columns:
            s = D[col]
            known = s.notna().to_numpy()
            if not known.any():
                continue
            frame = pd.DataFrame({"v": s[known].to_numpy(), "y": ya[known]})
            grouped = frame.groupby("v")["y"].agg(["sum", "count"])
            table = {
                str(v): (float(r["sum"]) + self.smoothing, float(r["count"] - r["sum"]) + self.smoothing)
                for v, r in grouped.iterrows()
            }
            self.counts[col] = table
            self.totals[col] = (sum(w for w, _ in table.values()), sum(lo for _, lo in table.values()))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        D = self._discrete(X)
        log_odds = np.full(len(D), np.log(self.prior_won) - np.log1p(-self.prior_won))
        for col, table in self.counts.items():
            if col not in D.columns:
                continue
            won_total, lost_total = self.totals[col]
            lw = {v: np.log(w / won_total) - np.log(lo / lost_total) for v, (w, lo) in table.items()}
            # blanks and values never seen in training map to NaN: skipped (0 added to the log-odds)
            contrib = D[col].map(lw).astype(float).fillna(0.0)
            log_odds += contrib.to_numpy(dtype=float)
        return 1.0 / (1.0 + np.exp(-np.clip(log_odds, -700, 700)))


def default_peers() -> list[Any]:
    return [PlainLogisticRegression(), PlainHistGradientBoosting(), OdooNaiveBayes()]


def oof_threshold(make: Any, X: pd.DataFrame, y: np.ndarray, seed: int, folds: int = 5) -> float:
    """F1-optimal threshold on out-of-fold predictions over the training records only."""
    from sklearn.model_selection import StratifiedKFold

    ya = np.asarray(y).astype(int)
    folds = max(2, min(folds, int(ya.sum()), int(len(ya) - ya.sum())))
    oof = np.zeros(len(ya), dtype=float)
    for train_idx, val_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, ya):
        peer = make().fit(X.iloc[train_idx], ya[train_idx], seed=seed)
        oof[val_idx] = peer.predict_proba(X.iloc[val_idx])
    return f1_optimal_threshold(ya, oof)
