"""Jobs: running a queued job (sync, training) and what `GET /api/jobs/{id}` shows.

`execute` is the one place that starts a job record, runs its work and ends the record `succeeded` with
the result or `failed` with the error's code and message. Failures are recorded, not re-raised, so the host
does not retry work a retry would not fix (sync and training jobs). A scoring run's job is not ended this
way: its status and report are computed from its batches whenever it is read (`get_job`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from connectors.jobs import JobStore

if TYPE_CHECKING:
    from functions.app_context import AppContext

log = logging.getLogger(__name__)


def execute(jobs: JobStore, job_id: str, work: Callable[[], Any], *, what: str) -> dict[str, Any]:
    """Start `job_id`, run `work()` and record how it ended; returns the job record."""
    jobs.start(job_id)
    try:
        result = work()
    except Exception as exc:  # noqa: BLE001 - every failure ends the job with its error
        code = str(getattr(exc, "code", "") or type(exc).__name__)
        log.warning("%s job=%s failed: %s", what, job_id, code)
        return jobs.fail(job_id, code, str(exc)[:2000] or code)
    return jobs.succeed(job_id, result)


def get_job(ctx: AppContext, job_id: str) -> dict[str, Any]:
    """The job record; for a scoring run, with the status, error and report of its batches."""
    job = ctx.jobs.get(job_id)
    if job.get("kind") == "scoring":
        from functions.services.scoring import job_view

        return job_view(ctx, job)
    return job
