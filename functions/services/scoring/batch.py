"""One scoring batch, as the queue worker runs it: idempotent, so the host's retries and redeliveries
never write a row twice (docs/SCORING.md "A batch, step by step")."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from connectors import telemetry
from connectors.clock import iso
from functions.services.scoring import inputs, layout, quota, scores, writeback
from functions.services.scoring.common import C_ID, C_NAME, BatchSpec, batch_result, counts_text, parse_message
from modeling.scoring_rules import DECIDED_COLUMNS, decide_rows

if TYPE_CHECKING:
    from functions.app_context import AppContext

log = logging.getLogger(__name__)


def handle_message(ctx: AppContext, body: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    """The queue worker. A bad message raises ScoringError; a failing batch keeps its last error (the
    poison trigger reports it) and raises, so the host retries it and finally poisons it."""
    run_id, index = parse_message(body)
    try:
        return score_batch(ctx, run_id, index)
    except Exception as exc:
        _note_failure(ctx, run_id, index, exc)
        raise


def score_batch(ctx: AppContext, run_id: str, index: int) -> dict[str, Any]:
    """Done already -> its result; superseded or unknown -> dropped; else score and write it."""
    done = ctx.lake.read_json(layout.result_path(run_id, index))
    if done is not None:
        return {**done, "alreadyDone": True}
    plan = ctx.lake.read_json(layout.plan_path(run_id))
    if plan is None or index >= int(plan.get("batches", 0)):
        log.warning("scoring message run=%s batch=%d dropped: no such run or batch", run_id, index)
        return {"dropped": True}
    if ctx.lake.read_json(layout.superseded_path(run_id)) is not None:
        log.info("scoring run=%s batch=%d dropped: the run was superseded", run_id, index)
        return {"superseded": True}
    frame = ctx.lake.read_parquet(layout.input_path(run_id, index)).to_pandas()
    result, _ = execute(ctx, BatchSpec.from_plan(plan, index), frame)
    if not ctx.lake.json.create(layout.result_path(run_id, index), result):
        return {**(ctx.lake.read_json(layout.result_path(run_id, index)) or result), "alreadyDone": True}
    return result


@telemetry.traced("scoring.batch")
def execute(ctx: AppContext, spec: BatchSpec, frame: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    """Claim quota, score, decide against the last written rows, then upsert the changed rows, append them
    to the history and MERGE them into the state. Returns the batch result and every decided row."""
    started = time.perf_counter()
    telemetry.annotate(model=spec.key, **{"scoring.run": spec.run_id, "scoring.batch": spec.batch})
    ids = frame[C_ID].astype(str).tolist()
    allowed = set(quota.claim(ctx, spec.month, ids, spec.quota))
    frame = frame[frame[C_ID].isin(allowed)].reset_index(drop=True)
    if len(allowed) < len(ids):
        missed = len(ids) - len(allowed)
        log.warning("scoring run=%s batch=%d: monthly quota reached; %d not scored", spec.run_id, spec.batch, missed)
    scored = inputs.load_scorer(ctx, spec.model, spec.version).score(frame) if len(frame) else pd.DataFrame()
    decided = pd.DataFrame(columns=list(DECIDED_COLUMNS))
    if len(scored):
        previous = scores.previous(ctx.lake, scored[C_ID].astype(str).tolist())
        names = dict(zip(frame[C_ID], frame[C_NAME], strict=True)) if C_NAME in frame.columns else {}
        decided = decide_rows(
            scored, previous, names=names, model=spec.model, version=spec.version,
            grade_ranges=spec.grade_ranges, scored_on=spec.scored_on,
        )  # fmt: skip
    written, requests, failures = _write(ctx, spec, decided)
    result = batch_result(spec, scored, decided, written, rows=len(frame), requested=len(ids), requests=requests)
    if failures:  # changed rows Dataverse refused: not written, so the next run sends them again
        result.update(changed=result["changed"] + len(failures), unchanged=result["unchanged"] - len(failures))
        result.update(writeFailed=len(failures), writeFailures=failures[:100])
    result["seconds"] = round(time.perf_counter() - started, 3)
    labels = {"model": spec.key}
    telemetry.OPPORTUNITIES_SCORED.add(len(scored), labels)
    telemetry.ROWS_WRITTEN.add(len(written), labels)
    telemetry.WRITE_REQUESTS.add(requests, labels)
    telemetry.annotate(scored=len(scored), written=len(written), **{"dataverse.requests": requests})
    log.info("scoring run=%s batch=%d model=%s %s", spec.run_id, spec.batch, spec.key, counts_text(result))
    return result, decided


def _write(ctx: AppContext, spec: BatchSpec, decided: pd.DataFrame) -> tuple[pd.DataFrame, int, list[dict[str, Any]]]:
    """The changed rows to Dataverse, the history and the state, unless an earlier attempt of this batch
    already appended its history: those rows are then what it wrote (and sent before appending), so
    nothing is sent again and only the state MERGE (idempotent) is redone. Returns (rows, requests, rows
    Dataverse refused)."""
    written = scores.appended(ctx.lake, spec.run_id, spec.batch)
    requests, failures = 0, list[dict[str, Any]]()
    if written is None:
        written = decided[decided["changed"].astype(bool)]
        requests, failures = writeback.write_rows(ctx, written)
        if failures:
            refused = {f["opportunityId"] for f in failures}
            written = written[~written[C_ID].astype(str).isin(refused)]
        if len(written):
            written = scores.append_history(ctx.lake, spec.run_id, spec.batch, written)
    scores.merge_state(ctx.lake, written, spec.run_id, spec.batch)
    return written, requests, failures


def _note_failure(ctx: AppContext, run_id: str, index: int, exc: BaseException) -> None:
    """Keep the attempt's error next to the batch: the poison trigger reports the last one."""
    error = f"{type(exc).__name__}: {str(exc)[:300]}"
    log.warning("scoring run=%s batch=%d failed: %s", run_id, index, error)
    try:
        ctx.lake.json.update(
            layout.error_path(run_id, index),
            lambda doc: {
                "batch": index,
                "lastError": error,
                "code": getattr(exc, "code", None),
                "attempts": int((doc or {}).get("attempts", 0)) + 1,
                "at": iso(),
            },
        )
    except Exception:  # noqa: BLE001 - the original error is what the host must see
        log.exception("scoring run=%s batch=%d: could not record the failure", run_id, index)
