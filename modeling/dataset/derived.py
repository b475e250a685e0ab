"""The derived features (days open, time in stage, close-date slip, value vs the account's past deals, the
account's and owner's past win rates, the win rate of similar past deals), from deals closed strictly before
each row's time, and the choice of the similar-deals profile key at training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeling import similar
from modeling.config import ModelConfig
from modeling.dataset.split import test_split
from modeling.dataset.tables import as_utc, close_time, outcome_labels
from modeling.features import STAGE_COLUMN, build_spec
from modeling.leakage import leakage_report

# Not model inputs: the counts behind the past win rates, kept in the frames for the reason sentences.
COUNT_COLUMNS = ["d_account_won", "d_owner_won", "d_similar_won"]


def closed_events(opp: pd.DataFrame, config: ModelConfig) -> pd.DataFrame:
    y = outcome_labels(opp, config)
    ev = pd.DataFrame(
        {
            "account": opp.get("_parentaccountid_value", pd.Series([None] * len(opp), index=opp.index)).astype(object),
            "owner": opp.get("_ownerid_value", pd.Series([None] * len(opp), index=opp.index)).astype(object),
            "_close": close_time(opp).to_numpy(),
            "_y": y.to_numpy(),
            "_v": pd.to_numeric(
                opp.get("estimatedvalue", pd.Series(np.nan, index=opp.index)), errors="coerce"
            ).to_numpy(),
        }
    )
    ev = ev[ev["_y"].notna()].copy()
    ev["account_value"] = ev["account"].astype(str) + "|" + ev["_v"].astype(str)
    ev.loc[ev["account"].isna(), "account_value"] = None
    return ev


def _past_outcomes(queries: pd.DataFrame, events: pd.DataFrame, key: str, prefix: str) -> pd.DataFrame:
    """For each query (key, t): counts of events with the same key closed strictly before t."""
    q = queries[[key, "_t", "_row"]].dropna(subset=[key, "_t"])
    q = q.assign(**{key: q[key].astype(str).astype(object), "_t": as_utc(q["_t"], len(q)).array})
    q = q.sort_values("_t", kind="stable")
    ev = events.dropna(subset=[key, "_close"]).copy()
    ev[key] = ev[key].astype(str).astype(object)
    ev["_close"] = as_utc(ev["_close"], len(ev)).array
    ev = ev.sort_values("_close", kind="stable")
    res = pd.DataFrame(index=queries["_row"])
    if q.empty or ev.empty:
        res[prefix + "n"] = 0.0
        res[prefix + "won"] = 0.0
        res[prefix + "value"] = 0.0
        res[prefix + "valued"] = 0.0
        return res
    ev["_n"] = ev.groupby(key, sort=False).cumcount() + 1.0
    ev["_won"] = ev.groupby(key, sort=False)["_y"].cumsum()
    ev["_value"] = ev["_v"].fillna(0.0).groupby(ev[key], sort=False).cumsum()
    ev["_valued"] = ev["_v"].notna().astype(float).groupby(ev[key], sort=False).cumsum()
    m = pd.merge_asof(
        q,
        ev[[key, "_close", "_n", "_won", "_value", "_valued"]],
        left_on="_t",
        right_on="_close",
        by=key,
        allow_exact_matches=False,
        direction="backward",
    )
    m = m.set_index("_row")
    res[prefix + "n"] = m["_n"].reindex(res.index).fillna(0.0)
    res[prefix + "won"] = m["_won"].reindex(res.index).fillna(0.0)
    res[prefix + "value"] = m["_value"].reindex(res.index).fillna(0.0)
    res[prefix + "valued"] = m["_valued"].reindex(res.index).fillna(0.0)
    return res


def derive_features(
    rows: pd.DataFrame, events: pd.DataFrame, prior: float | np.ndarray, stats: Mapping[str, Any]
) -> pd.DataFrame:
    """Adds the DERIVED columns to `rows` (needs _t, _created, _stage_start, __stage__, account/owner ids);
    past rates are smoothed toward `prior` (one rate, or one per row)."""
    out = rows.copy()
    for c in ("_t", "_created", "_stage_start"):
        out[c] = as_utc(out[c], len(out)).array
    day = np.timedelta64(1, "D")
    t = out["_t"]
    out["d_days_open"] = ((t - out["_created"]) / day).astype(float)
    out["d_days_in_stage"] = ((t - out["_stage_start"].fillna(out["_created"])) / day).astype(float)
    med = stats.get("won_median_days_in_stage", {})
    stage = out[STAGE_COLUMN] if STAGE_COLUMN in out.columns else pd.Series([None] * len(out), index=out.index)
    med_series = stage.map(med).astype(float)
    fallback = float(stats.get("won_median_days_in_stage_all", np.nan))
    med_series = med_series.fillna(fallback)
    out["d_stage_time_vs_won"] = out["d_days_in_stage"] / med_series.clip(lower=1.0)
    est = as_utc(out.get("estimatedclosedate"), len(out))
    est.index = out.index
    out["d_close_slip_days"] = ((est - t) / day).astype(float)
    out["d_planned_cycle_days"] = ((est - out["_created"]) / day).astype(float)
    q = pd.DataFrame(
        {
            "_row": np.arange(len(out)),
            "_t": t.to_numpy(),
            "account": out.get("_parentaccountid_value", pd.Series([None] * len(out))).astype(object).to_numpy(),
            "owner": out.get("_ownerid_value", pd.Series([None] * len(out))).astype(object).to_numpy(),
        }
    )
    value = pd.to_numeric(out.get("estimatedvalue", pd.Series(np.nan, index=out.index)), errors="coerce")
    q["account_value"] = q["account"].astype(str) + "|" + pd.Series(value.to_numpy()).astype(str)
    q.loc[q["account"].isna(), "account_value"] = None
    acc = _past_outcomes(q, events, "account", "a_")
    own = _past_outcomes(q, events, "owner", "o_")
    accv = _past_outcomes(q, events, "account_value", "av_")
    k = similar.PRIOR_STRENGTH  # pseudo-deals pulling a past win rate toward the global rate
    out["d_account_win_rate"] = ((acc["a_won"] + k * prior) / (acc["a_n"] + k)).to_numpy()
    out["d_account_closed"] = acc["a_n"].to_numpy()
    out["d_account_same_value_win_rate"] = ((accv["av_won"] + k * prior) / (accv["av_n"] + k)).to_numpy()
    out["d_owner_win_rate"] = ((own["o_won"] + k * prior) / (own["o_n"] + k)).to_numpy()
    out["d_owner_closed"] = own["o_n"].to_numpy()
    out["d_account_won"] = acc["a_won"].to_numpy()
    out["d_owner_won"] = own["o_won"].to_numpy()
    past_mean = (acc["a_value"] / acc["a_valued"].where(acc["a_valued"] > 0)).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = value.to_numpy(dtype=float) / np.where(past_mean > 0, past_mean, np.nan)
    out["d_value_vs_account"] = ratio
    return out


def derive_open(rows: pd.DataFrame, events: pd.DataFrame, prior: float, stats: Mapping[str, Any]) -> pd.DataFrame:
    """Derived columns of open opportunities; similar deals from the counts stored at training."""
    out = rows.copy()
    rate, n_similar, won_similar = similar.scoring_values(out, stats.get("similar"))
    out["d_similar_win_rate"], out["d_similar_closed"], out["d_similar_won"] = rate, n_similar, won_similar
    return derive_features(out, events, prior, stats)


def choose_similar(
    rows: pd.DataFrame,
    deals: pd.DataFrame,
    deal_close: np.ndarray,
    deal_y: np.ndarray,
    open_raw: pd.DataFrame,
    feats: Sequence[Mapping[str, Any]],
    prior: float,
    row_prior: np.ndarray,
    late: Mapping[str, Mapping[str, int]],
) -> dict[str, Any]:
    """Chooses the similar-deals profile key on the training part only (never the most recent TEST_SHARE
    of rows, never attributes the leakage guard flags; each row's rate smoothed toward `row_prior`, the win
    rate known at its time) and returns meta["stats"]["similar"] (with the training win rate `prior`)."""
    order, n_train, test_from = test_split(rows["_close"].to_numpy(dtype="datetime64[ns]"))
    part = np.sort(order[:n_train])
    names = [f["name"] for f in feats if not f.get("derived") and f["name"] in rows.columns]
    train_rows = rows[names].iloc[part].reset_index(drop=True)  # the attributes only: not a copy of every column
    y_train = rows["_y"].to_numpy(dtype=int)[part]
    candidates = []
    for f in feats:
        if f.get("derived") or f["name"] not in train_rows.columns:
            continue
        distinct = train_rows[f["name"]].nunique(dropna=True)
        if distinct < 2 or (f["kind"] == "category" and distinct > 0.5 * max(len(train_rows), 1)):
            continue  # constant, or free text / ids: never a profile
        candidates.append(dict(f))
    if candidates and len(train_rows):
        leak = leakage_report(train_rows, y_train, open_raw, build_spec(train_rows, candidates), late=late)
        candidates = [f for f in candidates if not leak[f["name"]]["excluded"]]
    ev_mask = deal_close < test_from
    attrs, trace = similar.choose_attributes(
        [f["name"] for f in candidates],
        train_rows,
        rows["_t"].to_numpy(dtype="datetime64[ns]")[part],
        y_train,
        deals.loc[ev_mask, [c for c in names if c in deals.columns]].reset_index(drop=True),
        deal_close[ev_mask],
        deal_y[ev_mask],
        row_prior[part],
    )
    return similar.stats_for(attrs, deals, deal_y, prior, trace)
