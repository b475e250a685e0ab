"""Reading the lake's current tables: the latest row per opportunity, the latest BPF instance, the model's
filter and BPF match, outcome labels and close times, account columns, and the shared value rules (UTC
times, option-set keys, stage names)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeling.config import ModelConfig
from modeling.dataset.attributes import ACCOUNT_PREFIX


def as_utc(s: pd.Series | None, n: int) -> pd.Series:
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


def stage_name(v: Any) -> str | None:
    if v is None or v is pd.NA or (isinstance(v, float) and not np.isfinite(v)):
        return None
    t = re.sub(r"^\s*\d+\s*-\s*", "", str(v)).strip()
    return t or None


def latest_opportunities(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    opp = tables.get("opportunity")
    if opp is None or "opportunityid" not in opp.columns:
        return pd.DataFrame(columns=["opportunityid"])
    return opp.drop_duplicates("opportunityid", keep="last").reset_index(drop=True)


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


def active_bpf(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Latest BPF instance per opportunity: opportunityid, processid, activestageid, stagestart, traversed."""
    bpf = tables.get("opportunitysalesprocess")
    cols = ["opportunityid", "processid", "activestageid", "stagestart", "traversed"]
    if bpf is None or bpf.empty or "_opportunityid_value" not in bpf.columns:
        return pd.DataFrame(columns=cols)
    mod = as_utc(bpf.get("modifiedon"), len(bpf)).to_numpy(dtype="datetime64[ns]")
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
            "stagestart": as_utc(column("activestagestartedon"), len(latest)).array,
            "traversed": column("traversedpath"),
        }
    )


def bpf_process(metadata: Mapping[str, Any], bpf: str | None) -> dict[str, Any] | None:
    for p in metadata.get("processes", []) or []:
        if bpf is not None and str(p.get("workflowid")) == bpf:
            return dict(p)
    return None


def selection_mask(opp: pd.DataFrame, config: ModelConfig, bpf_inst: pd.DataFrame) -> pd.Series:
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
        mask &= opp["opportunityid"].astype(str).map(proc).eq(config.business_process_flow).fillna(False).to_numpy()
    return mask


def outcome_labels(opp: pd.DataFrame, config: ModelConfig) -> pd.Series:
    """1 won, 0 lost, NaN neither (from the chosen option set), computed once per distinct value."""
    col = opp.get(config.state_option_set)
    if col is None:
        return pd.Series(np.nan, index=opp.index)
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    keys = [option_key(v) for v in uniques]
    won = np.array([k in {str(v) for v in config.won_values} for k in keys] + [False])
    lost = np.array([k in {str(v) for v in config.lost_values} for k in keys] + [False])
    return pd.Series(np.where(won[codes], 1.0, np.where(lost[codes], 0.0, np.nan)), index=opp.index)


def close_time(opp: pd.DataFrame) -> pd.Series:
    """actualclosedate, else modifiedon (closed deals without a close date keep their last change)."""
    n = len(opp)
    close = as_utc(opp.get("actualclosedate"), n)
    mod = as_utc(opp.get("modifiedon"), n)
    close.index = opp.index
    mod.index = opp.index
    return close.fillna(mod)


def with_account(frame: pd.DataFrame, tables: Mapping[str, pd.DataFrame], attributes: Sequence[str]) -> pd.DataFrame:
    acc_cols = [a[len(ACCOUNT_PREFIX) :] for a in attributes if a.startswith(ACCOUNT_PREFIX)]
    acc = tables.get("account")
    if not acc_cols:
        return frame
    out = frame.copy()
    if acc is None or acc.empty or "accountid" not in acc.columns or "_parentaccountid_value" not in frame.columns:
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


def ensure_columns(frame: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    out = frame.copy()
    for c in cols:
        if c not in out.columns:
            out[c] = None
    return out[list(cols)].reset_index(drop=True)
