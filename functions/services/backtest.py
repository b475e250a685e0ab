"""Backtests of a model's configuration over past dates (POST / GET /api/models/{name}/backtest).

`start_backtest` checks the request (400 naming the field), the model (404) and that no backtest of it is
queued or running (409 `BacktestInProgress`), then queues a `backtest` job on the training queue (the
same worker runs it: `functions/models.py`). `run_backtest` reads the lake's tables once, replays each cut
date with `modeling.backtest.run_month` and stores the report and the per-opportunity scores it was computed
from in the model store (`model_store/backtests.py`); the report is also the job's result."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from connectors import telemetry
from connectors.clock import iso, utcnow
from connectors.jobs import FINISHED, JobNotFound
from functions.services.jobs import execute
from functions.services.models import STATUS_FIELDS, audited
from functions.services.training import load_metadata, load_tables
from model_store.store import ModelStore

if TYPE_CHECKING:
    from functions.app_context import AppContext

log = logging.getLogger(__name__)
TASK = "backtest"  # the `task` of a training-queue message that is a backtest
LOST = "the backtest's worker stopped (killed or timed out) without finishing; start it again"


def _unfinished(ctx: AppContext, name: str) -> dict[str, Any] | None:
    """The model's backtest job while it is queued or running (one whose worker died is ended first)."""
    job_id = ctx.model_store.backtests.job_id(name)
    if job_id is None:
        return None
    try:
        job = ctx.jobs.get(job_id)
    except JobNotFound:
        return None
    if job["status"] in FINISHED or ctx.jobs.abandon(job_id, LOST) is not None:
        return None
    return job


def start_backtest(
    ctx: AppContext, name: str, body: dict[str, Any], *, actor: str, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Validate, then queue the backtest; returns the job (202)."""
    from modeling.backtest import cut_dates
    from modeling.errors import ConflictError

    store: ModelStore = ctx.model_store

    def start() -> dict[str, Any]:
        store.get_config(name)  # 404 first: a request for no model is about the model
        cuts = [c.date().isoformat() for c in cut_dates(body, now or utcnow())]
        running = _unfinished(ctx, name)
        if running is not None:
            raise ConflictError(
                f"a backtest of model {name} is already {running['status']} (job {running['id']})",
                code="BacktestInProgress",
                jobId=running["id"],
            )
        job = ctx.jobs.create(TASK, {"model": name, "cutDates": cuts, "actor": actor})
        store.backtests.set_job(name, job["id"])
        message = {"jobId": job["id"], "model": name, "task": TASK, "cutDates": cuts, "actor": actor}
        ctx.queue(ctx.settings.training_queue).send(message)
        store.audit("backtest-requested", actor=actor, model=name, detail={"jobId": job["id"], "cutDates": cuts})
        log.info("queued backtest job=%s model=%s months=%d", job["id"], name, len(cuts))
        return job

    return audited(store, "backtest-requested", actor, name, start, detail={"fields": sorted(body)})


@telemetry.traced("backtest.run")
def run_backtest(
    ctx: AppContext, name: str, cuts: Sequence[str], *, actor: str = "anonymous", job_id: str | None = None
) -> dict[str, Any]:
    """Replay `cuts` (YYYY-MM-01) for model `name`, store the report and its scores; returns the report."""
    from modeling.backtest import Source, run_month, summary
    from modeling.config import ModelConfig
    from modeling.dataset.history import history_columns

    started = time.perf_counter()
    store: ModelStore = ctx.model_store
    doc = store.get_config(name)
    config = ModelConfig.from_json(doc)
    metadata = load_metadata(ctx.lake)
    src = Source(load_tables(ctx.lake, history_columns=history_columns(config, metadata)), metadata, config)
    readiness = (ctx.settings.readiness_auc_ready, ctx.settings.readiness_auc_ok)
    months = []
    for cut in cuts:
        month = run_month(
            src, pd.Timestamp(cut, tz="UTC"), readiness=readiness, threads=ctx.settings.training_threads
        )
        log.info("backtest model=%s cut=%s %s in %.1f s", name, cut, month.report["status"], month.report["seconds"])
        months.append(month)
    ran_at = iso(utcnow())
    report: dict[str, Any] = {
        "model": name,
        "jobId": job_id,
        "ranAt": ran_at,
        "actor": actor,
        "cutDates": list(cuts),
        "opportunities": int(len(src.opp)),
        "months": [m.report for m in months],
        "summary": summary([m.report for m in months]),
        "seconds": round(time.perf_counter() - started, 2),
        "configuration": {k: v for k, v in doc.items() if k not in STATUS_FIELDS},
    }
    scores = {
        "model": name,
        "jobId": job_id,
        "ranAt": ran_at,
        "months": {
            m.report["cutDate"]: {"ids": m.ids, "probabilities": m.probabilities, "outcomes": m.outcomes}
            for m in months
        },
    }
    store.get_config(name)  # a model deleted meanwhile keeps no backtest (404 ends the job failed)
    store.backtests.save(name, report, scores)
    detail = {"jobId": job_id, **report["summary"], "seconds": report["seconds"]}
    store.audit("backtest", actor=actor, model=name, detail=detail)
    return report


def run_backtest_job(ctx: AppContext, message: dict[str, Any]) -> dict[str, Any]:
    """The queue worker's body for a backtest message: the job ends succeeded with the report, or failed."""
    job_id = str(message.get("jobId") or "")
    cuts = [str(c) for c in message.get("cutDates") or []]
    actor = str(message.get("actor") or "anonymous")
    name = str(message["model"])
    return execute(
        ctx.jobs, job_id, lambda: run_backtest(ctx, name, cuts, actor=actor, job_id=job_id), what="backtest"
    )


def last_backtest(ctx: AppContext, name: str) -> dict[str, Any]:
    """The model's last finished backtest report (404 `BacktestNotFound` before the first), with the job of
    one queued or running now (`running`, else null)."""
    from modeling.errors import NotFoundError

    ctx.model_store.get_config(name)
    report = ctx.model_store.backtests.report(name)
    running = _unfinished(ctx, name)
    if report is None:
        pending = f"; job {running['id']} is {running['status']}" if running else ""
        raise NotFoundError(
            f"model {name} has no finished backtest yet{pending}; start one with POST /api/models/{name}/backtest",
            code="BacktestNotFound",
            model=name,
        )
    return {**report, "running": None if running is None else {"id": running["id"], "status": running["status"]}}
