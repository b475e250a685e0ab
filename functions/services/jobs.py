"""Jobs: running a queued job (sync, training) and what `GET /api/jobs/{id}` shows.

`execute` is the one place that claims a job record, runs its work under a heartbeat and ends the record
`succeeded` with the result or `failed` with the error's code and message, or, when the work stopped early
to go on in another delivery (it returned `Unfinished`), re-sends its message and gives the job back
(`queued`, with its progress) for that delivery to claim. Failures are recorded, not
re-raised, so the host does not retry work a retry would not fix (sync and training jobs). A redelivered
message of a finished job, or of one whose worker is alive (it beats), does nothing; one whose worker died
(no heartbeat for `STALE_AFTER_SECONDS`) takes the job over. A scoring run's job is not ended this way: its
status and report are computed from its batches whenever it is read (`get_job`)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connectors.jobs import JobNotFound, JobStore

if TYPE_CHECKING:
    from functions.app_context import AppContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unfinished:
    """What a job's work returns when it stopped before the host's time limit with work left: `resend`
    queues the job's message again (the work keeps its own progress, so that delivery goes on from it)."""

    resend: Callable[[], None]
    progress: Any = None


def execute(jobs: JobStore, job_id: str, work: Callable[[], Any], *, what: str) -> dict[str, Any]:
    """Claim `job_id`, run `work()` while beating, and record how it ended; returns the job record (as it
    is, without running anything, when the job is finished or another live worker runs it)."""
    owner = uuid.uuid4().hex
    claimed = jobs.claim(job_id, owner)
    if claimed is None:
        job = jobs.get(job_id)
        log.info("%s job=%s is %s; this delivery does nothing", what, job_id, job["status"])
        return job
    with jobs.heartbeat(job_id, owner):
        try:
            result = work()
        except Exception as exc:  # noqa: BLE001 - every failure ends the job with its error
            code = str(getattr(exc, "code", "") or type(exc).__name__)
            log.warning("%s job=%s failed: %s", what, job_id, code)
            return jobs.fail(job_id, code, str(exc)[:2000] or code, details=getattr(exc, "details", None))
    if isinstance(result, Unfinished):
        # message first: should the release fail, that delivery takes the job over once it goes stale
        result.resend()
        log.info("%s job=%s goes on in another delivery: %s", what, job_id, result.progress)
        return jobs.release(job_id, owner, result.progress) or jobs.get(job_id)
    return jobs.succeed(job_id, result)


def job_id_of(body: bytes | str | Mapping[str, Any]) -> str | None:
    """The `jobId` of a sync or training queue message (None when the message is not one)."""
    import json

    try:
        message = body if isinstance(body, Mapping) else json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    value = message.get("jobId") if isinstance(message, Mapping) else None
    return value if isinstance(value, str) and value else None


def record_poisoned(ctx: AppContext, body: bytes | str | Mapping[str, Any], *, what: str) -> dict[str, Any] | None:
    """The host gave up on a job's message (every delivery died or timed out): end the job `failed`,
    code `WorkerLost`. Never raises for a message that is not ours (logged and dropped)."""
    job_id = job_id_of(body)
    try:
        reason = f"the {what} worker stopped on every delivery (killed or timed out); start it again"
        job = ctx.jobs.abandon(job_id or "", reason, force=True)
    except JobNotFound:
        log.warning("poisoned %s message without a known job dropped", what)
        return None
    if job is not None:
        log.error("%s job=%s failed: its message was poisoned", what, job_id)
    return job


def get_job(ctx: AppContext, job_id: str) -> dict[str, Any]:
    """The job record; for a scoring run, with the status, error and report of its batches. A running job
    shows `heartbeatAgeS` (a worker that stopped beating is taken over or failed: docs/CONTRACTS.md)."""
    job = ctx.jobs.get(job_id)
    if job.get("kind") == "scoring":
        from functions.services.scoring import job_view

        return job_view(ctx, job)
    age = ctx.jobs.heartbeat_age(job)
    return job if age is None else {**job, "heartbeatAgeS": round(age, 1)}
