"""Retention: the org's data after its subscription ends, and the lake's own upkeep.

- When the org is `expired` or `deleted` (ORG_STATUS, since ORG_STATUS_SINCE) syncs are refused, and 30
  days later the org's data is purged once: every lake blob except job records, and every blob of the model
  container except its audit log (models trained on the org's data are derived from it).
- Upkeep after a sync, at most once a day (`state/upkeep.json`): `optimize` (compaction) and `vacuum`
  (files older than VACUUM_HOURS that no recent version needs) on every Delta table, and sync reports older
  than REPORT_DAYS are deleted.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from connectors.clock import iso, parse, utcnow
from connectors.lake import Lake, delete_all_except

if TYPE_CHECKING:
    from functions.app_context import AppContext
    from model_store.store import ModelStore

log = logging.getLogger(__name__)

RETENTION_DAYS = 30
UPKEEP_EVERY = dt.timedelta(hours=24)
VACUUM_HOURS = 7 * 24  # time travel reaches back a week
REPORT_DAYS = 30
LEASE_NAME = "sync"
# Prefixes kept by the retention purge: job records and the purge marker itself are not org data.
_PURGE_KEEP = ("jobs/", "locks/", "retention/")
# The model container keeps its audit log (who did what, including the purge); the rest is derived data.
_MODEL_PURGE_KEEP = ("audit/",)


# ---------------------------------------------------------------------------------------------- upkeep
def upkeep(lake: Lake, tables: Sequence[str], *, now: dt.datetime | None = None, force: bool = False) -> dict[str, Any]:
    """Compact and vacuum the synced tables and their history, and delete old sync reports, once a day
    (call under the sync lease). A new lake starts the clock (its tables have nothing to compact yet).
    Returns what was done ({} when it was not due)."""
    now = now or utcnow()
    last = parse((lake.read_json("state/upkeep.json") or {}).get("at"))
    if not force and last is None:
        lake.write_json("state/upkeep.json", {"at": iso(now), "tables": {}, "reportsDeleted": 0})
        return {}
    if not force and last is not None and now - last < UPKEEP_EVERY:
        return {}
    done: dict[str, Any] = {"at": iso(now), "tables": {}}
    for table in tables:
        for path in (lake.current_path(table), lake.history_path(table)):
            done["tables"][path] = lake.tables.maintain(path, retention_hours=VACUUM_HOURS)
    done["reportsDeleted"] = prune_reports(lake, now)
    lake.write_json("state/upkeep.json", done)
    log.info(
        "lake upkeep: %d tables compacted and vacuumed, %d old reports deleted",
        len(done["tables"]),
        done["reportsDeleted"],
    )
    return done


def prune_reports(lake: Lake, now: dt.datetime, *, days: int = REPORT_DAYS) -> int:
    """Delete `reports/sync/<stamp>-<run>.json` older than `days` (their names start with the stamp)."""
    cutoff = (now - dt.timedelta(days=days)).strftime("%Y%m%dT%H%M%SZ")
    old = [p for p in lake.list("reports/sync/") if p.rsplit("/", 1)[-1][:16] < cutoff]
    return lake.delete_paths(old)


# ---------------------------------------------------------------------------------------------- org status
def check_org(ctx: AppContext, job_id: str | None) -> dict[str, Any] | None:
    """None when the org is active (the sync may run); else the refusal, with the purge when it is due."""
    s = ctx.settings
    if s.org_status == "active":
        return None
    result = retention(
        ctx.lake, org_status=s.org_status, since=s.org_status_since, now=_org_clock(ctx), models=ctx.model_store
    )
    return {"jobId": job_id, "skipped": True, "reason": f"org is {s.org_status}", "retention": result}


def _org_clock(ctx: AppContext) -> dt.datetime:
    """The org's clock (Dataverse's Date header); the machine's clock if Dataverse does not answer."""
    try:
        return ctx.dataverse.server_now(max_retries=0)
    except Exception as exc:  # noqa: BLE001 - any failure falls back to the local clock
        log.info("retention clock: Dataverse unreachable (%s); using the local clock", type(exc).__name__)
        return utcnow()


def retention(
    lake: Lake, *, org_status: str, since: str | None, now: dt.datetime, models: ModelStore | None = None
) -> dict[str, Any]:
    """The sync is refused; once RETENTION_DAYS have passed since `since` the org's data is purged, once,
    with the purge recorded in the model store's audit log."""
    start = parse(since)
    if start is None:
        return {"refused": True, "purged": False, "reason": f"org is {org_status} (no date given)"}
    due = start + dt.timedelta(days=RETENTION_DAYS)
    result: dict[str, Any] = {
        "refused": True, "orgStatus": org_status, "since": iso(start), "purgeDue": iso(due), "now": iso(now),
        "purged": False,
    }  # fmt: skip
    if now < due:
        log.warning(
            "sync refused: org is %s since %s; data will be purged on %s",
            org_status,
            result["since"],
            result["purgeDue"],
        )
        return result
    marker = lake.read_json("retention/purged.json")
    if marker and (models is None or "modelBlobs" in marker):
        result.update(purged=True, already=True, purgedAt=marker.get("purgedAt"))
        return result
    count = int((marker or {}).get("blobs", 0))
    if not marker:
        with lake.lease(LEASE_NAME, duration=15, wait=20):
            count = lake.delete_paths([n for n in lake.list("") if not n.startswith(_PURGE_KEEP)])
    doc: dict[str, Any] = {
        "purgedAt": (marker or {}).get("purgedAt") or iso(now), "orgStatus": org_status, "since": result["since"],
        "blobs": count,
    }  # fmt: skip
    if models is not None:
        doc["modelBlobs"] = result["modelBlobs"] = _purge_models(models, result, count)
    lake.write_json("retention/purged.json", doc)
    log.warning(
        "retention: org %s since %s; purged %d lake blobs and %s model blobs",
        org_status,
        result["since"],
        count,
        doc.get("modelBlobs", "no"),
    )
    result.update(purged=True, blobs=count, purgedAt=doc["purgedAt"])
    return result


def _purge_models(models: ModelStore, result: dict[str, Any], lake_blobs: int) -> int:
    count = delete_all_except(models.container, _MODEL_PURGE_KEEP)
    detail = {k: result[k] for k in ("orgStatus", "since", "purgeDue")}
    models.audit(
        "retention_purge",
        actor="retention",
        model=None,
        detail={**detail, "lakeBlobs": lake_blobs, "modelBlobs": count},
    )
    return count
