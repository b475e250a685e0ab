"""`GET /api/jobs/{id}`: a job's record; a scoring run's status and report are computed from its batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from functions.app_context import AppContext


def get_job(ctx: AppContext, job_id: str) -> dict[str, Any]:
    job = ctx.jobs.get(job_id)
    if job.get("kind") == "scoring":
        from functions.services.scoring import job_view

        return job_view(ctx, job)
    return job
