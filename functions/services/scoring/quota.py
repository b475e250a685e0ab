"""The monthly scoring quota (`LICENSE_TIER=enterprise`: 1,500 a month; `MONTHLY_SCORING_QUOTA` overrides).

Counted durably as the set of DISTINCT opportunities scored in the calendar month (UTC), in
`scoring/quota/<YYYY-MM>.json`; a batch claims its ids before scoring, under the document's ETag (so
parallel batches never exceed it). Rescoring an opportunity already counted this month is free, so a
redelivered batch claims nothing twice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from connectors import telemetry
from connectors.clock import iso

if TYPE_CHECKING:
    from functions.app_context import AppContext


def path(month: str) -> str:
    return f"scoring/quota/{month}.json"


def claim(ctx: AppContext, month: str, ids: Sequence[str], limit: int | None) -> list[str]:
    """The ids of `ids` that may be scored this month (all of them without a quota), claimed durably."""
    if limit is None:
        return list(ids)

    def new_ids(doc: Any) -> list[str]:
        counted = set((doc or {}).get("ids", []))
        return [i for i in dict.fromkeys(ids) if i not in counted][: max(0, limit - len(counted))]

    def add(doc: Any) -> dict[str, Any]:
        current = dict(doc or {"month": month, "ids": []})
        total = sorted(set(current.get("ids", [])) | set(new_ids(current)))
        return {**current, "limit": limit, "ids": total, "used": len(total), "updatedAt": iso()}

    stored = ctx.lake.read_json(path(month))
    if new_ids(stored):  # something to count: under the document's ETag (parallel batches never exceed it)
        stored = ctx.lake.json.update(path(month), add)
    counted = set((stored or {}).get("ids", []))
    telemetry.QUOTA_USED.set(len(counted), {"month": month, "limit": limit})
    return [i for i in ids if i in counted]


def usage(ctx: AppContext, month: str) -> dict[str, Any]:
    doc = ctx.lake.read_json(path(month)) or {}
    return {"month": month, "limit": ctx.settings.monthly_quota, "used": len(doc.get("ids", []))}
