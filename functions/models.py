"""Admin HTTP API of the models (DESIGN.md), the training queue worker and the auto-retrain timer.

Thin triggers: parse the request, call one function of `functions.services.models` / `.training` /
`.backtest`, shape the response. Long work (training, backtests) runs in `train_worker` on the
%TRAINING_QUEUE% queue: 202 + job."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from functions.api import route
from functions.app_context import get_context
from functions.http import BadRequest, accepted, caller_identity, handle_errors, if_match, json_body, json_response
from functions.services import backtest, training
from functions.services import models as admin

log = logging.getLogger(__name__)
bp = func.Blueprint()


def _name(req: func.HttpRequest) -> str:
    return req.route_params.get("name", "")


def _version_param(req: func.HttpRequest) -> str | None:
    return req.params.get("version")


@route(bp, "list_models")
@handle_errors
def list_models(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(admin.list_models(get_context()))


@route(bp, "create_model")
@handle_errors
def create_model(req: func.HttpRequest) -> func.HttpResponse:
    result = admin.create_model(get_context(), json_body(req, required=True), actor=caller_identity(req))
    return accepted(result["job"], model=result["model"], counts=result["counts"])


@route(bp, "get_model")
@handle_errors
def get_model(req: func.HttpRequest) -> func.HttpResponse:
    view, etag = admin.get_model(get_context(), _name(req))
    return json_response(view, headers={"ETag": etag})


@route(bp, "edit_model")
@handle_errors
def edit_model(req: func.HttpRequest) -> func.HttpResponse:
    view = admin.edit_model(
        get_context(),
        _name(req),
        json_body(req, required=True),
        actor=caller_identity(req),
        etag=if_match(req),
    )
    return json_response(view)


@route(bp, "delete_model")
@handle_errors
def delete_model(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(admin.delete_model(get_context(), _name(req), actor=caller_identity(req)))


@route(bp, "train_model")
@handle_errors
def train_model(req: func.HttpRequest) -> func.HttpResponse:
    body = json_body(req)
    if body:
        raise BadRequest(f"train takes no body fields, got {', '.join(sorted(body))}", code="UnknownField")
    job = admin.start_training(get_context(), _name(req), actor=caller_identity(req))
    return accepted(job, model=_name(req))


@route(bp, "publish_model")
@handle_errors
def publish_model(req: func.HttpRequest) -> func.HttpResponse:
    body = json_body(req)
    unknown = sorted(set(body) - {"version"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]}; publish takes only 'version'", code="UnknownField")
    version = body.get("version", _version_param(req))
    return json_response(admin.publish(get_context(), _name(req), version, actor=caller_identity(req)))


@route(bp, "revert_model")
@handle_errors
def revert_model(req: func.HttpRequest) -> func.HttpResponse:
    body = json_body(req)
    if body:
        raise BadRequest(f"revert takes no body fields, got {', '.join(sorted(body))}", code="UnknownField")
    return json_response(admin.revert(get_context(), _name(req), actor=caller_identity(req)))


@route(bp, "model_performance")
@handle_errors
def model_performance(req: func.HttpRequest) -> func.HttpResponse:
    segment = req.params.get("segment")
    return json_response(admin.performance(get_context(), _name(req), _version_param(req), segment))


@route(bp, "model_insights")
@handle_errors
def model_insights(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(admin.insights(get_context(), _name(req), _version_param(req)))


@route(bp, "model_audit")
@handle_errors
def model_audit(req: func.HttpRequest) -> func.HttpResponse:
    page = admin.audit_log(get_context(), _name(req), limit=req.params.get("limit"), before=req.params.get("before"))
    return json_response(page)


@route(bp, "start_backtest")
@handle_errors
def start_backtest(req: func.HttpRequest) -> func.HttpResponse:
    job = backtest.start_backtest(get_context(), _name(req), json_body(req), actor=caller_identity(req))
    return accepted(job, model=_name(req), cutDates=job["params"]["cutDates"])


@route(bp, "get_backtest")
@handle_errors
def get_backtest(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(backtest.last_backtest(get_context(), _name(req)))


@bp.function_name("train_worker")
@bp.queue_trigger(arg_name="msg", queue_name="%TRAINING_QUEUE%", connection="AzureWebJobsStorage")
def train_worker(msg: func.QueueMessage) -> None:
    """Runs one training job, or a backtest (`"task": "backtest"`). Every failure ends the job `failed` with
    its error (see run_training_job); a message that is neither is logged and dropped (retrying cannot fix
    it)."""
    try:
        message = json.loads(msg.get_body())
    except (ValueError, UnicodeDecodeError):
        log.error("train_worker: message %s is not JSON; dropped", msg.id)
        return
    if not isinstance(message, dict) or not message.get("jobId") or not message.get("model"):
        log.error("train_worker: message %s lacks jobId/model; dropped", msg.id)
        return
    run = backtest.run_backtest_job if message.get("task") == backtest.TASK else training.run_training_job
    job = run(get_context(), message)
    log.info("train_worker: job=%s model=%s ended %s", job["id"], message["model"], job["status"])


@bp.function_name("train_poison")
@bp.queue_trigger(arg_name="msg", queue_name="%TRAINING_QUEUE%-poison", connection="AzureWebJobsStorage")
def train_poison(msg: func.QueueMessage) -> None:
    """The host gave up on a training message (every delivery's worker died): the job and the model end
    `failed` with code WorkerLost, so the model can be trained again. Never raises."""
    training.record_poisoned(get_context(), msg.get_body())


@bp.function_name("retrain_timer")
@bp.timer_trigger(arg_name="timer", schedule="%RETRAIN_SCHEDULE%", run_on_startup=False, use_monitor=True)
def retrain_timer(timer: func.TimerRequest) -> None:
    jobs = training.retrain_due_models(get_context())
    log.info("retrain_timer: queued %d retraining job(s)", len(jobs))
