"""Sync triggers: the `SYNC_SCHEDULE` timer, `POST /api/sync` (202 + job) and the `sync-jobs` queue worker."""

from __future__ import annotations

import json
import logging

import azure.functions as func
from azure.functions.timer import TimerRequest

from functions.api import route
from functions.app_context import get_context
from functions.http import BadRequest, accepted, caller_identity, handle_errors, json_body
from functions.services import sync as sync_jobs

log = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("sync_timer")
@bp.timer_trigger(schedule="%SYNC_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def sync_timer(timer: TimerRequest) -> None:
    report = sync_jobs.run_scheduled(get_context())
    log.info("sync_timer: %s", {k: report.get(k) for k in ("runId", "skipped", "reason")})


@route(bp, "start_sync")
@handle_errors
def start_sync(req: func.HttpRequest) -> func.HttpResponse:
    body = json_body(req)
    unknown = sorted(set(body) - {"full"})
    if unknown:
        raise BadRequest(
            f"unknown field(s): {', '.join(unknown)}; only 'full' is accepted", code="UnknownField"
        )
    full = body.get("full", False)
    if not isinstance(full, bool):
        raise BadRequest("'full' must be true or false", code="InvalidField")
    job = sync_jobs.start(get_context(), full=full, actor=caller_identity(req))
    return accepted(job)


@bp.function_name("sync_worker")
@bp.queue_trigger(arg_name="msg", queue_name="%SYNC_QUEUE%", connection="AzureWebJobsStorage")
def sync_worker(msg: func.QueueMessage) -> None:
    message = _message(msg, "sync_worker")
    if message is not None:
        sync_jobs.run_job(get_context(), message)


@bp.function_name("sync_poison")
@bp.queue_trigger(arg_name="msg", queue_name="%SYNC_QUEUE%-poison", connection="AzureWebJobsStorage")
def sync_poison(msg: func.QueueMessage) -> None:
    """The host gave up on a sync message: its job ends `failed` (WorkerLost) instead of staying `running`."""
    message = _message(msg, "sync_poison")
    if message is not None:
        sync_jobs.record_poisoned(get_context(), message)


def _message(msg: func.QueueMessage, trigger: str) -> dict[str, object] | None:
    """The message's JSON object, or None (logged) when it is not one."""
    try:
        message = json.loads(msg.get_body())
    except (ValueError, UnicodeDecodeError):
        log.error("%s: message %s is not JSON; dropped", trigger, msg.id)
        return None
    if not isinstance(message, dict):
        log.error("%s: message %s is not a JSON object; dropped", trigger, msg.id)
        return None
    return message
