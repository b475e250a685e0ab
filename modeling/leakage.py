"""Leakage guard: attributes whose values reveal the outcome instead of predicting it are excluded,
with the reason shown per attribute (like the Dynamics insights pane's "why not auto-selected").

Tests, each on the prepared (model-input) values so they see exactly what the model would see:
1. one-outcome fill: filled on >= 90% of one outcome's deals and <= 10% of the other's
   (or the fill rates differ by >= 0.8), e.g. a contract number typed in only when a deal is won;
2. closed vs open: the fill rate differs by >= 0.5 between closed and open records, or the value
   distribution of a category differs grossly (total variation distance >= 0.6): the value is set
   when the deal closes, so open deals never look like closed ones (e.g. actual revenue);
3. near-perfect separation: the attribute alone ranks won above lost with AUC >= 0.97 on closed
   records (either direction), e.g. an actual value that is 0 exactly when a deal is lost;
4. seen through history: where the lake's history reaches back LATE_DAYS before a closed deal's close, the
   attribute got its final value (was blank or different LATE_DAYS before) on >= 80% of at least 30 such
   deals: it is filled or changed as the deal closes, so it is not known while the deal is open. This test
   needs no open records (dataset.history.late_changes counts the deals from the opportunity history).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from modeling.features import MISSING, prepare

FILL_HIGH = 0.9
FILL_LOW = 0.1
FILL_GAP = 0.8
OPEN_FILL_GAP = 0.5
OPEN_TVD = 0.6
AUC_MAX = 0.97
MIN_OPEN_ROWS = 20
LATE_DAYS = 7
LATE_SHARE = 0.8
MIN_LATE_DEALS = 30
THRESHOLDS = {
    "fill_high": FILL_HIGH,
    "fill_low": FILL_LOW,
    "fill_gap": FILL_GAP,
    "open_fill_gap": OPEN_FILL_GAP,
    "open_tvd": OPEN_TVD,
    "auc_max": AUC_MAX,
    "min_open_rows": MIN_OPEN_ROWS,
    "late_days": LATE_DAYS,
    "late_share": LATE_SHARE,
    "min_late_deals": MIN_LATE_DEALS,
}


def _filled(values: np.ndarray, kind: str) -> np.ndarray:
    v = values.ravel()
    if kind == "category":
        return np.asarray(v != MISSING)
    return ~np.isnan(v.astype(float))


def _texts(values: np.ndarray) -> np.ndarray:
    """Category inputs as Python strings (an object array: numpy's `astype(str)` would make a fixed-width
    copy as wide as the longest value for every row)."""
    return pd.Series(values, dtype=object).astype(str).to_numpy(dtype=object)


def _single_auc(values: np.ndarray, kind: str, y: np.ndarray) -> float:
    v = values.ravel()
    if kind == "category":
        codes, _ = pd.factorize(_texts(v), use_na_sentinel=False)  # the won rate of each value
        won = np.bincount(codes, weights=np.asarray(y, dtype=float))
        score = (won / np.bincount(codes))[codes]
    else:
        score = v.astype(float)
        filled = ~np.isnan(score)
        if filled.any():
            score = np.where(filled, score, np.nanmin(score) - 1.0)
        else:
            return 0.5
    if len(np.unique(score)) < 2:
        return 0.5
    auc = float(roc_auc_score(y, score))
    return max(auc, 1.0 - auc)


def _late_reason(label: str, counts: Mapping[str, int] | None) -> str | None:
    """Test 4: `counts` is {"deals", "late"} from dataset.history.late_changes (None: no history for it)."""
    if not counts or counts["deals"] < MIN_LATE_DEALS or counts["late"] < LATE_SHARE * counts["deals"]:
        return None
    return (
        f"{label} got its final value in the last {LATE_DAYS} days before close on {counts['late']} of "
        f"{counts['deals']} closed deals with history: it is not known while a deal is open"
    )


def leakage_report(
    closed: pd.DataFrame,
    labels: np.ndarray,
    open_rows: pd.DataFrame,
    spec: Mapping[str, Any],
    *,
    late: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per feature: fill rates, single-feature AUC, `excluded` and the `reasons`; `late` feeds test 4."""
    y = np.asarray(labels).astype(int)
    report: dict[str, dict[str, Any]] = {}
    for item in spec["features"]:
        # one feature's model inputs at a time: memory holds one column, not every feature of every row
        one = {**spec, "features": [item]}
        vc = prepare(closed, one)[item["input"]]
        feed_o = prepare(open_rows, one) if len(open_rows) else None
        name, kind, label = item["name"], item["kind"], item["label"]
        fc = _filled(vc, kind)
        fill_won = float(fc[y == 1].mean()) if (y == 1).any() else 0.0
        fill_lost = float(fc[y == 0].mean()) if (y == 0).any() else 0.0
        fill_closed = float(fc.mean()) if len(fc) else 0.0
        reasons: list[str] = []
        if (max(fill_won, fill_lost) >= FILL_HIGH and min(fill_won, fill_lost) <= FILL_LOW) or abs(
            fill_won - fill_lost
        ) >= FILL_GAP:
            reasons.append(
                f"{label} is filled on {fill_won:.0%} of won but {fill_lost:.0%} of lost "
                "deals: it is filled in because of the outcome"
            )
        fill_open = None
        if feed_o is not None and len(open_rows) >= MIN_OPEN_ROWS:
            vo = feed_o[item["input"]]
            fo = _filled(vo, kind)
            fill_open = float(fo.mean())
            if abs(fill_closed - fill_open) >= OPEN_FILL_GAP:
                reasons.append(
                    f"{label} is filled on {fill_closed:.0%} of closed but {fill_open:.0%} of open "
                    "deals: it is set when a deal closes"
                )
            elif kind == "category" and not item.get("presence"):
                pc = pd.Series(_texts(vc.ravel())).value_counts(normalize=True)
                po = pd.Series(_texts(vo.ravel())).value_counts(normalize=True)
                tvd = float(0.5 * pc.sub(po, fill_value=0.0).abs().sum())
                if tvd >= OPEN_TVD:
                    reasons.append(
                        f"{label}'s values differ grossly between closed and open deals "
                        f"(distance {tvd:.2f}): closed deals carry final values"
                    )
        auc = _single_auc(vc, kind, y) if len(np.unique(y)) == 2 else 0.5
        if auc >= AUC_MAX:
            reasons.append(
                f"{label} alone separates won from lost almost perfectly (AUC {auc:.3f}): "
                "it reveals the outcome"
            )
        late_reason = _late_reason(label, (late or {}).get(item["source"]))
        if late_reason:
            reasons.append(late_reason)
        report[name] = {
            "label": label,
            "excluded": bool(reasons),
            "reasons": reasons,
            "auc": round(auc, 4),
            "fill_won": round(fill_won, 4),
            "fill_lost": round(fill_lost, 4),
            "fill_closed": round(fill_closed, 4),
            "fill_open": None if fill_open is None else round(fill_open, 4),
        }
    return report
