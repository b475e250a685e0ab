"""Training and scoring sets from the lake's tables (pure pandas).

Training rows are closed opportunities created and closed in the training period that match the
model's filter and BPF. Each row is observed at a *reference time* t inside the deal's open life
(deterministic per id: t = created + u * (closed - created), u in [0.1, 0.9]), so that time-based
features look like those of open deals scored "now" rather than like final values. Attribute values
are point-in-time values from `opportunity_history` (latest version modified at or before t) where
they exist, else the current values. Per-stage models get one row per closed deal and stage it
reached, with t inside that stage.

Derived features (never leaking the row's own outcome: only deals closed strictly before t count):
days open, days in the current stage and its ratio to the median of won deals in that stage,
close-date slip (days from t to the estimated close date; planned cycle length), value against the
account's past mean, the account's and owner's past win rates (smoothed), and the account's past win
rate on deals of the same value (repeat deals).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from modeling import similar
from modeling.config import ModelConfig
from modeling.errors import InsufficientDataError
from modeling.features import STAGE_COLUMN, boolean_options, build_spec
from modeling.leakage import LATE_DAYS, leakage_report

MIN_PER_CLASS = 40
MIN_LAST_STAGE = 40
SCORING_WINDOW_DAYS = 730  # Dynamics scores open opportunities created within the last 2 years
PRIOR_STRENGTH = 5.0  # pseudo-deals pulling a past win rate toward the global rate
ACCOUNT_PREFIX = "account."
TEST_SHARE = 0.2  # the final test set: the most recent 20% of closed records by close time (Dynamics' rule)

NUMERIC_TYPES = {"Money", "Decimal", "Double", "Integer", "BigInt"}
OPTION_TYPES = {"Picklist", "State", "Status", "Boolean", "MultiSelectPicklist"}
TEXT_TYPES = {"String", "Memo"}
NEVER_TYPES = {
    "DateTime",
    "Lookup",
    "Owner",
    "Customer",
    "Uniqueidentifier",
    "Virtual",
    "EntityName",
    "PartyList",
    "Image",
    "ManagedProperty",
    "CalendarRules",
    "File",
}
# System-generated or bookkeeping columns (Dynamics: score, grade, version number, image, exchange rate...).
SYSTEM_COLUMNS = {
    "opportunityid",
    "accountid",
    "name",
    "statecode",
    "statuscode",
    "versionnumber",
    "exchangerate",
    "opportunityscore",
    "opportunitygrade",
    "msdyn_predictivescoreid",
    "msdyn_opportunityscore",
    "msdyn_opportunitygrade",
    "msdyn_scorereasons",
    "msdyn_scoretrend",
    "entityimage",
    "entityimage_url",
    "entityimageid",
    "entityimage_timestamp",
    "importsequencenumber",
    "timezoneruleversionnumber",
    "utcconversiontimezonecode",
    "processid",
    "stageid",
    "traversedpath",
    "salesstagecode",
    "stepid",
    "stepname",
    "salesstage",
    "createdon",
    "modifiedon",
    "overriddencreatedon",
    "actualclosedate",
    "estimatedclosedate",
    "_synced_at",
    "_deleted",
}

PROCESS_COLUMNS = {"stepname", "salesstage", "salesstagecode"}
DERIVED: list[dict[str, str]] = [
    {"name": "d_days_open", "label": "Days open"},
    {"name": "d_days_in_stage", "label": "Days in current stage"},
    {"name": "d_stage_time_vs_won", "label": "Time in stage vs won deals (ratio)"},
    {"name": "d_close_slip_days", "label": "Days until estimated close"},
    {"name": "d_planned_cycle_days", "label": "Planned sales cycle (days)"},
    {"name": "d_value_vs_account", "label": "Value vs account's past deals (ratio)"},
    {"name": "d_account_win_rate", "label": "Account's past win rate"},
    {"name": "d_account_closed", "label": "Account's past closed deals"},
    {"name": "d_account_same_value_win_rate", "label": "Account's past win rate at this value"},
    {"name": "d_owner_win_rate", "label": "Owner's past win rate"},
    {"name": "d_owner_closed", "label": "Owner's past closed deals"},
    {"name": "d_similar_win_rate", "label": "Win rate of similar past deals"},
    {"name": "d_similar_closed", "label": "Similar past deals closed"},
]
# Not model inputs: the counts behind the past win rates, kept in the frames for the reason sentences.
COUNT_COLUMNS = ["d_account_won", "d_owner_won", "d_similar_won"]


@dataclass
class TrainingData:
    frame: pd.DataFrame  # opportunityid, feature columns, STAGE_COLUMN (per-stage)
    labels: np.ndarray  # 1 won, 0 lost
    closed_at: np.ndarray  # datetime64[ns] close time per row (time order for the splits)
    features: list[dict[str, Any]]  # descriptors for features.build_spec
    open_frame: pd.DataFrame  # open opportunities observed now (for the closed-vs-open leakage test)
    counts: dict[str, int]
    stats: dict[str, Any]  # what scoring needs to derive features the same way (stage medians, prior)
    stages: list[str] = field(default_factory=list)
    period: dict[str, str] = field(default_factory=dict)
    late: dict[str, dict[str, int]] = field(default_factory=dict)  # leakage_report's history test (_late_changes)


@dataclass
class ScoringData:
    frame: pd.DataFrame  # opportunityid + feature columns (+ STAGE_COLUMN)
    skipped: list[dict[str, str]]  # [{"opportunityid", "reason"}]


# ---------------------------------------------------------------- attributes


def attribute_ineligibility(
    name: str,
    opp_attrs: Mapping[str, Mapping[str, Any]],
    acc_attrs: Mapping[str, Mapping[str, Any]],
    state_set: str,
) -> str | None:
    """None when `name` may be a model attribute, else the reason (Dynamics' rules)."""
    if name.startswith(ACCOUNT_PREFIX):
        base, pool, entity = name[len(ACCOUNT_PREFIX) :], acc_attrs, "account"
    else:
        base, pool, entity = name, opp_attrs, "opportunity"
    meta = pool.get(base)
    if meta is None:
        return f"is not an attribute of {entity}"
    typ = str(meta.get("type", ""))
    if typ in NEVER_TYPES or meta.get("dateonly"):
        return f"has type {typ}: date/time, lookup and id attributes are never model attributes"
    if base in PROCESS_COLUMNS:
        return (
            "is the process stage: closed deals carry their final stage; stages are modelled by "
            "per-stage modelling and time in stage"
        )
    if base in SYSTEM_COLUMNS or base.startswith("_") or base.endswith("_base") or base == state_set:
        return "is a system, status or label column and is never a model attribute"
    if typ not in NUMERIC_TYPES | OPTION_TYPES | TEXT_TYPES:
        return f"has unsupported type {typ}"
    return None


def default_attributes(metadata: Mapping[str, Any], state_set: str) -> list[str]:
    """Every eligible standard and custom attribute of the opportunity and its account."""
    attrs = metadata.get("attributes", {})
    opp = {a["name"]: a for a in attrs.get("opportunity", [])}
    acc = {a["name"]: a for a in attrs.get("account", [])}
    names = [n for n in opp if attribute_ineligibility(n, opp, acc, state_set) is None]
    names += [
        ACCOUNT_PREFIX + n
        for n in acc
        if attribute_ineligibility(ACCOUNT_PREFIX + n, opp, acc, state_set) is None
    ]
    return names


def feature_descriptors(attributes: Sequence[str], metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    attrs = metadata.get("attributes", {})
    opts = metadata.get("optionsets", {})
    out: list[dict[str, Any]] = []
    for name in attributes:
        entity, base = (
            ("account", name[len(ACCOUNT_PREFIX) :])
            if name.startswith(ACCOUNT_PREFIX)
            else ("opportunity", name)
        )
        meta: Mapping[str, Any] = next((a for a in attrs.get(entity, []) if a["name"] == base), {})
        typ = str(meta.get("type", "String"))
        label = str(meta.get("label") or base)
        if entity == "account":
            label = "Account " + label
        if typ in NUMERIC_TYPES:
            unit = "money" if typ == "Money" else "count" if typ in ("Integer", "BigInt") else None
            out.append({"name": name, "kind": "number", "label": label, "source": name, "unit": unit})
        else:
            options = opts.get(entity, {}).get(base) or None
            boolean = typ == "Boolean"
            out.append(
                {
                    "name": name,
                    "kind": "category",
                    "label": label,
                    "source": name,
                    # Boolean labels keyed "1"/"0" whatever the metadata holds ({"true", "false"} or nothing)
                    "options": boolean_options(options) if boolean else options,
                    "boolean": boolean,
                    "text": typ in TEXT_TYPES,
                }
            )
    for d in DERIVED:
        out.append(
            {"name": d["name"], "kind": "number", "label": d["label"], "source": d["name"], "derived": True}
        )
    return out


# ---------------------------------------------------------------- helpers


def _utc(s: pd.Series | None, n: int) -> pd.Series:
    if s is None:
        return pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]")
    return pd.to_datetime(s, utc=True, errors="coerce").astype("datetime64[ns, UTC]")


def option_key(v: Any) -> str | None:
    """A lake value as an option-set key: "1"/"0" for Booleans, integral floats as integers, None when missing."""
    if v is None or v is pd.NA or (isinstance(v, float) and not np.isfinite(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


def _stage_name(v: Any) -> str | None:
    if v is None or v is pd.NA or (isinstance(v, float) and not np.isfinite(v)):
        return None
    t = re.sub(r"^\s*\d+\s*-\s*", "", str(v)).strip()
    return t or None


def _uniform(ids: pd.Series, salt: str = "") -> np.ndarray:
    """Deterministic u in [0.1, 0.9] per id (stable across runs and machines)."""
    out = np.empty(len(ids))
    for i, v in enumerate(ids.astype(str).to_numpy()):
        h = hashlib.blake2b((salt + v).encode(), digest_size=8).digest()
        out[i] = int.from_bytes(h, "big") / 2.0**64
    return 0.1 + 0.8 * out


def _months_before(now: pd.Timestamp, months: int) -> pd.Timestamp:
    return now - pd.DateOffset(months=months)


# The columns of `opportunitysalesprocess` (BPF instances) that building a frame reads: the rest need not be
# loaded (at 1,000,000 opportunities the whole table is about 1 GB in pandas).
BPF_COLUMNS = (
    "_opportunityid_value",
    "_processid_value",
    "_activestageid_value",
    "activestagestartedon",
    "traversedpath",
    "modifiedon",
)


def _active_bpf(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Latest BPF instance per opportunity: opportunityid, processid, activestageid, stagestart, traversed."""
    bpf = tables.get("opportunitysalesprocess")
    cols = ["opportunityid", "processid", "activestageid", "stagestart", "traversed"]
    if bpf is None or bpf.empty or "_opportunityid_value" not in bpf.columns:
        return pd.DataFrame(columns=cols)
    mod = _utc(bpf.get("modifiedon"), len(bpf)).to_numpy(dtype="datetime64[ns]")
    order = np.argsort(mod, kind="stable")  # by modification time (unknown last), then the last per id
    latest = order[~pd.Series(bpf["_opportunityid_value"].to_numpy()[order]).duplicated(keep="last").to_numpy()]

    def column(name: str) -> Any:  # the latest rows' values, strings kept in their (Arrow) array
        if name not in bpf.columns:
            return np.full(len(latest), None, dtype=object)
        return bpf[name].iloc[latest].reset_index(drop=True)

    return pd.DataFrame(
        {
            "opportunityid": column("_opportunityid_value").astype(str),
            "processid": column("_processid_value"),
            "activestageid": column("_activestageid_value"),
            "stagestart": _utc(column("activestagestartedon"), len(latest)).array,
            "traversed": column("traversedpath"),
        }
    )


def _process(metadata: Mapping[str, Any], bpf: str | None) -> dict[str, Any] | None:
    for p in metadata.get("processes", []) or []:
        if bpf is not None and str(p.get("workflowid")) == bpf:
            return dict(p)
    return None


def _select(opp: pd.DataFrame, config: ModelConfig, bpf_inst: pd.DataFrame) -> pd.Series:
    """Filter and BPF match (boolean mask)."""
    mask = pd.Series(True, index=opp.index)
    if config.filter_column:
        if config.filter_column in opp.columns:
            keys = opp[config.filter_column].map(option_key)
            mask &= keys.isin(set(config.filter_values)).to_numpy()
        else:
            mask &= False
    if config.business_process_flow is not None:
        proc = dict(zip(bpf_inst["opportunityid"], bpf_inst["processid"].astype(str), strict=False))
        mask &= (
            opp["opportunityid"]
            .astype(str)
            .map(proc)
            .eq(config.business_process_flow)
            .fillna(False)
            .to_numpy()
        )
    return mask


def _labels(opp: pd.DataFrame, config: ModelConfig) -> pd.Series:
    """1 won, 0 lost, NaN neither (from the chosen option set)."""
    col = opp.get(config.state_option_set)
    if col is None:
        return pd.Series(np.nan, index=opp.index)
    keys = col.map(option_key)
    won = keys.isin({str(v) for v in config.won_values})
    lost = keys.isin({str(v) for v in config.lost_values})
    return pd.Series(np.where(won, 1.0, np.where(lost, 0.0, np.nan)), index=opp.index)


def outcome_labels(opp: pd.DataFrame, config: ModelConfig) -> pd.Series:
    """`_labels` (1 won, 0 lost, NaN neither) computed once per distinct value: the closed deals whose
    outcomes feed the past win-rate features."""
    col = opp.get(config.state_option_set)
    if col is None:
        return pd.Series(np.nan, index=opp.index)
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    keys = [option_key(v) for v in uniques]
    won = np.array([k in {str(v) for v in config.won_values} for k in keys] + [False])
    lost = np.array([k in {str(v) for v in config.lost_values} for k in keys] + [False])
    return pd.Series(np.where(won[codes], 1.0, np.where(lost[codes], 0.0, np.nan)), index=opp.index)


def _with_account(
    frame: pd.DataFrame, tables: Mapping[str, pd.DataFrame], attributes: Sequence[str]
) -> pd.DataFrame:
    acc_cols = [a[len(ACCOUNT_PREFIX) :] for a in attributes if a.startswith(ACCOUNT_PREFIX)]
    acc = tables.get("account")
    if not acc_cols:
        return frame
    out = frame.copy()
    if (
        acc is None
        or acc.empty
        or "accountid" not in acc.columns
        or "_parentaccountid_value" not in frame.columns
    ):
        for c in acc_cols:
            out[ACCOUNT_PREFIX + c] = None
        return out
    a = acc.drop_duplicates("accountid").set_index(acc["accountid"].drop_duplicates().astype(str))
    keys = frame["_parentaccountid_value"].astype(object).where(frame["_parentaccountid_value"].notna(), None)
    for c in acc_cols:
        if c in a.columns:
            out[ACCOUNT_PREFIX + c] = keys.map(a[c].to_dict()).to_numpy()
        else:
            out[ACCOUNT_PREFIX + c] = None
    return out


def _past_outcomes(queries: pd.DataFrame, events: pd.DataFrame, key: str, prefix: str) -> pd.DataFrame:
    """For each query (key, t): counts of events with the same key closed strictly before t."""
    q = queries[[key, "_t", "_row"]].dropna(subset=[key, "_t"])
    q = q.assign(**{key: q[key].astype(str).astype(object), "_t": _utc(q["_t"], len(q)).array})
    q = q.sort_values("_t", kind="stable")
    ev = events.dropna(subset=[key, "_close"]).copy()
    ev[key] = ev[key].astype(str).astype(object)
    ev["_close"] = _utc(ev["_close"], len(ev)).array
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


def test_split(row_close: np.ndarray) -> tuple[np.ndarray, int, np.datetime64]:
    """The time-ordered split modeling.train repeats: (row order by close time, rows in the training part,
    the close time the test part starts at; far in the future when there is no test part)."""
    order = np.argsort(row_close, kind="stable")
    n_train = len(order) - max(int(np.ceil(len(order) * TEST_SHARE)), 1)
    test_from = row_close[order[n_train]] if n_train < len(order) else np.datetime64("2262-01-01", "ns")
    return order, n_train, test_from


def known_times(row_time: np.ndarray, row_close: np.ndarray) -> np.ndarray:
    """When each training row's frozen knowledge dates from: its as-of time, but for test rows no later than
    the test part's start. Scoring reads the similar-deals counts and the prior stored at training, so a test
    row (standing for a deal scored by a model trained before the test window) must not see the outcomes of
    earlier test deals through them. Live counts (account, owner) keep the row's own time, as scoring does."""
    _, _, test_from = test_split(row_close)
    return np.minimum(np.asarray(row_time, dtype="datetime64[ns]"), test_from)


def prior_as_of(times: np.ndarray, ev_close: np.ndarray, ev_y: np.ndarray) -> np.ndarray:
    """Per time, the win rate of the deals closed strictly before it ((won + 1) / (closed + 2)): the prior a
    training row's smoothed rates may use, known at its as-of time (never later outcomes)."""
    close = np.asarray(ev_close, dtype="datetime64[ns]")
    y = np.asarray(ev_y, dtype=float)
    keep = ~np.isnat(close) & np.isfinite(y)
    close, y = close[keep], y[keep]
    order = np.argsort(close, kind="stable")
    close, won = close[order], np.concatenate([[0.0], np.cumsum(y[order])])
    before = np.searchsorted(close, np.asarray(times, dtype="datetime64[ns]"), side="left")
    return (won[before] + 1.0) / (before + 2.0)


def _closed_events(opp: pd.DataFrame, config: ModelConfig) -> pd.DataFrame:
    y = _labels(opp, config)
    ev = pd.DataFrame(
        {
            "account": opp.get(
                "_parentaccountid_value", pd.Series([None] * len(opp), index=opp.index)
            ).astype(object),
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


def close_time(opp: pd.DataFrame) -> pd.Series:
    """actualclosedate, else modifiedon (closed deals without a close date keep their last change)."""
    n = len(opp)
    close = _utc(opp.get("actualclosedate"), n)
    mod = _utc(opp.get("modifiedon"), n)
    close.index = opp.index
    mod.index = opp.index
    return close.fillna(mod)


def _derive(
    rows: pd.DataFrame, events: pd.DataFrame, prior: float | np.ndarray, stats: Mapping[str, Any]
) -> pd.DataFrame:
    """Adds the DERIVED columns to `rows` (needs _t, _created, _stage_start, __stage__, account/owner ids);
    past rates are smoothed toward `prior` (one rate, or one per row)."""
    out = rows.copy()
    for c in ("_t", "_created", "_stage_start"):
        out[c] = _utc(out[c], len(out)).array
    day = np.timedelta64(1, "D")
    t = out["_t"]
    out["d_days_open"] = ((t - out["_created"]) / day).astype(float)
    out["d_days_in_stage"] = ((t - out["_stage_start"].fillna(out["_created"])) / day).astype(float)
    med = stats.get("won_median_days_in_stage", {})
    stage = (
        out[STAGE_COLUMN] if STAGE_COLUMN in out.columns else pd.Series([None] * len(out), index=out.index)
    )
    med_series = stage.map(med).astype(float)
    fallback = float(stats.get("won_median_days_in_stage_all", np.nan))
    med_series = med_series.fillna(fallback)
    out["d_stage_time_vs_won"] = out["d_days_in_stage"] / med_series.clip(lower=1.0)
    est = _utc(out.get("estimatedclosedate"), len(out))
    est.index = out.index
    out["d_close_slip_days"] = ((est - t) / day).astype(float)
    out["d_planned_cycle_days"] = ((est - out["_created"]) / day).astype(float)
    q = pd.DataFrame(
        {
            "_row": np.arange(len(out)),
            "_t": t.to_numpy(),
            "account": out.get("_parentaccountid_value", pd.Series([None] * len(out)))
            .astype(object)
            .to_numpy(),
            "owner": out.get("_ownerid_value", pd.Series([None] * len(out))).astype(object).to_numpy(),
        }
    )
    value = pd.to_numeric(out.get("estimatedvalue", pd.Series(np.nan, index=out.index)), errors="coerce")
    q["account_value"] = q["account"].astype(str) + "|" + pd.Series(value.to_numpy()).astype(str)
    q.loc[q["account"].isna(), "account_value"] = None
    acc = _past_outcomes(q, events, "account", "a_")
    own = _past_outcomes(q, events, "owner", "o_")
    accv = _past_outcomes(q, events, "account_value", "av_")
    k = PRIOR_STRENGTH
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


def _point_in_time(rows: pd.DataFrame, history: pd.DataFrame | None, columns: Sequence[str]) -> pd.DataFrame:
    """Replaces opportunity columns by the latest history version modified at or before the row's _t."""
    cols = [c for c in columns if not c.startswith(ACCOUNT_PREFIX)]
    if history is None or history.empty or "opportunityid" not in history.columns or not cols:
        return rows
    h = history
    if "_deleted" in h.columns:
        h = h[~h["_deleted"].fillna(False).astype(bool)]
    ht = _utc(h["modifiedon"] if "modifiedon" in h.columns else h.get("_synced_at"), len(h))
    keep = [c for c in cols if c in h.columns]
    hv = h[["opportunityid"] + keep].copy()
    hv["_ht"] = ht.array
    hv["opportunityid"] = hv["opportunityid"].astype(str)
    hv = hv.dropna(subset=["_ht"]).sort_values("_ht", kind="stable")
    left = rows[["opportunityid", "_t"]].copy()
    left["opportunityid"] = left["opportunityid"].astype(str)
    left["_row"] = np.arange(len(rows))
    left = left.dropna(subset=["_t"]).sort_values("_t", kind="stable")
    m = (
        pd.merge_asof(
            left,
            hv.rename(columns={c: "__h_" + c for c in keep}),
            left_on="_t",
            right_on="_ht",
            by="opportunityid",
            direction="backward",
        )
        .set_index("_row")
        .reindex(range(len(rows)))
    )
    out = rows.copy()
    found = m["_ht"].notna().to_numpy()
    for c in keep:
        if c in out.columns:
            out[c] = np.where(found, m["__h_" + c].to_numpy(dtype=object), out[c].to_numpy(dtype=object))
            out[c] = out[c].infer_objects()
    return out


def _late_changes(
    deals: pd.DataFrame, close: pd.Series, history: pd.DataFrame | None, columns: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Per opportunity attribute, over the closed deals whose history reaches back LATE_DAYS before their
    close and that hold a value at close: how many (`deals`) and how many of them got that final value only in
    those last days (`late`: blank or different LATE_DAYS before close). For leakage_report's history test."""
    cols = [c for c in columns if not c.startswith(ACCOUNT_PREFIX) and c in deals.columns]
    if history is None or history.empty or "opportunityid" not in history.columns or not cols or deals.empty:
        return {}
    ht = _utc(history["modifiedon"] if "modifiedon" in history.columns else history.get("_synced_at"), len(history))
    first = pd.Series(ht.array, index=history["opportunityid"].astype(str).to_numpy()).groupby(level=0).min()
    rows = deals[["opportunityid"] + cols].reset_index(drop=True)
    rows["opportunityid"] = rows["opportunityid"].astype(str)
    rows["_t"] = (_utc(pd.Series(close.to_numpy()), len(rows)) - pd.Timedelta(days=LATE_DAYS)).array
    seen = (rows["opportunityid"].map(first) <= rows["_t"]).to_numpy(dtype=bool)
    if not seen.any():
        return {}
    at_cut = _point_in_time(rows[seen].reset_index(drop=True), history, cols)
    final = rows[seen].reset_index(drop=True)
    out: dict[str, dict[str, int]] = {}
    for c in cols:
        now_v, then_v = final[c].astype(object), at_cut[c].astype(object)
        filled = now_v.notna().to_numpy()
        changed = then_v.isna().to_numpy() | (then_v.map(str) != now_v.map(str)).to_numpy()
        out[c] = {"deals": int(filled.sum()), "late": int((filled & changed).sum())}
    return out


def _stage_history(history: pd.DataFrame | None) -> pd.DataFrame:
    """(opportunityid, stage, entered) from opportunity_history's stepname changes."""
    if history is None or history.empty or "stepname" not in history.columns:
        return pd.DataFrame(columns=["opportunityid", "stage", "entered"])
    h = history
    t = _utc(h["modifiedon"] if "modifiedon" in h.columns else h.get("_synced_at"), len(h))
    s = pd.DataFrame(
        {
            "opportunityid": h["opportunityid"].astype(str).to_numpy(),
            "stage": h["stepname"].map(_stage_name).to_numpy(),
            "entered": t.array,
        }
    )
    s = s.dropna().sort_values(["opportunityid", "entered"], kind="stable")
    change = (s["stage"] != s.groupby("opportunityid")["stage"].shift()).to_numpy()
    return s[change]


# ---------------------------------------------------------------- public API


def _base(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    opp = tables.get("opportunity")
    if opp is None or "opportunityid" not in opp.columns:
        return pd.DataFrame(columns=["opportunityid"])
    return opp.drop_duplicates("opportunityid", keep="last").reset_index(drop=True)


HISTORY_COLUMNS = ("opportunityid", "_deleted", "_synced_at", "modifiedon", "stepname")


def history_columns(config: ModelConfig, metadata: Mapping[str, Any]) -> list[str]:
    """The columns of `opportunity_history` that building a training frame reads (point-in-time values of
    the model's opportunity attributes and the stage history): the rest need not be loaded."""
    attributes = (
        list(config.attributes)
        if config.attributes is not None
        else default_attributes(metadata, config.state_option_set)
    )
    return list(dict.fromkeys([*HISTORY_COLUMNS, *(a for a in attributes if not a.startswith(ACCOUNT_PREFIX))]))


def build_training_frame(
    tables: Mapping[str, pd.DataFrame], metadata: Mapping[str, Any], config: ModelConfig, now: datetime
) -> TrainingData:
    """Closed deals of the period -> training rows. Raises InsufficientDataError (422)."""
    now_ts = pd.Timestamp(now).tz_convert("UTC") if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz="UTC")
    start = _months_before(now_ts, config.training_months)
    opp = _base(tables)
    n = len(opp)
    attributes = (
        list(config.attributes)
        if config.attributes is not None
        else default_attributes(metadata, config.state_option_set)
    )
    bpf_inst = _active_bpf(tables)
    created = _utc(opp.get("createdon"), n)
    created.index = opp.index
    close = close_time(opp)
    y = _labels(opp, config)
    sel = _select(opp, config, bpf_inst).to_numpy()
    in_period = ((created >= start) & (close >= start) & (close <= now_ts) & (created <= close)).to_numpy()
    closed = opp[sel & in_period & y.notna().to_numpy()].copy()
    labels_closed = y[closed.index].astype(int)
    won, lost = int((labels_closed == 1).sum()), int((labels_closed == 0).sum())
    counts = {"won": won, "lost": lost, "closed": won + lost}

    process = _process(metadata, config.business_process_flow)
    stages = [
        str(s["stagename"])
        for s in sorted((process or {}).get("stages", []), key=lambda s: s.get("order", 0))
    ]
    history = tables.get("opportunity_history")
    stage_hist = _stage_history(history)
    prior = won / max(won + lost, 1)
    late = _late_changes(closed, close[closed.index], history, attributes)

    if config.per_stage:
        rows = _per_stage_rows(closed, created, close, stages, stage_hist, bpf_inst, process)
        last = stages[-1] if stages else None
        in_last = int(rows.loc[rows[STAGE_COLUMN] == last, "opportunityid"].nunique()) if last else 0
        counts["closed_in_last_stage"] = in_last
        if in_last < MIN_LAST_STAGE:
            raise InsufficientDataError(
                f"per-stage modelling needs at least {MIN_LAST_STAGE} opportunities closed in the last "
                f"stage ({last}) created and closed in the last {config.training_period}; found {in_last}",
                found={"closedInLastStage": in_last},
                needed={"closedInLastStage": MIN_LAST_STAGE},
            )
    else:
        if won < MIN_PER_CLASS or lost < MIN_PER_CLASS:
            raise InsufficientDataError(
                f"training needs at least {MIN_PER_CLASS} won and {MIN_PER_CLASS} lost opportunities "
                f"created and closed in the last {config.training_period}; found {won} won and {lost} lost",
                found={"won": won, "lost": lost},
                needed={"won": MIN_PER_CLASS, "lost": MIN_PER_CLASS},
            )
        rows = closed.copy()
        rows["_created"] = created[closed.index].array
        rows["_close"] = close[closed.index].array
        u = _uniform(rows["opportunityid"])
        rows["_t"] = rows["_created"] + (rows["_close"] - rows["_created"]) * u
        rows[STAGE_COLUMN] = None
        rows["_stage_start"] = pd.NaT
        rows = _stage_at(rows, stage_hist)
    rows = rows.reset_index(drop=True)
    rows["_y"] = _labels(rows, config).to_numpy()
    rows = _point_in_time(rows, history, attributes)
    rows = _with_account(rows, tables, attributes)

    for c in ("_t", "_created", "_stage_start", "_close"):
        rows[c] = _utc(rows[c], len(rows)).array
    won_rows = rows[rows["_y"] == 1]
    days_in_stage = (
        (won_rows["_t"] - won_rows["_stage_start"].fillna(won_rows["_created"])) / np.timedelta64(1, "D")
    ).astype(float)
    med = days_in_stage.groupby(won_rows[STAGE_COLUMN].astype(object)).median().dropna().to_dict()
    stats: dict[str, Any] = {
        "won_median_days_in_stage": {str(k): float(v) for k, v in med.items() if k is not None},
        "won_median_days_in_stage_all": float(days_in_stage.median()) if len(days_in_stage) else 1.0,
        "prior_win_rate": prior,
    }
    events = _closed_events(opp, config)
    open_raw = _open_rows(
        opp, tables, config, attributes, bpf_inst, stage_hist, now_ts, events, prior, stats, process,
        derive=False,
    )
    feats = feature_descriptors(attributes, metadata)
    deals = _with_account(closed.reset_index(drop=True), tables, attributes)
    deal_close = close[closed.index].to_numpy(dtype="datetime64[ns]")
    deal_y = labels_closed.to_numpy(dtype=int)
    # training rows smooth their past rates toward the win rate known at their as-of time (test rows: at the
    # test window's start, see known_times); open rows (scoring) toward the training win rate
    ev_close = _utc(events["_close"], len(events)).to_numpy(dtype="datetime64[ns]")
    known = known_times(rows["_t"].to_numpy(dtype="datetime64[ns]"), rows["_close"].to_numpy(dtype="datetime64[ns]"))
    row_prior = prior_as_of(known, ev_close, events["_y"].to_numpy())
    stats["similar"] = _similar(rows, deals, deal_close, deal_y, open_raw, feats, prior, row_prior, late)
    rate, n_similar, won_similar = similar.training_values(
        stats["similar"]["attributes"],
        rows,
        known,
        deals,
        deal_close,
        deal_y,
        row_prior,
    )
    rows["d_similar_win_rate"], rows["d_similar_closed"], rows["d_similar_won"] = rate, n_similar, won_similar
    rows = _derive(rows, events, row_prior, stats)
    open_data = _derive_open(open_raw, events, prior, stats)
    keep = ["opportunityid", STAGE_COLUMN] + [f["name"] for f in feats] + COUNT_COLUMNS
    frame = _ensure_columns(rows, keep)
    return TrainingData(
        frame=frame,
        labels=rows["_y"].to_numpy(dtype=int),
        closed_at=rows["_close"].to_numpy(),
        features=feats,
        open_frame=_ensure_columns(open_data, keep),
        counts=counts,
        stats=stats,
        stages=stages,
        period={"start": start.isoformat(), "end": now_ts.isoformat()},
        late=late,
    )


def _ensure_columns(frame: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    out = frame.copy()
    for c in cols:
        if c not in out.columns:
            out[c] = None
    return out[list(cols)].reset_index(drop=True)


def _stage_at(rows: pd.DataFrame, stage_hist: pd.DataFrame) -> pd.DataFrame:
    """Sets STAGE_COLUMN and _stage_start from the stage history at each row's _t (where known)."""
    if stage_hist.empty:
        return rows
    left = (
        pd.DataFrame(
            {
                "opportunityid": rows["opportunityid"].astype(str).to_numpy(),
                "_t": rows["_t"].array,
                "_row": np.arange(len(rows)),
            }
        )
        .dropna(subset=["_t"])
        .sort_values("_t", kind="stable")
    )
    sh = stage_hist.sort_values("entered", kind="stable")
    m = (
        pd.merge_asof(left, sh, left_on="_t", right_on="entered", by="opportunityid", direction="backward")
        .set_index("_row")
        .reindex(range(len(rows)))
    )
    out = rows.copy()
    found = m["stage"].notna().to_numpy()
    out[STAGE_COLUMN] = np.where(
        found, m["stage"].to_numpy(dtype=object), out[STAGE_COLUMN].to_numpy(dtype=object)
    )
    start = pd.Series(m["entered"].array, index=out.index)
    out["_stage_start"] = start.where(found, out["_stage_start"])
    return out


def _per_stage_rows(
    closed: pd.DataFrame,
    created: pd.Series,
    close: pd.Series,
    stages: Sequence[str],
    stage_hist: pd.DataFrame,
    bpf_inst: pd.DataFrame,
    process: Mapping[str, Any] | None,
) -> pd.DataFrame:
    """One row per closed deal and BPF stage it reached, observed inside that stage."""
    ids = closed["opportunityid"].astype(str)
    order = {s: i for i, s in enumerate(stages)}
    id_to_stage = {
        str(s["processstageid"]).lower(): str(s["stagename"]) for s in (process or {}).get("stages", [])
    }
    traversed = dict(zip(bpf_inst["opportunityid"].astype(str), bpf_inst["traversed"], strict=False))
    hist = {k: g for k, g in stage_hist.groupby("opportunityid")} if not stage_hist.empty else {}
    recs: list[tuple[int, str, Any, Any]] = []  # (row position, stage, entered, left)
    cr = created[closed.index].to_numpy()
    cl = close[closed.index].to_numpy()
    for pos, oid in enumerate(ids.to_numpy()):
        g = hist.get(oid)
        entries: list[tuple[str, Any]] = []
        if g is not None:
            entries = [(s, e) for s, e in zip(g["stage"], g["entered"], strict=False) if s in order]
        path = traversed.get(oid)
        names = (
            [id_to_stage.get(p.strip().lower()) for p in str(path).split(",")]
            if isinstance(path, str)
            else []
        )
        seq = [s for s in names if s in order]
        if len(seq) > len(entries):  # history too sparse: spread the traversed stages over the deal's life
            span = cl[pos] - cr[pos]
            entries = [(s, cr[pos] + span * (i / max(len(seq), 1))) for i, s in enumerate(seq)]
        for i, (s, e) in enumerate(entries):
            left = entries[i + 1][1] if i + 1 < len(entries) else cl[pos]
            recs.append((pos, s, e, left))
    if not recs:
        empty = closed.iloc[0:0].copy()
        for c in (STAGE_COLUMN, "_created", "_close", "_t", "_stage_start"):
            empty[c] = []
        return empty
    pos_arr = np.array([r[0] for r in recs])
    rows = closed.iloc[pos_arr].copy()
    rows[STAGE_COLUMN] = [r[1] for r in recs]
    rows["_stage_start"] = pd.to_datetime([r[2] for r in recs], utc=True)
    left = pd.to_datetime([r[3] for r in recs], utc=True)
    rows["_created"] = cr[pos_arr]
    rows["_close"] = cl[pos_arr]
    u = _uniform(rows["opportunityid"].astype(str) + "|" + rows[STAGE_COLUMN].astype(str))
    rows["_t"] = rows["_stage_start"] + (pd.Series(left, index=rows.index) - rows["_stage_start"]) * u
    return rows


def _open_rows(
    opp: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    config: ModelConfig,
    attributes: Sequence[str],
    bpf_inst: pd.DataFrame,
    stage_hist: pd.DataFrame,
    now_ts: pd.Timestamp,
    events: pd.DataFrame,
    prior: float,
    stats: Mapping[str, Any],
    process: Mapping[str, Any] | None,
    *,
    derive: bool = True,
) -> pd.DataFrame:
    n = len(opp)
    created = _utc(opp.get("createdon"), n)
    created.index = opp.index
    state = opp.get("statecode", pd.Series([None] * n, index=opp.index)).map(option_key)
    is_open = state.eq("0").to_numpy()
    recent = (created >= now_ts - pd.Timedelta(days=SCORING_WINDOW_DAYS)).to_numpy() & (
        created <= now_ts
    ).to_numpy()
    sel = _select(opp, config, bpf_inst).to_numpy()
    rows = opp[is_open & recent & sel].copy()
    rows["_created"] = created[rows.index].array
    rows["_t"] = now_ts
    rows["_close"] = pd.NaT
    id_to_stage = {
        str(s["processstageid"]).lower(): str(s["stagename"]) for s in (process or {}).get("stages", [])
    }
    inst = bpf_inst.set_index("opportunityid") if not bpf_inst.empty else None
    oid = rows["opportunityid"].astype(str)
    stage = rows.get("stepname", pd.Series([None] * len(rows), index=rows.index)).map(_stage_name)
    start = pd.Series(pd.NaT, index=rows.index, dtype="datetime64[ns, UTC]")
    if inst is not None:
        act = oid.map(inst["activestageid"].astype(str).str.lower().map(id_to_stage).to_dict())
        stage = act.where(act.notna(), stage)
        start = oid.map(inst["stagestart"].to_dict()).astype("datetime64[ns, UTC]")
    rows[STAGE_COLUMN] = stage.to_numpy(dtype=object)
    rows["_stage_start"] = start.to_numpy()
    if not stage_hist.empty:
        last = (
            stage_hist.sort_values("entered")
            .drop_duplicates("opportunityid", keep="last")
            .set_index("opportunityid")
        )
        hs = oid.map(last["entered"].to_dict()).astype("datetime64[ns, UTC]")
        rows["_stage_start"] = rows["_stage_start"].fillna(pd.Series(hs.to_numpy(), index=rows.index))
    rows = rows.reset_index(drop=True)
    rows = _with_account(rows, tables, attributes)
    return _derive_open(rows, events, prior, stats) if derive else rows


def _derive_open(
    rows: pd.DataFrame, events: pd.DataFrame, prior: float, stats: Mapping[str, Any]
) -> pd.DataFrame:
    """Derived columns of open opportunities; similar deals from the counts stored at training."""
    out = rows.copy()
    rate, n_similar, won_similar = similar.scoring_values(out, stats.get("similar"))
    out["d_similar_win_rate"], out["d_similar_closed"], out["d_similar_won"] = rate, n_similar, won_similar
    return _derive(out, events, prior, stats)


def _similar(
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


def build_scoring_frame(
    tables: Mapping[str, pd.DataFrame],
    metadata: Mapping[str, Any],
    config: ModelConfig,
    now: datetime,
    stats: Mapping[str, Any],
    *,
    opportunity_ids: Sequence[str] | None = None,
) -> ScoringData:
    """Eligible open opportunities (open, created within 2 years, filter, BPF) observed at `now`.
    `stats` is the version's meta["stats"]. Listed ids that are not eligible are returned in `skipped`."""
    now_ts = pd.Timestamp(now).tz_convert("UTC") if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz="UTC")
    opp = _base(tables)
    attributes = (
        list(config.attributes)
        if config.attributes is not None
        else default_attributes(metadata, config.state_option_set)
    )
    if opportunity_ids is not None:
        wanted = {str(i).lower() for i in opportunity_ids}
        opp = opp[opp["opportunityid"].astype(str).str.lower().isin(wanted)].reset_index(drop=True)
    bpf_inst = _active_bpf(tables)
    events = _closed_events(_base(tables), config)
    process = _process(metadata, config.business_process_flow)
    rows = _open_rows(
        opp,
        tables,
        config,
        attributes,
        bpf_inst,
        _stage_history(tables.get("opportunity_history")),
        now_ts,
        events,
        float(stats.get("prior_win_rate", 0.5)),
        stats,
        process,
    )
    skipped: list[dict[str, str]] = []
    if opportunity_ids is not None:
        got = set(rows["opportunityid"].astype(str).str.lower())
        present = set(opp["opportunityid"].astype(str).str.lower())
        for i in opportunity_ids:
            k = str(i).lower()
            if k not in got:
                skipped.append(
                    {
                        "opportunityid": str(i),
                        "reason": "not eligible (closed, older than 2 years, "
                        "outside the model's filter or BPF)"
                        if k in present
                        else "not found",
                    }
                )
    feats = feature_descriptors(attributes, metadata)
    keep = ["opportunityid", STAGE_COLUMN] + [f["name"] for f in feats] + COUNT_COLUMNS
    return ScoringData(frame=_ensure_columns(rows, keep), skipped=skipped)


def now_utc() -> datetime:
    return datetime.now(UTC)
