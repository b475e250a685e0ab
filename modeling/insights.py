"""Attribute insights: influence (global and per stage, very low..very high) and per-value win rates.

Per-value rates follow the Dynamics attribute-insights formula:
global rate = won / (won + lost with this attribute filled); value rate = won with value / closed with
value. Numbers are shown in quartile bins learned on the training rows, cut at round values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeling import phrases
from modeling.features import MISSING

LEVELS = ("very low", "low", "medium", "high", "very high")
MIN_VALUE_COUNT = 5


def level(share: float) -> str:
    """Influence relative to the strongest attribute (0..1) -> very low..very high."""
    return LEVELS[min(int(share * 5), 4)] if share > 0 else LEVELS[0]


def influence_table(mean_abs_delta: Mapping[str, float], spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Sorted influence rows: attribute, label, influence (mean |contribution| in points of score over
    sampled training deals), share of the top attribute, level."""
    labels = {f["name"]: f["label"] for f in spec["features"]}
    top = max(mean_abs_delta.values(), default=0.0) or 1.0
    rows = [
        {
            "attribute": k,
            "label": labels.get(k, k),
            "influence": round(float(v), 3),
            "share": round(float(v) / top, 4),
            "level": level(float(v) / top),
        }
        for k, v in mean_abs_delta.items()
    ]
    return sorted(rows, key=lambda r: -r["influence"])


def number_bins(values: np.ndarray, unit: str | None = None) -> list[float]:
    """Interior quartile edges learned on training values, cut at round values (phrases.nice_edges)."""
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return []
    return phrases.nice_edges(sorted({float(q) for q in np.quantile(v, [0.25, 0.5, 0.75])}), unit)


def value_keys(values: np.ndarray, item: Mapping[str, Any]) -> np.ndarray:
    """Model-input values -> the value labels used in insights and reasons."""
    v = values.ravel()
    if item["kind"] == "category":
        return v.astype(object)
    x = v.astype(float)
    edges = item.get("bins") or []
    labels = np.array(phrases.bin_labels(edges, phrases.unit_of(item)), dtype=object)
    idx = np.searchsorted(np.asarray(edges, dtype=float), x, side="right") if edges else np.zeros(len(x), int)
    return np.where(np.isnan(x), MISSING, labels[idx]).astype(object)


def value_win_rates(feed: Mapping[str, np.ndarray], labels: np.ndarray, spec: Mapping[str, Any]) -> dict[str, Any]:
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
                "text": sentence(item["label"], str(k), rate, global_rate, item["kind"]),
            }
        out[item["name"]] = {
            "label": item["label"],
            "global_rate": round(global_rate, 4),
            "filled": n_filled,
            "values": values,
        }
    return out


def sentence(label: str, key: str, rate: float, global_rate: float, kind: str = "category") -> str:
    """ "62% of opportunities with Budget = Can Buy were won; overall 43%"."""
    return phrases.rate_sentence(label, key, rate, global_rate, kind)


def top_fields(table: Sequence[Mapping[str, Any]], k: int = 5) -> list[str]:
    return [str(r["attribute"]) for r in table[:k]]


TOP_ATTRIBUTES = 8


def top_attributes(
    points: np.ndarray, keys: Sequence[np.ndarray], primary: Sequence[Mapping[str, Any]], k: int = TOP_ATTRIBUTES
) -> list[dict[str, Any]]:
    """What impacts scores in this org: the k facts with the largest mean |contribution| (points) over the
    sampled deals, each with the values that raise and lower scores most (mean points over at least
    MIN_VALUE_COUNT deals) and a sentence: "Budget moves a score by 6 points on average: Can Buy raises it
    most (+9), Need Budget lowers it most (-7)"."""
    out = []
    for g in np.argsort(-np.abs(points).mean(axis=0), kind="stable")[:k].tolist():
        item, mean_abs = primary[g], float(np.abs(points[:, g]).mean())
        if mean_abs < 0.05:
            break
        by = pd.DataFrame({"k": keys[g], "p": points[:, g]}).groupby("k", sort=False)["p"].agg(["mean", "count"])
        by = by[by["count"] >= MIN_VALUE_COUNT].sort_values("mean")
        row: dict[str, Any] = {"attribute": item["name"], "label": item["label"], "meanPoints": round(mean_abs, 1)}
        text = f"{item['label']} moves a score by {phrases.significant(mean_abs, 2)} points on average"
        parts = []
        for field, pos, verb in (("raisesMost", -1, "raises"), ("lowersMost", 0, "lowers")):
            if not len(by):
                break
            mean = float(by["mean"].iloc[pos])
            if (mean >= 0.5) if verb == "raises" else (mean <= -0.5):
                row[field] = {"value": phrases.display_value(str(by.index[pos])), "points": round(mean, 1)}
                parts.append(f"{row[field]['value']} {verb} it most ({'+' if mean > 0 else ''}{round(mean):.0f})")
        row["sentence"] = text + (": " + ", ".join(parts) if parts else "")
        out.append(row)
    return out
