"""One sync run under the sync lease: metadata, then per table recover -> extract -> commit, then the
business process flows, the report and upkeep. Also the job, queue and timer entry points."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from connectors import telemetry
from connectors.clock import iso, stamp, utcnow
from connectors.dataverse import DataverseClient, DataverseNotFound
from connectors.dataverse_metadata import processes_from_rows
from connectors.jobs import JobNotFound
from connectors.lake import Lake, LeaseBusy
from functions.services.jobs import execute
from functions.services.jobs import record_poisoned as poisoned_job
from functions.services.sync import retention
from functions.services.sync.commit import commit_extract, recover
from functions.services.sync.extract import TABLES, Extract, TableMeta, TableSpec, extract_table
from modeling.errors import TypedError

if TYPE_CHECKING:
    from functions.app_context import AppContext

log = logging.getLogger(__name__)

LEASE_NAME = "sync"
METADATA_MAX_AGE = 6 * 3600
# The sync lease is the shortest a blob lease can be, renewed every third of it by the holder, so a holder
# that died frees it within LEASE_SECONDS; a queued job waits a little longer than that for it.
LEASE_SECONDS = 15
JOB_LEASE_WAIT = LEASE_SECONDS + 5.0


class SyncMessageError(TypedError):
    """A sync queue message this app cannot take (raised so the host retries it, then keeps it in the
    poison queue: it is never acknowledged and lost)."""

    code = "BadSyncMessage"


class SyncSkipped(TypedError):
    """A sync job that synced nothing (another sync held the lease, or the org is not active): the job
    ends `failed` with this code and the skip report in `error.details`."""

    code = "SyncSkipped"


# ---------------------------------------------------------------------------------------------- metadata
def read_metadata(
    client: DataverseClient, lake: Lake, specs: Sequence[TableSpec], *, refresh: bool, workers: int
) -> dict[str, TableMeta]:
    """Entity set, key and attributes of each table: from Dataverse (written to `metadata/`) on full syncs
    or when the lake's copy is older than METADATA_MAX_AGE; else from the lake."""
    cached = None if refresh else lake.read_json("metadata/tables.json")
    if isinstance(cached, dict) and time.time() - float(cached.get("fetched_at_epoch", 0)) < METADATA_MAX_AGE:
        entries = cached.get("tables", {})
        if all(isinstance(entries.get(s.logical, {}).get("attributes"), list) for s in specs):
            return {s.logical: TableMeta(s.logical, **entries[s.logical]) for s in specs}

    def one(spec: TableSpec) -> tuple[TableMeta | None, dict[str, Any]]:
        try:
            definition = client.entity_definition(spec.logical)
        except DataverseNotFound:
            log.warning("sync: table %s does not exist in this org; skipped", spec.logical)
            return None, {}
        attributes = client.attributes(spec.logical)
        lake.write_json(f"metadata/attributes/{spec.logical}.json", attributes)
        meta = TableMeta(
            spec.logical,
            entity_set=definition.get("EntitySetName") or spec.logical + "s",
            key=definition.get("PrimaryIdAttribute") or spec.logical + "id",
            attributes=attributes,
        )
        return meta, client.option_sets(spec.logical)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sync-meta") as pool:
        fetched = [(m, labels) for m, labels in pool.map(telemetry.in_this_context(one), specs) if m is not None]
    lake.write_json("metadata/optionsets.json", {m.logical: labels for m, labels in fetched})
    tables = {m.logical: {"entity_set": m.entity_set, "key": m.key, "attributes": m.attributes} for m, _ in fetched}
    lake.write_json("metadata/tables.json", {"fetched_at_epoch": time.time(), "tables": tables})
    return {m.logical: m for m, _ in fetched}


# ---------------------------------------------------------------------------------------------- one run
_threads: dict[str, ThreadPoolExecutor] = {}
_threads_lock = threading.Lock()


def _thread_of(table: str) -> ThreadPoolExecutor:
    """The long-lived thread that syncs `table`: the lake keeps opened Delta tables per thread, so the next
    sync in this process brings the table up to date (reading the commits since) instead of opening it
    again (reading its whole log); one thread per table makes that hold whichever tables finish first."""
    with _threads_lock:
        if table not in _threads:
            _threads[table] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sync-{table}")
        return _threads[table]


@telemetry.traced("sync.run")
def run_sync(
    lake: Lake,
    client: DataverseClient,
    *,
    full: bool = False,
    job_id: str | None = None,
    tables: Sequence[TableSpec] = TABLES,
    page_size: int = 5000,
    lease_wait: float = 0.0,
    workers: int = 3,
    temp_dir: str | None = None,
) -> dict[str, Any]:
    """Run one sync and return its report (camelCase). If another sync holds the lease beyond `lease_wait`
    seconds, do nothing and return a report with `"skipped": true`."""
    sync_id = uuid.uuid4().hex
    started, started_at = time.perf_counter(), utcnow()
    telemetry.annotate(**{"sync.id": sync_id, "sync.full": full, "job.id": job_id or ""})
    try:
        with lake.lease(LEASE_NAME, duration=LEASE_SECONDS, wait=lease_wait) as lease:
            log.info("sync %s started (job %s, full=%s)", sync_id, job_id, full)
            report = _run_locked(lake, client, sync_id, full, tables, page_size, workers, temp_dir, lambda: lease.lost)
    except LeaseBusy:
        log.warning("sync %s skipped: another sync is running (lease locks/%s.lock is held)", sync_id, LEASE_NAME)
        return {
            "runId": sync_id,
            "jobId": job_id,
            "skipped": True,
            "reason": "another sync is running (the sync lease is held)",
            "startedAt": iso(started_at),
        }
    report.update(jobId=job_id, startedAt=iso(started_at), durationS=round(time.perf_counter() - started, 3))
    for table, stats in report["tables"].items():
        labels = {"dataverse.table": table, "sync.mode": stats["mode"]}
        telemetry.ROWS_SYNCED.add(int(stats.get("fetched") or 0), labels)
    _write_report(lake, report)
    log.info(
        "sync %s done in %.1f s: %s",
        sync_id,
        report["durationS"],
        {t: (s["new"], s["changed"], s["deleted"]) for t, s in report["tables"].items()},
    )
    return report


def _run_locked(
    lake: Lake,
    client: DataverseClient,
    sync_id: str,
    full: bool,
    tables: Sequence[TableSpec],
    page_size: int,
    workers: int,
    temp_dir: str | None,
    lease_lost: Any,
) -> dict[str, Any]:
    t_meta = time.perf_counter()
    meta = read_metadata(client, lake, tables, refresh=full, workers=workers)
    metadata_s = round(time.perf_counter() - t_meta, 3)
    # The sync time is the org's clock (its Date header) so history lines up with createdon/modifiedon.
    synced_at = client.server_now().replace(microsecond=0)
    specs = [s for s in tables if s.logical in meta]

    running = threading.BoundedSemaphore(max(1, workers))  # tables synced at once

    def one(spec: TableSpec) -> tuple[str, dict[str, Any]]:
        with running:
            return sync_table(spec)

    def sync_table(spec: TableSpec) -> tuple[str, dict[str, Any]]:
        with lake.tables.pinned():  # this thread, under the lease, is the table's only writer
            return synced_table(spec)

    def synced_table(spec: TableSpec) -> tuple[str, dict[str, Any]]:
        t0 = time.perf_counter()
        recovered = recover(lake, spec.logical)
        extract = extract_table(
            lake, client, spec, meta[spec.logical], sync_id=sync_id, synced_at=synced_at,
            full=full, page_size=page_size, temp_dir=temp_dir,
        )  # fmt: skip
        try:
            if lease_lost():
                raise RuntimeError("the sync lease was lost; nothing committed")
            t_commit = time.perf_counter()
            commit_extract(lake, extract)
        finally:
            extract.discard()
        return spec.logical, _table_stats(extract, recovered, t0, t_commit)

    traced_one = telemetry.in_this_context(one)
    futures = [_thread_of(spec.logical).submit(traced_one, spec) for spec in specs]  # largest first (TABLES)
    wait(futures)  # every table ends under the lease, even when one fails
    results = dict(f.result() for f in futures)
    _write_processes(lake, results)
    upkeep = retention.upkeep(lake, [s.logical for s in specs])
    totals = {
        k: sum(int(r.get(k, 0)) for r in results.values()) for k in ("fetched", "new", "changed", "deleted", "pages")
    }
    return {
        "runId": sync_id,
        "skipped": False,
        "mode": "full" if all(r["mode"] == "full" for r in results.values()) else "incremental",
        "requestedFull": full,
        "metadataS": metadata_s,
        "syncedAt": iso(synced_at),
        "finishedAt": iso(),
        "tables": results,
        "totals": totals,
        "upkeep": upkeep,
        "requests": client.stats.get("requests"),
        "retries": client.stats.get("retries"),
        "throttled": client.stats.get("throttled"),
    }


def _table_stats(extract: Extract, recovered: bool, t0: float, t_commit: float) -> dict[str, Any]:
    stats: dict[str, Any] = dict(extract.stats)
    stats.update(
        mode=extract.mode,
        recovered=recovered,
        fetchS=round(t_commit - t0, 3),
        commitS=round(time.perf_counter() - t_commit, 3),
    )
    log.info(
        "sync %s: %s, %d pages, %d fetched, %d new, %d changed, %d deleted in %.2f s",
        extract.spec.logical, extract.mode, stats["pages"], stats["fetched"], stats["new"], stats["changed"],
        stats["deleted"], time.perf_counter() - t0,
    )  # fmt: skip
    return stats


def _write_processes(lake: Lake, results: dict[str, dict[str, Any]]) -> None:
    """`metadata/processes.json`: the opportunity BPFs and their stages, when workflows or stages changed."""
    if "workflow" not in results or "processstage" not in results:
        return
    changed = any(
        results[t]["new"] + results[t]["changed"] + results[t]["deleted"] for t in ("workflow", "processstage")
    )
    if changed or not lake.exists("metadata/processes.json"):
        workflows = lake.read_current("workflow").to_pylist()
        stages = lake.read_current("processstage").to_pylist()
        lake.write_json("metadata/processes.json", processes_from_rows(workflows, stages, "opportunity"))


def _write_report(lake: Lake, report: dict[str, Any]) -> None:
    """`reports/sync/<stamp>-<run>.json` and `state/sync.json` (the last report)."""
    lake.write_json(f"reports/sync/{stamp()}-{report['runId'][:8]}.json", report)
    lake.write_json("state/sync.json", {"lastReport": report, "updatedAt": report["finishedAt"]})


# ---------------------------------------------------------------------------------------------- entry points
def start(ctx: AppContext, *, full: bool, actor: str) -> dict[str, Any]:
    """Create a sync job and queue it for `sync_worker`; returns the job (status queued)."""
    job = ctx.jobs.create("sync", {"full": full, "actor": actor})
    ctx.queue(ctx.settings.sync_queue).send({"jobId": job["id"], "full": full, "lake": ctx.settings.lake_container})
    log.info("sync job %s queued (full=%s) by %s", job["id"], full, actor)
    return dict(job)


def run_checked(ctx: AppContext, *, full: bool, job_id: str | None = None, lease_wait: float = 0.0) -> dict[str, Any]:
    """Retention first (refuse, or purge, when the org is not active), then one sync."""
    refused = retention.check_org(ctx, job_id)
    if refused is not None:
        return refused
    return run_sync(ctx.lake, ctx.dataverse, full=full, job_id=job_id, lease_wait=lease_wait)


def run_job(ctx: AppContext, message: dict[str, Any]) -> dict[str, Any] | None:
    """The queue worker: run the job's sync and record its result or error on the job. A message for
    another lake raises (retried, then kept in the poison queue), so it is never silently dropped."""
    job_id = _own(ctx, message)
    try:
        ctx.jobs.get(job_id)
    except JobNotFound:
        log.error("sync job %s does not exist; message dropped", job_id)
        return None
    full = bool(message.get("full"))

    def work() -> dict[str, Any]:
        report = run_checked(ctx, full=full, job_id=job_id, lease_wait=JOB_LEASE_WAIT)
        if report.get("skipped"):  # nothing was synced: the job must not read as succeeded
            code = "OrgNotActive" if "retention" in report else LeaseBusy.code
            raise SyncSkipped(f"nothing synced: {report.get('reason')}", code=code, report=report)
        return report

    job = execute(ctx.jobs, job_id, work, what="sync")
    return job.get("result") if job["status"] == "succeeded" else None


def record_poisoned(ctx: AppContext, message: dict[str, Any]) -> dict[str, Any] | None:
    """The host gave up on a sync message (every delivery's worker died): its job ends `failed`, code
    WorkerLost. A message of another lake raises, so the host keeps it (in `<queue>-poison-poison`)."""
    _own(ctx, message)
    return poisoned_job(ctx, message, what="sync")


def _own(ctx: AppContext, message: dict[str, Any]) -> str:
    """The job id of a message of this lake; SyncMessageError for another lake's."""
    job_id = str(message.get("jobId") or message.get("job_id") or "")
    lake_name = message.get("lake")
    if lake_name and lake_name != ctx.settings.lake_container:
        raise SyncMessageError(f"sync job {job_id} belongs to lake {lake_name}, not {ctx.settings.lake_container}")
    return job_id


def run_scheduled(ctx: AppContext) -> dict[str, Any]:
    """The timer: an incremental sync (or a skip if one is running, or retention when the org is gone)."""
    return run_checked(ctx, full=False, lease_wait=0.0)
