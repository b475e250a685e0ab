"""A run's status and report, computed from its documents whenever asked (pure: no I/O).

A run is `succeeded` when every batch has a result, `failed` once every batch has a result or a poison
marker and at least one has no result, `superseded` when a later scheduled run replaced it, else
`running`. The job of the run (`GET /api/jobs/{runId}`) shows the report as its result."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from connectors.clock import iso, parse
from functions.services.scoring.layout import RunDocs
from modeling.scoring_rules import TREND_TOLERANCE

if TYPE_CHECKING:
    from functions.services.scoring.inputs import Assignment

COUNTS = ("scored", "changed", "written", "unchanged", "skipped", "quotaStopped", "writeRequests", "writeFailed")
WRITE_FAILURES_SHOWN = 100


def plan_document(
    run_id: str,
    actor: str,
    clock: dt.datetime,
    as_of: dt.datetime,
    chosen: Assignment,
    batch_models: Sequence[str],
    *,
    requested: int | None,
    quota: int | None,
    seconds: float,
) -> dict[str, Any]:
    """`plan.json`: what the run scores (each batch's model), as of when, and what it leaves out."""
    return {
        "runId": run_id,
        "actor": actor,
        "createdAt": iso(clock),
        "asOf": iso(as_of),
        "scoredOn": clock.date().isoformat(),
        "month": clock.strftime("%Y-%m"),
        "models": chosen.models,
        "brokenModels": chosen.broken,
        "eligible": chosen.eligible,
        "batches": len(batch_models),
        "batchModels": list(batch_models),
        "ineligible": chosen.ineligible,
        "notScored": chosen.not_scored,
        "requestedIds": requested,
        "quota": quota,
        "trendTolerance": TREND_TOLERANCE,
        "plannedIn": round(seconds, 3),
    }


def summary(plan: dict[str, Any]) -> dict[str, Any]:
    """What `POST /api/score` answers of a plan."""
    return {k: plan.get(k) for k in ("runId", "eligible", "batches", "models", "notScored", "asOf")}


def interrupted(job: dict[str, Any]) -> dict[str, Any]:
    """The job of a run whose planner died (its heartbeat went stale before the plan was written)."""
    message = f'the worker planning this run stopped; POST /api/score {{"resume": "{job["id"]}"}} plans it again'
    return {**job, "status": "failed", "error": {"code": "PlanningInterrupted", "message": message}}


def summarize(docs: RunDocs) -> dict[str, Any]:
    """The run's report: the plan's counts, the batch results summed, the failed batches with their last
    error, and the status."""
    plan = docs.plan or {}
    totals = dict.fromkeys(COUNTS, 0)
    reasons: dict[str, int] = {}
    refused: list[dict[str, Any]] = []  # rows Dataverse refused (the next run sends them again)
    for _, res in sorted(docs.results.items()):
        for key in COUNTS:
            totals[key] += int(res.get(key) or 0)
        refused.extend((res.get("writeFailures") or [])[: WRITE_FAILURES_SHOWN - len(refused)])
        for reason, count in (res.get("skipReasons") or {}).items():
            reasons[reason] = reasons.get(reason, 0) + int(count)
    models = plan.get("batchModels") or []
    failures = [
        {
            "batch": i,
            "model": models[i] if i < len(models) else None,
            "reason": mark.get("reason"),
            "code": mark.get("code"),
            "attempts": mark.get("attempts"),
            "at": mark.get("at"),
        }
        for i, mark in sorted(docs.poisoned.items())
        if i not in docs.results
    ]
    report: dict[str, Any] = {
        "runId": docs.run_id,
        "actor": plan.get("actor"),
        "createdAt": plan.get("createdAt"),
        "asOf": plan.get("asOf"),
        "models": plan.get("models", []),
        "eligible": int(plan.get("eligible", 0)),
        **totals,
        "skipReasons": reasons,
        "ineligible": plan.get("ineligible", {}),
        "notScored": plan.get("notScored", []),
        "batches": docs.batches,
        "batchesDone": len(docs.results),
        "failures": failures,
        "writeFailures": refused,
        "quota": plan.get("quota"),
        "quotaReached": totals["quotaStopped"] > 0,
        "drift": plan.get("drift"),  # measured while planning a full run (None for listed ids)
        "status": _status(docs, failures),
    }
    if totals["quotaStopped"]:
        report["message"] = (
            f"monthly quota of {plan.get('quota')} scored records reached: "
            f"{totals['quotaStopped']} eligible records were not scored"
        )
    if docs.superseded is not None:
        report["supersededBy"] = docs.superseded.get("by")
    report["finishedAt"] = _finished_at(docs, report["status"])
    created, finished = parse(report["createdAt"]), parse(report["finishedAt"])
    report["durationSeconds"] = (finished - created).total_seconds() if created and finished else None
    return report


def _status(docs: RunDocs, failures: list[dict[str, Any]]) -> str:
    if docs.superseded is not None:
        return "superseded"
    if docs.plan is None:
        return "running"  # still planning (or killed while planning: the timer supersedes it)
    if not docs.pending():
        return "succeeded"
    if len(docs.results) + len(failures) == docs.batches:
        return "failed"
    return "running"


def _finished_at(docs: RunDocs, status: str) -> str | None:
    if status == "superseded":
        return str((docs.superseded or {}).get("at") or "") or None
    if status not in ("succeeded", "failed"):
        return None
    stamps = [r.get("finishedAt") for r in docs.results.values()] + [p.get("at") for p in docs.poisoned.values()]
    times = [t for t in (parse(s) for s in stamps if s) if t is not None]
    return iso(max(times)) if times else (docs.plan or {}).get("createdAt")


def job_fields(report: dict[str, Any]) -> dict[str, Any]:
    """The job record's status, error, result and finishedAt for a run's report."""
    status, run_id = report["status"], report["runId"]
    error = None
    if status == "superseded":
        error = {
            "code": "Superseded",
            "message": f"replaced by scoring run {report.get('supersededBy')} before it finished",
        }
    elif status == "failed":
        first = report["failures"][0]
        error = {
            "code": "BatchesFailed",
            "message": f"{len(report['failures'])} batch(es) failed after retries (first: batch {first['batch']}: "
            f'{first["reason"]}); POST /api/score {{"resume": "{run_id}"}} retries them',
        }
    job_status = {"superseded": "failed"}.get(status, status)
    return {"status": job_status, "error": error, "result": report, "finishedAt": report.get("finishedAt")}
