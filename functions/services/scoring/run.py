"""A run after planning: its status (computed from the batch results when asked), resume, the poison
trigger's marker, and the scheduled run (supersede unfinished runs, delete old ones, plan a new one)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from connectors.clock import iso, utcnow
from connectors.jobs import JobNotFound
from functions.services.scoring import active, layout, scores
from functions.services.scoring.common import (
    RUN_RETENTION_DAYS,
    RunNotFound,
    RunSuperseded,
    ScoringError,
    message,
    new_run_id,
    parallel,
    parse_message,
    validate_run_id,
)
from functions.services.scoring.plan import plan_run, replan
from functions.services.scoring.report import interrupted, job_fields, summarize

if TYPE_CHECKING:
    from functions.app_context import AppContext

log = logging.getLogger(__name__)


def report(ctx: AppContext, run_id: str) -> dict[str, Any]:
    """The run's report and status, from its plan, batch results and poison markers."""
    return summarize(layout.load(ctx.lake, run_id))


def job_view(ctx: AppContext, job: dict[str, Any]) -> dict[str, Any]:
    """A scoring job as `GET /api/jobs/{id}` shows it: the record (creation, actor) with the status, error
    and report of the run. A run still planning, or deleted after RUN_RETENTION_DAYS, is its record."""
    docs = layout.load(ctx.lake, str(job["id"]))
    if docs.plan is None and docs.superseded is None:
        return interrupted(job) if ctx.jobs.is_stale(job) else job  # a dead planner: resume plans it again
    return {**job, **job_fields(summarize(docs))}


def resume(ctx: AppContext, run_id: Any) -> dict[str, Any]:
    """Send again every batch of the run without a result (poisoned ones included: their markers go)."""
    run_id = validate_run_id(run_id)
    docs = layout.load(ctx.lake, run_id)
    if docs.superseded is not None:
        raise RunSuperseded(f"scoring run {run_id} was superseded; start a new run")
    if docs.plan is None:
        try:
            job = ctx.jobs.get(run_id)
        except JobNotFound as exc:
            raise RunNotFound(f"no scoring run {run_id}") from exc
        planned = replan(ctx, run_id, job)
        return {"runId": run_id, "reenqueued": list(range(int(planned["batches"]))), "state": "replanned"}
    pending = docs.pending()
    if pending:
        active.claim(ctx, run_id)
    stale = [layout.poison_path(run_id, i) for i in pending] + [layout.error_path(run_id, i) for i in pending]
    ctx.lake.delete_paths([p for p in stale if p in docs.names])
    sender = ctx.queue(ctx.settings.scoring_queue)
    for index in pending:
        sender.send(message(run_id, index))
    log.info("scoring run=%s resumed: %d batches sent again", run_id, len(pending))
    return {"runId": run_id, "reenqueued": pending, "state": "resumed" if pending else "complete"}


def record_poisoned(ctx: AppContext, body: bytes | str | Mapping[str, Any]) -> dict[str, Any] | None:
    """The host gave up on a batch (`<queue>-poison`): leave a marker with the last error its attempts
    recorded. Never raises for a message that is not ours (logged and dropped)."""
    try:
        run_id, index = parse_message(body)
    except ScoringError as exc:
        log.warning("poisoned scoring message dropped: %s", exc)
        return None
    if ctx.lake.read_json(layout.plan_path(run_id)) is None:
        log.warning("poisoned message of unknown scoring run=%s dropped", run_id)
        return None
    if ctx.lake.read_json(layout.result_path(run_id, index)) is not None:
        log.info("poisoned message for scoring run=%s batch=%d ignored: the batch is done", run_id, index)
        return None
    error = ctx.lake.read_json(layout.error_path(run_id, index)) or {}
    marker = {
        "batch": index,
        "reason": error.get("lastError") or "no error recorded (the worker died or timed out)",
        "code": error.get("code"),
        "attempts": int(error.get("attempts", 0)),
        "at": iso(),
    }
    ctx.lake.json.write(layout.poison_path(run_id, index), marker)
    log.error(
        "scoring run=%s batch=%d poisoned after %d attempts: %s", run_id, index, marker["attempts"], marker["reason"]
    )
    return marker


def scheduled_run(ctx: AppContext, *, actor: str = "timer", now: dt.datetime | None = None) -> dict[str, Any]:
    """The timer's run. Runs older than RUN_RETENTION_DAYS are deleted; unfinished earlier runs are
    superseded rather than resumed (the new run rescores everything from the newer snapshot against the
    score state, which already holds whatever they wrote); then a new run is planned."""
    run_id = new_run_id()
    runs = layout.list_runs(ctx.lake)
    docs = dict(zip(runs, parallel(lambda r: layout.load(ctx.lake, r, runs[r]), list(runs)), strict=True))
    mark = {"by": run_id, "at": iso(now)}
    stale = sorted(r for r, d in docs.items() if not d.finished)
    for old in stale:
        docs[old].superseded = mark
    pruned = _prune(ctx, docs, (now or utcnow()) - dt.timedelta(days=RUN_RETENTION_DAYS))
    for old in set(stale) - set(pruned):
        ctx.lake.json.write(layout.superseded_path(old), mark)
    if stale:
        log.warning("scoring: %d unfinished runs superseded by run=%s: %s", len(stale), run_id, ",".join(stale[:5]))
    try:
        scores.maintain(ctx.lake)
    except Exception:  # noqa: BLE001 - maintenance must never stop the day's run
        log.exception("scoring: maintenance of the score tables failed; retried tomorrow")
    plan = plan_run(ctx, actor=actor, run_id=run_id, now=now, exclusive=False)
    return {**plan, "superseded": stale, "pruned": pruned}


def _prune(ctx: AppContext, docs: Mapping[str, layout.RunDocs], cutoff: dt.datetime) -> list[str]:
    """Delete runs planned before `cutoff`; each job record keeps the run's final report."""
    old = sorted(r for r, d in docs.items() if (layout.started_at(r, d.plan) or cutoff) < cutoff)
    for run_id in old:
        try:
            ctx.jobs.update(run_id, **job_fields(summarize(docs[run_id])), runDeleted=iso())
        except JobNotFound:
            pass
        ctx.lake.delete_paths(docs[run_id].names)
    if old:
        log.info("scoring: %d runs older than %d days deleted", len(old), RUN_RETENTION_DAYS)
    return old
