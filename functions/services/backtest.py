"""Backtests of a model's configuration over past dates (POST / GET /api/models/{name}/backtest).

`start_backtest` checks the request (400 naming the field), the model (404) and that no backtest of it is
queued or running (409 `BacktestInProgress`), then queues a `backtest` job on the training queue (the
same worker runs it: `functions/models.py`). `run_backtest` reads the lake's tables once per delivery and
replays each cut date with `modeling.backtest.run_month`, saving every finished month in the model store
(`model_store/backtests.py`). A month costs about one training, so a delivery starts another only while
BACKTEST_DELIVERY_SECONDS allow it (the host stops a function after 10 minutes); with months left it gives
the job back and queues its message again, and that delivery (or the redelivery of one whose worker died)
goes on from the saved months. Once every month is in, the report and the per-opportunity scores it was
computed from are stored; the report is also the job's result."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from connectors import telemetry
from connectors.clock import iso, utcnow
from connectors.jobs import FINISHED, JobNotFound
from functions.services.jobs import Unfinished, execute
from functions.services.models import STATUS_FIELDS, audited
from functions.services.training import load_metadata, load_tables
from model_store.store import ModelStore
from modeling.errors import TypedError

if TYPE_CHECKING:
    from functions.app_context import AppContext

log = logging.getLogger(__name__)
TASK = "backtest"  # the `task` of a training-queue message that is a backtest
LOST = "the backtest's worker stopped (killed or timed out) without finishing; start it again"
CUT = re.compile(r"\d{4}-\d{2}-01")
# A delivery starts another month only if, after the slowest month so far times this, it is still within
# BACKTEST_DELIVERY_SECONDS (months differ: their training rows grow toward the present).
MONTH_MARGIN = 1.25


class BacktestMessageError(TypedError):
    """A backtest message this app cannot take (its cut dates are not YYYY-MM-01)."""

    code = "BadBacktestMessage"


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


def run_backtest(
    ctx: AppContext, name: str, cuts: Sequence[str], *, actor: str = "anonymous", job_id: str = ""
) -> dict[str, Any]:
    """Replay `cuts` (YYYY-MM-01) for model `name` in one go, store the report and its scores; returns the
    report (benchmarks and tests call this; the queue worker calls `replay`)."""
    report = replay(ctx, name, cuts, actor=actor, job_id=job_id, resend=None)
    assert isinstance(report, dict)
    return report


@telemetry.traced("backtest.run")
def replay(
    ctx: AppContext,
    name: str,
    cuts: Sequence[str],
    *,
    actor: str,
    job_id: str,
    resend: Callable[[], None] | None,
) -> dict[str, Any] | Unfinished:
    """Replay `cuts` for model `name`, going on from the months job `job_id` saved before (a job id keeps
    every finished month); store the report and its scores and return the report. With `resend`, a
    delivery whose time is up returns `Unfinished` instead."""
    from modeling.backtest import Source, run_month
    from modeling.config import ModelConfig
    from modeling.dataset.history import history_columns

    if not cuts or not all(isinstance(c, str) and CUT.fullmatch(c) for c in cuts):
        raise BacktestMessageError(f"a backtest message needs cut dates YYYY-MM-01, got {list(cuts)[:3]!r}")
    started = time.perf_counter()
    store: ModelStore = ctx.model_store
    doc = store.get_config(name)
    saved = {cut: store.backtests.month(name, job_id, cut) if job_id else None for cut in cuts}
    months = {cut: month for cut, month in saved.items() if month is not None}
    budget = ctx.settings.backtest_delivery_seconds
    src = None
    slowest = max((float(m["report"]["seconds"]) for m in months.values()), default=0.0)
    for cut in (c for c in cuts if c not in months):
        elapsed = time.perf_counter() - started
        if resend is not None and src is not None and elapsed + MONTH_MARGIN * slowest > budget:
            return Unfinished(resend, {"monthsDone": len(months), "months": len(cuts)})
        if src is None:  # read the tables only when a month is left to run
            config = ModelConfig.from_json(doc)
            metadata = load_metadata(ctx.lake)
            tables = load_tables(ctx.lake, history_columns=history_columns(config, metadata))
            src = Source(tables, metadata, config)
        month = run_month(
            src,
            pd.Timestamp(cut, tz="UTC"),
            readiness=(ctx.settings.readiness_auc_ready, ctx.settings.readiness_auc_ok),
            threads=ctx.settings.training_threads,
        )
        log.info("backtest model=%s cut=%s %s in %.1f s", name, cut, month.report["status"], month.report["seconds"])
        months[cut] = {
            "report": month.report, "ids": month.ids, "probabilities": month.probabilities,
            "outcomes": month.outcomes, "opportunities": int(len(src.opp)),
        }  # fmt: skip
        if job_id:
            store.backtests.save_month(name, job_id, cut, months[cut])
        slowest = max(slowest, float(month.report["seconds"]))
    report, scores = _assemble(name, doc, cuts, months, actor=actor, job_id=job_id)
    store.get_config(name)  # a model deleted meanwhile keeps no backtest (404 ends the job failed)
    store.backtests.save(name, report, scores)
    detail = {"jobId": job_id, **report["summary"], "seconds": report["seconds"]}
    store.audit("backtest", actor=actor, model=name, detail=detail)
    return report


def _assemble(
    name: str,
    doc: dict[str, Any],
    cuts: Sequence[str],
    months: dict[str, dict[str, Any]],
    *,
    actor: str,
    job_id: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report (camelCase) and the per-opportunity scores of a backtest whose every month is done."""
    from modeling.backtest import summary

    ran_at = iso(utcnow())
    ordered = [months[cut] for cut in cuts]
    report: dict[str, Any] = {
        "model": name,
        "jobId": job_id or None,
        "ranAt": ran_at,
        "actor": actor,
        "cutDates": list(cuts),
        "opportunities": int(ordered[-1]["opportunities"]),
        "months": [m["report"] for m in ordered],
        "summary": summary([m["report"] for m in ordered]),
        "seconds": round(sum(float(m["report"]["seconds"]) for m in ordered), 2),
        "configuration": {k: v for k, v in doc.items() if k not in STATUS_FIELDS},
    }
    scores = {
        "model": name,
        "jobId": job_id or None,
        "ranAt": ran_at,
        "months": {
            cut: {"ids": m["ids"], "probabilities": m["probabilities"], "outcomes": m["outcomes"]}
            for cut, m in zip(cuts, ordered, strict=True)
        },
    }
    return report, scores


def run_backtest_job(ctx: AppContext, message: dict[str, Any]) -> dict[str, Any]:
    """The queue worker's body for a backtest message: the job ends succeeded with the report, or failed."""
    job_id = str(message.get("jobId") or "")
    cuts = [str(c) for c in message.get("cutDates") or []]
    actor = str(message.get("actor") or "anonymous")
    name = str(message["model"])

    def resend() -> None:
        ctx.queue(ctx.settings.training_queue).send(message)

    return execute(
        ctx.jobs,
        job_id,
        lambda: replay(ctx, name, cuts, actor=actor, job_id=job_id, resend=resend),
        what="backtest",
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
