"""Planning a scoring run: read the lake once, give each eligible opportunity one model, write one
Parquet input per batch and `plan.json`, and send one `{"runId", "batch"}` message per batch."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from connectors import telemetry
from connectors.clock import utcnow
from functions.services.scoring import active, drift, inputs, layout
from functions.services.scoring.common import message, new_run_id, parallel, to_arrow
from functions.services.scoring.report import plan_document
from modeling.errors import ConflictError
from modeling.scoring_rules import PublishedModel

if TYPE_CHECKING:
    from functions.app_context import AppContext

log = logging.getLogger(__name__)


def plan_run(
    ctx: AppContext,
    *,
    opportunity_ids: Sequence[str] | None = None,
    actor: str = "timer",
    run_id: str | None = None,
    batch_size: int | None = None,
    now: dt.datetime | None = None,
    exclusive: bool = True,
) -> dict[str, Any]:
    """Plan a run (all eligible open opportunities, or only `opportunity_ids`) and enqueue its batches of
    `batch_size` ids (default: the SCORING_BATCH_SIZE setting). The run id is also the id of its job, which
    beats while the run plans. `exclusive`: refused (ScoringInProgress) while another run is unfinished
    (the timer passes False: it superseded them). Returns the plan document."""
    run_id = run_id or new_run_id()
    active.claim(ctx, run_id, force=not exclusive)
    ids = None if opportunity_ids is None else list(opportunity_ids)
    ctx.jobs.create("scoring", {"actor": actor, "ids": len(ids or []), "opportunityIds": ids}, job_id=run_id)
    return _plan(ctx, run_id, ids, actor=actor, batch_size=batch_size, now=now)


def replan(ctx: AppContext, run_id: str, job: dict[str, Any]) -> dict[str, Any]:
    """Plan again a run whose planning died (its job stopped beating) or failed, with the same id and
    request: `POST /api/score {"resume": id}` of a run without a plan."""
    if job["status"] == "running" and not ctx.jobs.is_stale(job):
        raise ConflictError(f"scoring run {run_id} is still planning", code="PlanningInProgress", runId=run_id)
    active.claim(ctx, run_id)
    ctx.jobs.update(run_id, status="queued", error=None)
    params = job.get("params") or {}
    return _plan(ctx, run_id, params.get("opportunityIds"), actor=str(params.get("actor") or "resume"))


@telemetry.traced("scoring.plan")
def _plan(
    ctx: AppContext,
    run_id: str,
    opportunity_ids: Sequence[str] | None,
    *,
    actor: str,
    batch_size: int | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    telemetry.annotate(**{"scoring.run": run_id, "scoring.listed": len(opportunity_ids or [])})
    owner = uuid.uuid4().hex
    if ctx.jobs.claim(run_id, owner) is None:
        raise ConflictError(f"scoring run {run_id} is planned by another worker", code="PlanningInProgress")
    with ctx.jobs.heartbeat(run_id, owner):
        lake_inputs, chosen = _assign(ctx, run_id, opportunity_ids)
        # a whole population: how far it moved from each version's training records (None for listed ids)
        measured = drift.measure(ctx, run_id, lake_inputs, chosen) if opportunity_ids is None else None
        batches = _cut(chosen.frames, batch_size or ctx.settings.scoring_batch_size)
        parallel(
            lambda b: ctx.lake.write_parquet(layout.input_path(run_id, b[0]), to_arrow(b[1][1])),
            list(enumerate(batches)),
        )
        doc = plan_document(
            run_id, actor, now or utcnow(), lake_inputs.as_of, chosen, [model.key for model, _ in batches],
            requested=None if opportunity_ids is None else len(opportunity_ids), quota=ctx.settings.monthly_quota,
            seconds=time.perf_counter() - started,
        )  # fmt: skip
        doc["drift"] = measured
        ctx.lake.json.write(layout.plan_path(run_id), doc)
        inputs.record_broken(ctx, run_id, chosen.broken)
    sender = ctx.queue(ctx.settings.scoring_queue)
    for index in range(len(batches)):
        sender.send(message(run_id, index))
    if not chosen.models:
        log.warning("scoring run=%s: no published model; nothing to score", run_id)
    log.info(
        "scoring run=%s planned: eligible=%d batches=%d models=%s broken=%d in %.2f s",
        run_id,
        doc["eligible"],
        len(batches),
        ",".join(m["key"] for m in chosen.models) or "-",
        len(chosen.broken),
        doc["plannedIn"],
    )
    return doc


def _assign(ctx: AppContext, run_id: str, ids: Sequence[str] | None) -> tuple[inputs.LakeInputs, inputs.Assignment]:
    """Read the lake once (only what listed ids need) and give each eligible opportunity one model; a failure
    fails the run's job."""
    try:
        models = inputs.published_models(ctx)
        lake_inputs = inputs.read_all(ctx) if ids is None else inputs.read_listed(ctx, ids, models)
        return lake_inputs, inputs.assign(ctx, lake_inputs, models, ids)
    except Exception as exc:
        ctx.jobs.fail(run_id, str(getattr(exc, "code", type(exc).__name__)), str(exc)[:500])
        raise


def _cut(frames: Sequence[tuple[PublishedModel, pd.DataFrame]], size: int) -> list[tuple[PublishedModel, pd.DataFrame]]:
    """Each model's rows in batches of at most `size` ids (a batch never mixes models)."""
    return [
        (model, frame.iloc[start : start + size].reset_index(drop=True))
        for model, frame in frames
        for start in range(0, len(frame), size)
    ]
