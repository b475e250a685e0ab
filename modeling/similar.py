"""Win rate of similar past deals (Dynamics' "similar opportunities" idea, made explicit and leak-free).

Similar deals share the values of a *profile key*: an ordered list of the model's attributes chosen
greedily on the training part only (the records before the most recent TEST_SHARE by close time) - at
each step the attribute whose addition gives the best out-of-time AUC of the resulting past win rate,
stopping when the gain is below MIN_GAIN or after MAX_ATTRIBUTES. Candidates are the model's option
set, text (not free text) and number attributes that the leakage guard does not flag.

The rate is hierarchical: level 0 is the training win rate; level l counts the closed deals that share
the first l key attributes and shrinks toward level l-1 with PRIOR_STRENGTH pseudo-deals:
rate_l = (won_l + k * rate_{l-1}) / (closed_l + k). Training rows count only deals closed strictly
before the row's reference time (never the row's own outcome); open opportunities at scoring time use
the counts over every closed training deal, stored in meta["stats"]["similar"].

Counting is vectorised (one lexsort per level over events and queries), so choosing a key over
100,000 deals takes a few seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

PRIOR_STRENGTH = 5.0
MAX_ATTRIBUTES = 4
MIN_GAIN = 0.003
MAX_CANDIDATES_AFTER_FIRST = 8  # later rounds only try the best single attributes of round one
SEP = "\x1f"
MISSING_KEY = "\x00"


def _key_of(v: Any) -> str:
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and not np.isfinite(v)):
        return MISSING_KEY
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    t = str(v).strip()
    return t if t else MISSING_KEY


def key_values(col: pd.Series) -> np.ndarray:
    """Raw attribute values -> normalised strings (1000.0 -> "1000", True -> "1", missing -> "\\x00").
    Each distinct value is normalised once; rows share its string."""
    codes, uniques = pd.factorize(col.astype(object), use_na_sentinel=False)
    keys = np.array([_key_of(v) for v in uniques] + [MISSING_KEY], dtype=object)
    return keys[np.where(codes < 0, len(uniques), codes)]


def _joint_codes(rows: pd.Series | None, events: pd.Series | None, n_rows: int, n_events: int) -> np.ndarray:
    """Integer codes of the normalised keys of rows then events, shared (equal keys, equal codes)."""
    parts = [
        key_values(s) if s is not None else np.full(n, MISSING_KEY, dtype=object)
        for s, n in ((rows, n_rows), (events, n_events))
    ]
    codes, _ = pd.factorize(np.concatenate(parts))
    return codes.astype(np.int32)  # fewer distinct keys than rows: half the memory of int64


def _combine(prefix: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Codes of the pair (prefix key, attribute key): equal pairs, equal codes."""
    joined, _ = pd.factorize(prefix.astype(np.int64) * (int(codes.max(initial=0)) + 1) + codes)
    return joined.astype(np.int32)


def level_keys(frame: pd.DataFrame, attributes: Sequence[str]) -> list[np.ndarray]:
    """The key string of every level (first 1, 2, ... attributes) for each row of `frame`."""
    keys: list[np.ndarray] = []
    current: np.ndarray | None = None
    for a in attributes:
        col = frame[a] if a in frame.columns else pd.Series([None] * len(frame), index=frame.index)
        v = key_values(col)
        current = v if current is None else current + SEP + v
        keys.append(current)
    return keys


def past_counts(
    ev_key: np.ndarray, ev_time: np.ndarray, ev_y: np.ndarray, q_key: np.ndarray, q_time: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each query (key, time): (closed, won) over events with the same key closed strictly before."""
    nq = len(q_key)
    if nq == 0 or len(ev_key) == 0:
        return np.zeros(nq), np.zeros(nq)
    codes, _ = pd.factorize(np.concatenate([ev_key, q_key]))
    times = np.concatenate([ev_time, q_time]).astype("datetime64[ns]").astype(np.int64)
    is_ev = np.concatenate([np.ones(len(ev_key)), np.zeros(nq)])
    won = np.concatenate([np.asarray(ev_y, dtype=float), np.zeros(nq)])
    # queries sort before events at the same time: only events strictly before count
    order = np.lexsort((is_ev, times, codes))
    k_sorted = codes[order]
    c_n = np.cumsum(is_ev[order])
    c_w = np.cumsum(won[order])
    start = np.ones(len(order), dtype=bool)
    start[1:] = k_sorted[1:] != k_sorted[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(len(order)), 0))
    base_n = np.where(first > 0, c_n[first - 1], 0.0)
    base_w = np.where(first > 0, c_w[first - 1], 0.0)
    n_sorted = c_n - base_n
    w_sorted = c_w - base_w
    n_out = np.empty(len(order))
    w_out = np.empty(len(order))
    n_out[order] = n_sorted
    w_out[order] = w_sorted
    return n_out[len(ev_key) :], w_out[len(ev_key) :]


def shrink(
    levels: Sequence[tuple[np.ndarray, np.ndarray]], prior: float | np.ndarray, k: float = PRIOR_STRENGTH
) -> np.ndarray:
    """Hierarchical smoothed rate from per-level (closed, won) counts, coarsest first, toward `prior` (one
    rate, or one per row)."""
    n = len(levels[0][0]) if levels else 0
    est = np.full(n, prior, dtype=float)
    for closed, won in levels:
        est = (won + k * est) / (closed + k)
    return est


def choose_attributes(
    candidates: Sequence[str],
    rows: pd.DataFrame,
    row_time: np.ndarray,
    labels: np.ndarray,
    events: pd.DataFrame,
    ev_time: np.ndarray,
    ev_y: np.ndarray,
    prior: float | np.ndarray,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Greedy profile key on (rows, events) of the training part. Returns (attributes, trace)."""
    y = np.asarray(labels, dtype=int)
    if len(np.unique(y)) < 2 or not candidates:
        return [], []
    # Keys as integer codes shared by rows and events (rows first): the search joins and counts codes, so
    # it never builds a string per row, attribute and round.
    nq, ne = len(rows), len(events)
    single = {
        a: _joint_codes(rows[a] if a in rows.columns else None, events[a] if a in events.columns else None, nq, ne)
        for a in candidates
    }
    chosen: list[str] = []
    levels: list[tuple[np.ndarray, np.ndarray]] = []
    prefix = np.zeros(nq + ne, dtype=np.int32)
    best_auc = 0.5
    trace: list[dict[str, Any]] = []
    pool = list(candidates)
    while len(chosen) < MAX_ATTRIBUTES and pool:
        aucs: dict[str, float] = {}
        leader: tuple[str, tuple[np.ndarray, np.ndarray], np.ndarray] | None = None  # only its arrays are kept
        for a in pool:
            joint = _combine(prefix, single[a])
            counts = past_counts(joint[nq:], ev_time, ev_y, joint[:nq], row_time)
            rate = shrink(levels + [counts], prior)
            aucs[a] = float(roc_auc_score(y, rate)) if len(np.unique(rate)) > 1 else 0.5
            if leader is None or aucs[a] > aucs[leader[0]]:  # the first of equals leads, as in `ranked`
                leader = (a, counts, joint)
        ranked = sorted(aucs, key=lambda a: -aucs[a])
        assert leader is not None and leader[0] == ranked[0]
        a, auc = ranked[0], aucs[ranked[0]]
        trace.append({"attribute": a, "auc": round(auc, 4), "gain": round(auc - best_auc, 4)})
        if auc < best_auc + MIN_GAIN:
            break
        chosen.append(a)
        levels.append(leader[1])
        prefix = leader[2]
        best_auc = auc
        pool = ranked[1 : 1 + MAX_CANDIDATES_AFTER_FIRST] if len(chosen) == 1 else [p for p in pool if p != a]
        single = {p: single[p] for p in pool}  # the codes of candidates out of the running are dropped
    return chosen, trace


def training_values(
    attributes: Sequence[str],
    rows: pd.DataFrame,
    row_time: np.ndarray,
    events: pd.DataFrame,
    ev_time: np.ndarray,
    ev_y: np.ndarray,
    prior: float | np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rate, closed, won) per row from events closed strictly before the row's time."""
    if not attributes:
        n = len(rows)
        return np.full(n, prior, dtype=float), np.zeros(n), np.zeros(n)
    q_levels = level_keys(rows, attributes)
    e_levels = level_keys(events, attributes)
    counts = [past_counts(e, ev_time, ev_y, q, row_time) for q, e in zip(q_levels, e_levels, strict=True)]
    return shrink(counts, prior), counts[-1][0], counts[-1][1]


def stats_for(
    attributes: Sequence[str], events: pd.DataFrame, ev_y: np.ndarray, prior: float, trace: Sequence[Any]
) -> dict[str, Any]:
    """What scoring needs: per level, {key: [closed, won]} over every closed training deal."""
    levels = []
    y = np.asarray(ev_y, dtype=float)
    for keys in level_keys(events, attributes):
        g = pd.DataFrame({"k": keys, "y": y}).groupby("k", sort=True)["y"].agg(["count", "sum"])
        levels.append(
            {str(k): [int(c), int(s)] for k, c, s in zip(g.index, g["count"], g["sum"], strict=True)}
        )
    return {
        "attributes": list(attributes),
        "prior": float(prior),
        "strength": PRIOR_STRENGTH,
        "levels": levels,
        "selection": list(trace),
    }


def scoring_values(
    frame: pd.DataFrame, stats: Mapping[str, Any] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rate, closed, won) per open opportunity from the stored counts."""
    n = len(frame)
    prior = float((stats or {}).get("prior", 0.5))
    attributes = list((stats or {}).get("attributes") or [])
    if stats is None or not attributes:
        return np.full(n, prior), np.zeros(n), np.zeros(n)
    stored = stats.get("levels") or []
    counts = []
    for keys, table in zip(level_keys(frame, attributes), stored, strict=False):
        pairs = [table.get(str(k)) for k in keys]
        closed = np.array([p[0] if p else 0 for p in pairs], dtype=float)
        won = np.array([p[1] if p else 0 for p in pairs], dtype=float)
        counts.append((closed, won))
    if not counts:
        return np.full(n, prior), np.zeros(n), np.zeros(n)
    rate = shrink(counts, prior, float(stats.get("strength", PRIOR_STRENGTH)))
    return rate, counts[-1][0], counts[-1][1]
