"""What the admin console's Activity page shows (`GET /api/activity`): monthly scoring usage (this month and
the 5 before it, with the limit), the last sync's report and the last scoring runs' reports.

Usage is the quota's own count (distinct records scored in the month), kept only while a monthly limit is
in force (`LICENSE_TIER=enterprise` or `MONTHLY_SCORING_QUOTA`): `counted` says so."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from connectors.clock import utcnow
from functions.services.scoring import layout, quota
from functions.services.scoring.run import report

if TYPE_CHECKING:
    from functions.app_context import AppContext

MONTHS = 6
RUNS = 5


def months_back(now: dt.datetime, count: int = MONTHS) -> list[str]:
    """`YYYY-MM` of this month and the `count - 1` before it, newest first."""
    year, month = now.year, now.month
    out = []
    for _ in range(count):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out


def activity(ctx: AppContext, *, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    months = [quota.usage(ctx, m) for m in months_back(now)]
    sync = (ctx.lake.read_json("state/sync.json") or {}).get("lastReport")
    newest = sorted(layout.list_runs(ctx.lake), reverse=True)[:RUNS]  # run ids start with their UTC stamp
    return {
        "usage": {
            "limit": ctx.settings.monthly_quota,
            "counted": ctx.settings.monthly_quota is not None,
            "thisMonth": months[0],
            "months": months,
        },
        "lastSync": sync,
        "scoringRuns": [report(ctx, r) for r in newest],
    }
