"""An independent check of a backtest report against the lake: the Delta tables opened with `deltalake`
alone, which opportunities were open on each cut date recomputed from them, how those ended, and every
month's figures recomputed from the per-opportunity scores the report was computed from (its blob in the
model store). Shared by the synthetic-org and the IBM backtest tests."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from deltalake import DeltaTable
from sklearn.metrics import roc_auc_score

SCORING_WINDOW = pd.Timedelta(days=730)  # the product scores open deals created within 2 years
TOLERANCE = 1.5e-4  # figures are reported to 4 decimals


def lake_opportunities(lake: Any) -> pd.DataFrame:
    """The current opportunity table, read by deltalake from the blob store (no product code)."""
    uri, options = lake.tables.uri("tables/opportunity"), lake.tables.location.storage_options
    columns = ["opportunityid", "createdon", "actualclosedate", "modifiedon", "statecode"]
    frame = DeltaTable(uri, storage_options=options).to_pyarrow_dataset().to_table(columns=columns).to_pandas()
    frame["createdon"] = pd.to_datetime(frame["createdon"], utc=True)
    closed_at = pd.to_datetime(frame["actualclosedate"], utc=True)
    frame["closed_at"] = closed_at.fillna(pd.to_datetime(frame["modifiedon"], utc=True))  # a close without a date
    frame["outcome"] = frame["statecode"].map({1: 1.0, 2: 0.0})
    return frame


def _ece(p: np.ndarray, y: np.ndarray) -> float:
    total = 0.0
    for b in range(10):
        inside = (p >= b / 10) & ((p < (b + 1) / 10) if b < 9 else (p <= 1.0))
        if inside.any():
            total += inside.mean() * abs(p[inside].mean() - y[inside].mean())
    return total


def _close(got: float | None, expected: float | None) -> bool:
    if expected is None or (isinstance(expected, float) and math.isnan(expected)):
        return got is None
    return got is not None and abs(got - expected) <= TOLERANCE


def check_month(month: dict[str, Any], kept: dict[str, Any], opp: pd.DataFrame, training_months: int) -> None:
    cut = pd.Timestamp(month["cutDate"], tz="UTC")
    created, closed_at, state = opp["createdon"], opp["closed_at"], opp["statecode"]
    is_open = (created <= cut) & ((state == 0) | (closed_at > cut)) & (created >= cut - SCORING_WINDOW)
    expected = opp[is_open]
    assert sorted(kept["ids"]) == sorted(expected["opportunityid"]), month["cutDate"]
    outcome = dict(zip(expected["opportunityid"], expected["outcome"], strict=True))
    y = np.array([outcome[i] for i in kept["ids"]], dtype=float)
    assert [None if np.isnan(v) else int(v) for v in y] == kept["outcomes"], month["cutDate"]
    start = cut - pd.DateOffset(months=training_months)
    trained = opp[(state != 0) & (created >= start) & (closed_at <= cut) & (created <= closed_at)]
    won, lost = int((trained["statecode"] == 1).sum()), int((trained["statecode"] == 2).sum())
    if month["status"] == "skipped":
        assert min(won, lost) < month["reason"]["needed"]["won"] and kept["ids"] == []
        return
    assert month["trainingCounts"] == {"won": won, "lost": lost}, month["cutDate"]
    done = ~np.isnan(y)
    p, ye = np.asarray(kept["probabilities"], dtype=float)[done], y[done]
    ids = np.asarray(kept["ids"])[done]
    counts = (month["scoredRows"], month["closedSince"], month["stillOpen"])
    assert counts == (len(y), int(done.sum()), int((~done).sum())), month["cutDate"]
    assert month["won"] == int(ye.sum()) and month["lost"] == int(len(ye) - ye.sum())
    rate = float(ye.mean())
    ranked = sorted(range(len(p)), key=lambda i: (-p[i], ids[i]))[: math.ceil(len(p) / 10)]
    figures = {
        "auc": float(roc_auc_score(ye, p)) if len(set(ye)) == 2 else None,
        "ece": _ece(p, ye),
        "wonRate": rate,
        "meanPredicted": float(p.mean()),
        "topDecileLift": float(ye[ranked].mean()) / rate if rate else None,
    }
    for key, value in figures.items():
        assert _close(month[key], value), (month["cutDate"], key, month[key], value)


def check_report(report: dict[str, Any], scores: dict[str, Any], opp: pd.DataFrame, training_months: int) -> None:
    assert [m["cutDate"] for m in report["months"]] == report["cutDates"] == sorted(scores["months"])
    for month in report["months"]:
        check_month(month, scores["months"][month["cutDate"]], opp, training_months)
    aucs = [m["auc"] for m in report["months"] if m.get("auc") is not None]
    assert _close(report["summary"]["medianAuc"], float(np.median(aucs)) if aucs else None)
    assert report["summary"]["evaluated"] == sum(m["status"] == "evaluated" for m in report["months"])
