"""Scoring triggers: the daily timer, POST /api/score, GET /api/opportunities/{id}/score, the queue
worker (one scoring batch per message) and the poison-queue handler. Each parses its input, calls one
service function and shapes the output."""

from __future__ import annotations

import logging

import azure.functions as func

from functions.api import route
from functions.app_context import get_context
from functions.http import BadRequest, accepted, caller_identity, handle_errors, json_body, json_response
from functions.services import scoring

log = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("scoring_timer")
@bp.timer_trigger(schedule="%SCORING_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def scoring_timer(timer: func.TimerRequest) -> None:
    # Earlier unfinished runs are superseded and old ones deleted (docs/SCORING.md), then a run is planned.
    plan = scoring.scheduled_run(get_context(), actor="timer")
    log.info(
        "scoring timer: run=%s eligible=%d batches=%d superseded=%d deleted=%d",
        plan["runId"],
        plan["eligible"],
        plan["batches"],
        len(plan["superseded"]),
        len(plan["pruned"]),
    )


@route(bp, "start_scoring")
@handle_errors
def start_scoring(req: func.HttpRequest) -> func.HttpResponse:
    body = json_body(req)
    unknown = sorted(set(body) - {"opportunityIds", "resume"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; allowed: opportunityIds, resume", code="UnknownField")
    ctx = get_context()
    actor = caller_identity(req)
    if "resume" in body:
        resumed = scoring.resume(ctx, body["resume"])
        return accepted(scoring.job_view(ctx, ctx.jobs.get(resumed["runId"])), resume=resumed)
    if "opportunityIds" in body:
        status, result = scoring.score_now(ctx, body["opportunityIds"], actor=actor)
        if status == 202:
            return accepted(result["job"], run=result["run"])
        return json_response(result, status=status)
    plan = scoring.plan_run(ctx, actor=actor)
    return accepted(scoring.job_view(ctx, ctx.jobs.get(plan["runId"])), run=scoring.summary(plan))


@route(bp, "get_opportunity_score")
@handle_errors
def get_opportunity_score(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(scoring.get_score(get_context(), req.route_params.get("id", "")))


@bp.function_name("score_worker")
@bp.queue_trigger(arg_name="msg", queue_name="%SCORING_QUEUE%", connection="AzureWebJobsStorage")
def score_worker(msg: func.QueueMessage) -> None:
    # One scoring batch. A failure raises: the host retries the message and finally moves it to
    # <queue>-poison (host.json maxDequeueCount); the batch keeps its last error for the poison trigger.
    scoring.handle_message(get_context(), msg.get_body())


@bp.function_name("score_poison")
@bp.queue_trigger(arg_name="msg", queue_name="%SCORING_QUEUE%-poison", connection="AzureWebJobsStorage")
def score_poison(msg: func.QueueMessage) -> None:
    # The host gave up on a batch: leave its poison marker (with the last error), so the run reads
    # `failed` with the batch listed once every other batch is done.
    scoring.record_poisoned(get_context(), msg.get_body())
