"""Accuracy by segment (docs/MODELING.md "Accuracy per segment"): AUC, expected calibration error, won rate
and mean score of a version's test records grouped by a value (owner, stage, region, any column).

A segment with fewer than MIN_SEGMENT_CLOSED closed records, or with a single outcome (AUC undefined), is
`small`: shown, not hidden, since its numbers are too noisy to act on.

At training the version keeps what this needs of its test records in `meta["test"]` (`kept_records`):
the calibrated probability, outcome and stage of each test row (and which id it belongs to when a
per-stage model has several rows per deal)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from modeling.evaluation import ece

MIN_SEGMENT_CLOSED = 30
PROBABILITY_DIGITS = 4


def auc_or_none(p: np.ndarray, y: np.ndarray) -> float | None:
    """ROC AUC, None when there are not both outcomes."""
    y = np.asarray(y, dtype=int)
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, np.asarray(p, dtype=float)))


def outcome_metrics(p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """closed, won, lost, wonRate, meanScore (0-100), auc, ece of predictions `p` against outcomes `y`."""
    y = np.asarray(y, dtype=int)
    n, won = len(y), int(y.sum())
    auc = auc_or_none(p, y)
    return {
        "closed": n,
        "won": won,
        "lost": n - won,
        "wonRate": round(won / n, 4) if n else None,
        "meanScore": round(float(np.mean(p)) * 100, 1) if n else None,
        "auc": None if auc is None else round(auc, 4),
        "ece": round(ece(np.asarray(p, dtype=float), y), 4) if n else None,
    }


def by_segment(
    p: np.ndarray, y: np.ndarray, keys: Sequence[Any], labels: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One row per distinct key (missing keys together as "(empty)"): {value, label, ...outcome_metrics,
    small}, largest segments first."""
    keys_s = pd.Series(list(keys), dtype=object).map(lambda v: None if _missing(v) else str(v))
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=int)
    out = []
    for key, idx in keys_s.groupby(keys_s.fillna("\0"), sort=False).indices.items():
        value = None if key == "\0" else str(key)
        found = outcome_metrics(p[idx], y[idx])
        out.append(
            {
                "value": value,
                "label": "(empty)" if value is None else str((labels or {}).get(value, value)),
                **found,
                "small": found["closed"] < MIN_SEGMENT_CLOSED or found["auc"] is None,
            }
        )
    return sorted(out, key=lambda r: (-r["closed"], r["label"]))


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and not np.isfinite(v)) or v == ""


def kept_records(ids: Sequence[str], p: np.ndarray, y: np.ndarray, stages: Sequence[Any]) -> dict[str, Any]:
    """What `meta["test"]` keeps per test row: `p` (calibrated, 4 digits), `won` (1/0), `stages` (the stage
    when observed, None unknown) and, when rows outnumber ids (per-stage models), `row` (index into ids)."""
    unique = list(dict.fromkeys(str(i) for i in ids))
    out: dict[str, Any] = {
        "p": [round(float(v), PROBABILITY_DIGITS) for v in p],
        "won": [int(v) for v in y],
        "stages": [None if _missing(s) else str(s) for s in stages],
    }
    if len(unique) != len(ids):
        position = {v: i for i, v in enumerate(unique)}
        out["row"] = [position[str(i)] for i in ids]
    return out


def kept_rows(test: Mapping[str, Any]) -> pd.DataFrame | None:
    """The stored test rows as a frame (opportunityid, p, won, stage); None for versions trained before
    they were stored."""
    if not test.get("p") or not test.get("ids"):
        return None
    ids = list(test["ids"])
    rows = test.get("row") or list(range(len(test["p"])))
    return pd.DataFrame(
        {
            "opportunityid": [str(ids[i]).lower() for i in rows],
            "p": np.asarray(test["p"], dtype=float),
            "won": np.asarray(test["won"], dtype=int),
            "stage": list(test.get("stages") or [None] * len(rows)),
        }
    )
