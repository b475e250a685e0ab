"""Attribute insights: influence (global and per stage, very low..very high) and per-value win rates.

Per-value rates follow the Dynamics attribute-insights formula:
global rate = won / (won + lost with this attribute filled); value rate = won with value / closed with
value. Numbers are shown in quartile bins learned on the training rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeling.features import MISSING, OTHER

LEVELS = ("very low", "low", "medium", "high", "very high")
MIN_VALUE_COUNT = 5


def level(share: float) -> str:
    """Influence relative to the strongest attribute (0..1) -> very low..very high."""
    return LEVELS[min(int(share * 5), 4)] if share > 0 else LEVELS[0]


def influence_table(mean_abs_delta: Mapping[str, float], spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Sorted influence rows: attribute, label, influence (mean |change in win probability| when the
    attribute is set to its baseline), share of the top attribute, level."""
    labels = {f["name"]: f["label"] for f in spec["features"]}
    top = max(mean_abs_delta.values(), default=0.0) or 1.0
    rows = [
        {
            "attribute": k,
            "label": labels.get(k, k),
            "influence": round(float(v), 5),
            "share": round(float(v) / top, 4),
            "level": level(float(v) / top),
        }
        for k, v in mean_abs_delta.items()
    ]
    return sorted(rows, key=lambda r: -r["influence"])


def number_bins(values: np.ndarray) -> list[float]:
    """Interior quartile edges (unique), learned on training values."""
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return []
    return sorted({float(q) for q in np.quantile(v, [0.25, 0.5, 0.75])})


def bin_labels(edges: Sequence[float]) -> list[str]:
    if not edges:
        return ["any value"]
    fmt = _fmt
    out = [f"below {fmt(edges[0])}"]
    out += [f"{fmt(a)} to {fmt(b)}" for a, b in zip(edges[:-1], edges[1:], strict=False)]
    out.append(f"{fmt(edges[-1])} or more")
    return out


def _fmt(x: float) -> str:
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.2f}"


def value_keys(values: np.ndarray, item: Mapping[str, Any]) -> np.ndarray:
    """Model-input values -> the value labels used in insights and reasons."""
    v = values.ravel()
    if item["kind"] == "category":
        return v.astype(object)
    x = v.astype(float)
    edges = item.get("bins") or []
    labels = np.array(bin_labels(edges), dtype=object)
    idx = np.searchsorted(np.asarray(edges, dtype=float), x, side="right") if edges else np.zeros(len(x), int)
    return np.where(np.isnan(x), MISSING, labels[idx]).astype(object)


def display_value(key: str) -> str:
    return {MISSING: "(empty)", OTHER: "(other)", "__filled__": "(filled in)"}.get(key, key)


def value_win_rates(
    feed: Mapping[str, np.ndarray], labels: np.ndarray, spec: Mapping[str, Any]
) -> dict[str, Any]:
    """Per attribute: global rate over closed deals with the attribute filled, and per value: count,
    won, rate, lift vs the global rate and the sentence shown to sellers."""
    y = np.asarray(labels).astype(int)
    out: dict[str, Any] = {}
    for item in spec["features"]:
        keys = value_keys(feed[item["input"]], item)
        filled = keys != MISSING
        n_filled = int(filled.sum())
        global_rate = float(y[filled].mean()) if n_filled else float(y.mean()) if len(y) else 0.0
        df = pd.DataFrame({"k": keys, "y": y})
        g = df.groupby("k", sort=False)["y"].agg(["count", "sum"])
        values = {}
        for k, row in g.iterrows():
            cnt, won = int(row["count"]), int(row["sum"])
            if cnt < MIN_VALUE_COUNT:
                continue
            rate = won / cnt
            values[str(k)] = {
                "count": cnt,
                "won": won,
                "rate": round(rate, 4),
                "lift": round(rate - global_rate, 4),
                "text": sentence(item["label"], str(k), rate, global_rate),
            }
        out[item["name"]] = {
            "label": item["label"],
            "global_rate": round(global_rate, 4),
            "filled": n_filled,
            "values": values,
        }
    return out


def sentence(label: str, key: str, rate: float, global_rate: float) -> str:
    if key == MISSING:
        return f"{rate:.0%} of opportunities without {label} were won (all: {global_rate:.0%})"
    return (
        f"{rate:.0%} of opportunities with {label} = {display_value(key)} were won (all: {global_rate:.0%})"
    )


def top_fields(table: Sequence[Mapping[str, Any]], k: int = 5) -> list[str]:
    return [str(r["attribute"]) for r in table[:k]]
