"""Accuracy per segment for `GET /api/models/{name}/performance` (docs/MODELING.md "Accuracy per segment"):
the version's test records (their calibrated probability, outcome and stage, kept in its meta at training)
grouped by owner, by stage when observed, by region (the account's `address1_country`) and by an
admin-chosen opportunity or account column (`?segment=budgetstatus`, `?segment=account.industrycode`).
Owners, accounts and the chosen column are read from the lake's current tables for the test ids only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.compute as pc

from connectors.lake import Lake
from modeling.dataset.attributes import ACCOUNT_PREFIX, NUMERIC_TYPES
from modeling.dataset.tables import option_key
from modeling.errors import InvalidInput
from modeling.features import MISSING, boolean_options
from modeling.insights import number_bins, value_keys
from modeling.segments import MIN_SEGMENT_CLOSED, by_segment, kept_rows

if TYPE_CHECKING:
    from functions.app_context import AppContext

REGION = ACCOUNT_PREFIX + "address1_country"
MAX_SEGMENT_LENGTH = 100


def segment_performance(ctx: AppContext, meta: Mapping[str, Any], segment: str | None) -> dict[str, Any]:
    """{"minClosed", "segments": {"owner": [...], "stage": [...], "region": [...], <segment>: [...]}};
    `available` false (with the reason) for a version trained before its test scores were kept.
    An unknown `segment` is 400 `InvalidSegment` naming it."""
    from functions.services.training import load_metadata

    metadata = load_metadata(ctx.lake)
    chosen = _column(segment, metadata) if segment else None
    rows = kept_rows(meta.get("test") or {})
    if rows is None:
        return {"available": False, "reason": "trained before test scores were kept: retrain to see segments"}
    frame = _values(ctx.lake, rows, [REGION] + ([chosen] if chosen else []))
    p, y = rows["p"].to_numpy(), rows["won"].to_numpy()
    users = _names(ctx.lake, "systemuser", "systemuserid", "fullname", frame["_ownerid_value"])
    out = {
        "owner": by_segment(p, y, frame["_ownerid_value"].tolist(), users),
        "stage": by_segment(p, y, rows["stage"].tolist()),
    }
    if _attribute(REGION, metadata) is not None:
        out["region"] = by_segment(p, y, frame[REGION].tolist())
    if chosen:
        keys, labels = _keys(frame[chosen], chosen, metadata)
        out[chosen] = by_segment(p, y, keys, labels)
    return {"available": True, "records": int(len(rows)), "minClosed": MIN_SEGMENT_CLOSED, "segments": out}


def _entity(name: str) -> tuple[str, str]:
    """("account", column) for account.<column>, else ("opportunity", name)."""
    return ("account", name[len(ACCOUNT_PREFIX) :]) if name.startswith(ACCOUNT_PREFIX) else ("opportunity", name)


def _attribute(name: str, metadata: Mapping[str, Any]) -> Mapping[str, Any] | None:
    entity, base = _entity(name)
    return next((a for a in metadata["attributes"].get(entity, []) if a.get("name") == base), None)


def _column(segment: str, metadata: Mapping[str, Any]) -> str:
    name = segment.strip().lower()
    if len(name) > MAX_SEGMENT_LENGTH or _attribute(name, metadata) is None:
        shown = segment[:MAX_SEGMENT_LENGTH]
        raise InvalidInput(
            f"segment {shown!r} is not a column of the synced opportunity table (or account.<column> of the "
            "account table)",
            code="InvalidSegment",
            field="segment",
        )
    return name


def _values(lake: Lake, rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per test row: its owner and the segment `columns` (opportunity columns, or account.<column>; None
    where unknown)."""
    ids = sorted(set(rows["opportunityid"]))
    wanted = ["_ownerid_value", "_parentaccountid_value"] + [c for c in columns if not c.startswith(ACCOUNT_PREFIX)]
    opp = _read(lake, "opportunity", "opportunityid", ids, list(dict.fromkeys(wanted)))
    out = rows[["opportunityid"]].merge(opp, on="opportunityid", how="left")
    acc_cols = [c[len(ACCOUNT_PREFIX) :] for c in columns if c.startswith(ACCOUNT_PREFIX)]
    accounts = sorted({str(v) for v in out["_parentaccountid_value"].dropna()})
    acc = _read(lake, "account", "accountid", accounts, acc_cols)
    out = out.merge(acc.rename(columns={c: ACCOUNT_PREFIX + c for c in acc_cols}), how="left",
                    left_on="_parentaccountid_value", right_on="accountid")  # fmt: skip
    return out.astype(object).where(out.notna(), None)


def _read(lake: Lake, table: str, key: str, ids: list[str], columns: list[str]) -> pd.DataFrame:
    """`columns` of the rows of `table` whose `key` is in `ids` (absent columns: None), keyed lower-case."""
    schema = lake.tables.schema(Lake.current_path(table))
    present = [c for c in columns if schema is not None and c in schema.names]
    found = pd.DataFrame(columns=[key, *present])
    if schema is not None and key in schema.names and ids:
        read = lake.tables.read(Lake.current_path(table), [key, *present], filters=pc.field(key).isin(ids))
        if read is not None:
            found = read.to_pandas()
    found[key] = found[key].astype(str).str.lower()
    for c in columns:
        if c not in found.columns:
            found[c] = None
    return found.drop_duplicates(key, keep="last")


def _names(lake: Lake, table: str, key: str, label: str, ids: pd.Series) -> dict[str, str]:
    found = _read(lake, table, key, sorted({str(v) for v in ids.dropna()}), [label])
    return {k: str(v) for k, v in zip(found[key], found[label], strict=True) if v is not None}


def _keys(values: pd.Series, column: str, metadata: Mapping[str, Any]) -> tuple[list[Any], dict[str, str]]:
    """Segment keys of a chosen column: numbers in quartile bins (the insights' round edges), choices by
    option value with their labels, anything else by value."""
    attr = _attribute(column, metadata) or {}
    if attr.get("type") in NUMERIC_TYPES:
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        unit = {"Money": "money", "Integer": "count", "BigInt": "count"}.get(str(attr.get("type")))
        binned = value_keys(x, {"kind": "number", "bins": number_bins(x, unit), "unit": unit})
        return [None if k == MISSING else k for k in binned], {}
    entity, base = _entity(column)
    options = (metadata.get("optionsets") or {}).get(entity, {}).get(base) or {}
    if attr.get("type") == "Boolean":
        options = boolean_options(options)
    keys = [option_key(v) for v in values]
    return keys, {str(k): str(v) for k, v in options.items()}
