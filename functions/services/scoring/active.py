"""One scoring run at a time per org: `scoring/active.json` names the run that holds the org, claimed with
an ETag-conditioned write (`JsonBlobs.update`). A run holds it while it is planning (its job beats) or has
batches with neither a result nor a poison marker; a second run is refused meanwhile (409
`ScoringInProgress`, naming the run to follow). The timer takes it over, since it supersedes every
unfinished run first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connectors.clock import iso, parse, utcnow
from connectors.jobs import JobNotFound
from functions.services.scoring import layout
from modeling.errors import ConflictError

if TYPE_CHECKING:
    from functions.app_context import AppContext

ACTIVE = "scoring/active.json"


class ScoringInProgress(ConflictError):
    """Another scoring run of this org is not finished (HTTP 409); `details.runId` names it."""

    def __init__(self, run_id: str):
        super().__init__(
            f"scoring run {run_id} is still in progress; follow it with GET /api/jobs/{run_id} "
            "and start a new run once it has finished",
            code="ScoringInProgress",
            runId=run_id,
        )


def claim(ctx: AppContext, run_id: str, *, force: bool = False) -> None:
    """Make `run_id` the org's active run; ScoringInProgress when another run still holds it."""

    def take(doc: Any) -> dict[str, Any]:
        holder = str((doc or {}).get("runId") or "")
        if not force and holder and holder != run_id and holds(ctx, doc):
            raise ScoringInProgress(holder)
        return {"runId": run_id, "at": iso()}

    ctx.lake.json.update(ACTIVE, take)


def holds(ctx: AppContext, doc: dict[str, Any]) -> bool:
    """Whether the run named in `doc` still holds the org: planning with a live heartbeat, or planned with
    a batch that has neither a result nor a poison marker (and not superseded)."""
    run_id = str(doc["runId"])
    docs = layout.load(ctx.lake, run_id)
    if docs.superseded is not None:
        return False
    if docs.plan is not None:
        return any(i not in docs.results and i not in docs.poisoned for i in range(docs.batches))
    try:
        job = ctx.jobs.get(run_id)
    except JobNotFound:  # claimed a moment ago, its job not written yet (or it died right there)
        at = parse(doc.get("at"))
        return at is not None and (utcnow() - at).total_seconds() < ctx.jobs.stale_after_s
    return job["status"] == "running" and not ctx.jobs.is_stale(job)
