"""What `opportunity_history` tells: attribute values as of a time (point in time), the stage history and
the stage at a time, and the attributes that got their final value only just before close (for the
leakage guard's history test)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeling.config import ModelConfig
from modeling.dataset.attributes import ACCOUNT_PREFIX, model_attributes
from modeling.dataset.tables import as_utc, stage_name
from modeling.features import STAGE_COLUMN
from modeling.leakage import LATE_DAYS

HISTORY_COLUMNS = ("opportunityid", "_deleted", "_synced_at", "modifiedon", "stepname")


def history_columns(config: ModelConfig, metadata: Mapping[str, Any]) -> list[str]:
    """The columns of `opportunity_history` that building a training frame reads (point-in-time values of
    the model's opportunity attributes and the stage history): the rest need not be loaded."""
    attributes = model_attributes(config, metadata)
    return list(dict.fromkeys([*HISTORY_COLUMNS, *(a for a in attributes if not a.startswith(ACCOUNT_PREFIX))]))


def point_in_time(rows: pd.DataFrame, history: pd.DataFrame | None, columns: Sequence[str]) -> pd.DataFrame:
    """Replaces opportunity columns by the latest history version modified at or before the row's _t."""
    cols = [c for c in columns if not c.startswith(ACCOUNT_PREFIX)]
    if history is None or history.empty or "opportunityid" not in history.columns or not cols:
        return rows
    h = history
    if "_deleted" in h.columns:
        h = h[~h["_deleted"].fillna(False).astype(bool)]
    ht = as_utc(h["modifiedon"] if "modifiedon" in h.columns else h.get("_synced_at"), len(h))
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


def stage_history(history: pd.DataFrame | None) -> pd.DataFrame:
    """(opportunityid, stage, entered) from opportunity_history's stepname changes."""
    if history is None or history.empty or "stepname" not in history.columns:
        return pd.DataFrame(columns=["opportunityid", "stage", "entered"])
    h = history
    t = as_utc(h["modifiedon"] if "modifiedon" in h.columns else h.get("_synced_at"), len(h))
    s = pd.DataFrame(
        {
            "opportunityid": h["opportunityid"].astype(str).to_numpy(),
            "stage": h["stepname"].map(stage_name).to_numpy(),
            "entered": t.array,
        }
    )
    s = s.dropna().sort_values(["opportunityid", "entered"], kind="stable")
    change = (s["stage"] != s.groupby("opportunityid")["stage"].shift()).to_numpy()
    return s[change]


def stage_at(rows: pd.DataFrame, stage_hist: pd.DataFrame) -> pd.DataFrame:
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
    out[STAGE_COLUMN] = np.where(found, m["stage"].to_numpy(dtype=object), out[STAGE_COLUMN].to_numpy(dtype=object))
    start = pd.Series(m["entered"].array, index=out.index)
    out["_stage_start"] = start.where(found, out["_stage_start"])
    return out


def late_changes(
    deals: pd.DataFrame, close: pd.Series, history: pd.DataFrame | None, columns: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Per opportunity attribute, over the closed deals whose history reaches back LATE_DAYS before their
    close and that hold a value at close: how many (`deals`) and how many of them got that final value only in
    those last days (`late`: blank or different LATE_DAYS before close). For leakage_report's history test."""
    cols = [c for c in columns if not c.startswith(ACCOUNT_PREFIX) and c in deals.columns]
    if history is None or history.empty or "opportunityid" not in history.columns or not cols or deals.empty:
        return {}
    ht = as_utc(history["modifiedon"] if "modifiedon" in history.columns else history.get("_synced_at"), len(history))
    first = pd.Series(ht.array, index=history["opportunityid"].astype(str).to_numpy()).groupby(level=0).min()
    rows = deals[["opportunityid"] + cols].reset_index(drop=True)
    rows["opportunityid"] = rows["opportunityid"].astype(str)
    rows["_t"] = (as_utc(pd.Series(close.to_numpy()), len(rows)) - pd.Timedelta(days=LATE_DAYS)).array
    seen = (rows["opportunityid"].map(first) <= rows["_t"]).to_numpy(dtype=bool)
    if not seen.any():
        return {}
    at_cut = point_in_time(rows[seen].reset_index(drop=True), history, cols)
    final = rows[seen].reset_index(drop=True)
    out: dict[str, dict[str, int]] = {}
    for c in cols:
        now_v, then_v = final[c].astype(object), at_cut[c].astype(object)
        filled = now_v.notna().to_numpy()
        changed = then_v.isna().to_numpy() | (then_v.map(str) != now_v.map(str)).to_numpy()
        out[c] = {"deals": int(filled.sum()), "late": int((filled & changed).sum())}
    return out
